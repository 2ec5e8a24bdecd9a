"""Old import path of the training helpers, kept for one version; they live in :mod:`kdcache.engine`."""

from kdcache.engine import (  # noqa: F401 - re-exported for callers not yet moved
    OPTIMIZERS,
    SCHEDULES,
    OptimConfig,
    canonical_hash,
    evaluate,
    make_optimizer,
    make_scheduler,
    seed_everything,
    write_json_atomic,
)
