"""The training engine shared by ``kdcache distill`` and ``kdcache train-teacher``.

* :mod:`~kdcache.engine.loop`: the epoch loop (:class:`Engine`) and what a trainer contributes
  (:class:`TrainingTask`).
* :mod:`~kdcache.engine.state`: the full training state (networks, optimizers, schedules, RNGs).
* :mod:`~kdcache.engine.optim`: optimizers and learning-rate schedules.
* :mod:`~kdcache.engine.evaluate`: validation accuracy.
* :mod:`~kdcache.engine.records`: atomic, fsynced JSON records and the JSON-lines logs.
* :mod:`~kdcache.engine.config`: a run's arguments from its config dataclass, and their checks.
"""

from kdcache.engine.config import MAY_CHANGE, diff_args, identity_args, recorded_args
from kdcache.engine.evaluate import eval_loader, evaluate
from kdcache.engine.loop import TIMING_KEYS, Engine, LoopSettings, RunFiles, TrainingTask
from kdcache.engine.optim import OPTIMIZERS, SCHEDULES, OptimConfig, make_optimizer, make_scheduler
from kdcache.engine.records import canonical_hash, read_jsonl, write_json_atomic
from kdcache.engine.state import capture_rng, restore_rng, seed_everything

__all__ = [
    "MAY_CHANGE", "OPTIMIZERS", "SCHEDULES", "TIMING_KEYS", "Engine", "LoopSettings", "OptimConfig", "RunFiles",
    "TrainingTask", "canonical_hash", "capture_rng", "diff_args", "eval_loader", "evaluate", "identity_args",
    "make_optimizer", "make_scheduler", "read_jsonl", "recorded_args", "restore_rng", "seed_everything",
    "write_json_atomic",
]

