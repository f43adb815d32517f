"""`whisper-tune features`: manifest -> WORK/cache/ (whisper_tune.pipeline.featurize.stage.run_features)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from whisper_tune.pipeline.core.config import Config
from whisper_tune.cli.flags import MODEL, Flag, WorkOpt, with_config

FLAGS = (
    MODEL,
    Flag("augment.variants", "Feature variants per clip (variant 0 is clean)."),
    Flag("features.jobs", "Worker processes (0 = all cores)."),
    Flag("features.scheduler", "Run on the Dask cluster of this scheduler (tcp://HOST:8786; also $DASK_SCHEDULER_ADDRESS)."),
    Flag("training.general_csv", "CSV of everyday sentences featurized into WORK/general/ for the forgetting check "
                                 "(\"\" = the demo's everyday.csv, none = off)."),
)


@with_config(*FLAGS)
def features(
    work: WorkOpt = Path("work"),
    part: Annotated[Optional[str], typer.Option(help="Featurize only part i of N, e.g. 2/8 (1-based); in a Slurm "
                                                     "array job the task's part by default.")] = None,
    *,
    cfg: Config,
) -> None:
    """Decode, trim, normalize, augment and log-mel every usable clip into WORK/cache/ (incremental, resumable)."""
    import logging
    import os

    from whisper_tune.pipeline.featurize.plan import run_part
    from whisper_tune.pipeline.featurize.stage import run_features
    from whisper_tune.pipeline.core.fileio import disk_full_as_error

    chosen, note = run_part(part, os.environ)
    if note:
        logging.getLogger(__name__).info(note)
    with disk_full_as_error(work / "cache"):
        run_features(work_dir=work, cfg=cfg, part=chosen)
    if chosen is None or chosen[0] == 1:
        from whisper_tune.pipeline.featurize.general import featurize_general

        with disk_full_as_error(work / "general"):
            note = featurize_general(work, cfg)
        if note:
            print(note, flush=True)
