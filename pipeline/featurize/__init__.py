"""The `features` stage in three steps: plan (fingerprints -> jobs), work (per-clip audio work and the worker
pool), stage (run_features, which drives them and hands every change to the cache writer)."""

from .plan import ClipJob, Fingerprints, parse_part, part_of, read_usable_manifest
from .stage import FeaturesResult, run_features
from .work import TaskResult, WorkerSettings, featurize_clip, featurize_task

__all__ = ["ClipJob", "FeaturesResult", "Fingerprints", "TaskResult", "WorkerSettings", "featurize_clip",
           "featurize_task", "parse_part", "part_of", "read_usable_manifest", "run_features"]
