"""The general set's features (pipeline/core/general.py): validate and featurize training.general_csv into
WORK/general/, clean variant only, with the domain's model and audio settings."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.errors import ConfigError
from whisper_tune.pipeline.core.general import OFF, built_from, general_csv, general_work, write_record

log = logging.getLogger(__name__)


def featurize_general(work_dir: Path, cfg: Config) -> str:
    """Bring WORK/general up to date with training.general_csv; -> one line for the stage's report ("" when the
    set is turned off)."""
    from whisper_tune.pipeline.featurize.stage import run_features
    from whisper_tune.pipeline.validate.stage import run_validate

    csv_path = general_csv(cfg.training.general_csv)
    if cfg.training.general_csv.strip().lower() == OFF:
        return ""
    if csv_path is None:
        return ("features: no general set (training.general_csv is off or the demo's everyday.csv is absent): "
                "forgetting is not measured")
    if not csv_path.is_file():
        raise ConfigError(f"--general-csv {csv_path}: no such file; pass a CSV of clips (audio, transcript), "
                          "or --general-csv none")
    target = general_work(work_dir)
    # clean variant only; the domain CSV's column settings are not the general CSV's (found by name instead)
    clean = replace(cfg, augment=replace(cfg.augment, variants=1),
                    data=replace(cfg.data, group_column="", audio_column="", text_column="", subtitles_column=""))
    if built_from(work_dir) != csv_path.resolve() or not (target / "manifest.parquet").is_file():
        result = run_validate(csv_path=csv_path, work_dir=target, cfg=clean, use_model=False, echo=None)
        if result.kept == 0:
            raise ConfigError(f"--general-csv {csv_path}: no usable clip in it; see {target / 'manifest.parquet'}")
    res = run_features(work_dir=target, cfg=clean, echo=None, pool=False)
    write_record(work_dir, csv_path)
    return f"features: general set {csv_path}: {res.clips_total} clips in {target / 'cache'}"
