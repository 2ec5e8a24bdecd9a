"""How precompute feeds and runs a teacher: which keys each batch renders, how the teacher is built, its numerics.

Split from :mod:`kdcache.precompute.run` (the command's flow); ``verify --replay``
uses the same :func:`build_teacher` and :func:`teacher_autocast`, so a replay
rebuilds and runs the teacher exactly as precompute did.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from kdcache.engine.parallel import PRECISIONS  # noqa: F401  (precompute's --precision choices)
from kdcache.engine.parallel import autocast as teacher_autocast  # one autocast: training, scoring, replay
from kdcache.errors import StoreMismatchError
from kdcache.models import build_model, state_dict_sha256
from kdcache.store import Store

class ChunkKeys:
    """The DataLoader's batch_sampler: the keys of every pending chunk, batch by batch, made lazily.

    A chunk whose view parameters are recorded (a second teacher, a resumed
    run) is rendered from the record, read and checksum-verified one chunk at
    a time: the store is the record, its seed is not drawn again. A chunk of
    a new view set is drawn from the seed (keys without params). Memory: one
    chunk of params.
    """

    def __init__(self, store: Store, pending: list[tuple[int, int]], recorded: np.ndarray, batch_size: int) -> None:
        self.store = store
        self.pending = pending
        self.recorded = recorded
        self.batch_size = batch_size

    def __len__(self) -> int:
        grid = self.store.grid
        return sum(-(-(grid.bounds(j)[1] - grid.bounds(j)[0]) // self.batch_size) for _, j in self.pending)

    def __iter__(self) -> Iterator[list[tuple[Any, ...]]]:
        grid = self.store.grid
        for v, j in self.pending:
            start, stop = grid.bounds(j)
            params = self.store.read_params_chunk(v, j) if self.recorded[v, j] else None
            for b in range(start, stop, self.batch_size):
                e = min(b + self.batch_size, stop)
                if params is None:
                    yield [(i, v) for i in range(b, e)]
                else:
                    yield [(i, v, params[i - start]) for i in range(b, e)]


def build_teacher(spec: str, num_classes: int, in_channels: int, weights: str | None, random_init: bool,
                  init_seed: int | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build a teacher as precompute does; a random-init one from the torch seed ``init_seed``.

    A random-init network is drawn from torch's generator: seeding it here,
    right before building (in a forked RNG, so the caller's stream is left
    alone), makes the same command build the same network, so a re-run
    resumes and ``verify --replay`` rebuilds it. The card records the seed and
    the SHA-256 of the built state (``state_sha256``), so a resume or replay
    that built another network is refused instead of mixing two.
    """
    if not random_init:
        return build_model(spec, num_classes, in_channels, weights)
    if init_seed is None:
        raise StoreMismatchError(
            f"the random-init teacher {spec} has no recorded init seed (made by an older kdcache); "
            "its network cannot be rebuilt: precompute it again"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(init_seed))
        # weights passed on: build_model refuses the pair rather than this dropping the weights.
        model, built = build_model(spec, num_classes, in_channels, weights, random_init=True)
    return model, {**built, "init_seed": int(init_seed), "state_sha256": state_dict_sha256(model)}


def worker_init(_: int) -> None:
    """DataLoader worker start: one intra-op thread."""
    # Rendering is tiny per image; one thread per worker avoids oversubscribing cores.
    torch.set_num_threads(1)
