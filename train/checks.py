"""The sets each of train's evaluations scores beside the domain: the held-out non-speech clips (words emitted per
clip, repetition loops) and the general set of everyday sentences (WER, for forgetting).

    extra, notes = extra_eval_sets(work_dir, cfg, pool, labels, check_fits)
    trainer.extra_evals = extra                    # train/loop.py scores them at every evaluation
    base = trainer.score_extra_sets("base")        # once, before the first step: the base model's figures
    message = forgetting_warning(general_wer, base_wer, cfg.training.forgetting_warn, epoch)

The general set is WORK/general/cache (pipeline/core/general.py), built by `features` from training.general_csv;
every clip of it is scored, whatever its split. Reads caches only: no audio library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from whisper_tune.pipeline.cache.nonspeech import HELDOUT, NonSpeechPool
from whisper_tune.pipeline.core.config import Config
from whisper_tune.pipeline.core.general import built_from, general_csv, general_work

from whisper_tune.train.data import EvalDataset
from whisper_tune.train.nonspeech import NonSpeechEval


def general_eval_set(work_dir: Path, cfg: Config, check_fits: Callable[[Any, Path], None]) -> tuple[Any, str]:
    """(EvalDataset of every clip of WORK/general/cache or None, a line for the log)."""
    from whisper_tune.pipeline.cache import CACHE_DIRNAME, open_cache

    csv_path = general_csv(cfg.training.general_csv)
    if csv_path is None:
        return None, "general set: off (training.general_csv none, or the demo's everyday.csv is absent)"
    target = general_work(work_dir)
    if built_from(work_dir) != csv_path.resolve() or not (target / CACHE_DIRNAME).is_dir():
        return None, (f"general set: not scored, {target} holds no features of {csv_path}; run `whisper-tune "
                      f"features --work {work_dir} --general-csv {csv_path}` to build them")
    cache = open_cache(target)
    check_fits(cache, target / CACHE_DIRNAME)
    dataset = EvalDataset(cache, split=None)
    return dataset, f"general set: {len(dataset)} clips of {csv_path}, scored at every evaluation"


def extra_eval_sets(work_dir: Path, cfg: Config, pool: NonSpeechPool | None, labels,
                    check_fits: Callable[[Any, Path], None]) -> tuple[dict[str, Any], list[str]]:
    """({"nonspeech": ..., "general": ...} of the sets there are, lines for the log)."""
    out: dict[str, Any] = {}
    notes = []
    if pool is not None and pool.part(HELDOUT) and labels is not None:
        out["nonspeech"] = NonSpeechEval(pool, labels)
        notes.append(f"non-speech check: {len(out['nonspeech'])} held-out clips of the cache's pool")
    else:
        notes.append("non-speech check: none, the cache has no non-speech pool; re-run `whisper-tune features`")
    general, note = general_eval_set(work_dir, cfg, check_fits)
    if general is not None and len(general):
        out["general"] = general
    notes.append(note)
    return out, notes


def forgetting_warning(general_wer: float, base_wer: float | None, threshold: float, epoch: float | None) -> str | None:
    """The warning when the general set's WER rose more than `threshold` points over the base model's."""
    if base_wer is None or general_wer - base_wer <= threshold:
        return None
    at = f"epoch {epoch:g}" if epoch is not None else "this evaluation"
    return (f"warning: forgetting: at {at} the general set's WER is {general_wer:.2f} %, {general_wer - base_wer:+.2f} "
            f"points over the base model's {base_wer:.2f} % (more than training.forgetting_warn = {threshold:g}); "
            "lower the learning rate or the epochs, train with --pack, or add everyday speech to the train set")


def forgetting_warnings(records, base_wer: float | None, threshold: float) -> list[str]:
    """Every epoch record's warning (EpochRecord.general_wer), in order."""
    out = []
    for r in records:
        if r.general_wer is not None:
            message = forgetting_warning(r.general_wer, base_wer, threshold, r.epoch)
            if message:
                out.append(message)
    return out
