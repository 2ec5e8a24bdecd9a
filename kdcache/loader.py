"""What a distill epoch reads, in which order, and how cached logits reach the step.

* :func:`epoch_plan` decides, as a pure function of (seed, epoch, sample), which
  view each sample uses and the order samples are visited. The order is a
  *window shuffle*: the samples are cut into windows of consecutive samples,
  windows are visited in a random order, and samples are fully shuffled inside
  a window. With a window of at least N samples this is an ordinary full
  shuffle; with large stores it keeps reads chunk-aligned and memory bounded
  (ZARR-NOTES.md: per-row zarr reads are 100-1000x slower than chunk reads).
* :class:`CachedRows` streams the rows of one plan from a store: a background
  thread reads the next window's chunks while the current window's rows are
  gathered with numpy, so at most two windows are in memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kdcache.errors import KdcacheError
from kdcache.store import Store

VIEW_POLICIES = ("cycle", "random")
DEFAULT_WINDOW = 16384
# Domain tags keep the order and view streams independent of each other and
# of the augmentation stream (SeedSequence([seed, sample, view])).
_ORDER_TAG = 0x0D15_0001
_VIEW_TAG = 0x0D15_0002


def _generator(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(words))))


def views_for_epoch(seed: int, epoch: int, num_samples: int, num_views: int, policy: str) -> np.ndarray:
    """The view each sample uses in ``epoch`` (1-based): a pure function of (seed, epoch, sample).

    ``cycle`` walks the views in order, one per epoch (epoch e uses view
    (e-1) mod V for every sample), so an epoch reads one view of the store;
    ``random`` draws each sample's view independently per epoch.
    """
    if policy == "cycle":
        return np.full(num_samples, (epoch - 1) % num_views, dtype=np.int64)
    if policy == "random":
        return _generator(seed, epoch, _VIEW_TAG).integers(0, num_views, size=num_samples, dtype=np.int64)
    raise KdcacheError(f"--view-policy must be one of {', '.join(VIEW_POLICIES)} (got {policy!r})")


@dataclass(frozen=True)
class EpochPlan:
    """The visiting order of one epoch and, per sample, its view."""

    order: np.ndarray  # (N,) sample indices in visiting order
    views: np.ndarray  # (N,) view of each sample (indexed by sample, not by position)
    window: int

    def batches(self, batch_size: int) -> list[list[tuple[int, int]]]:
        """Consecutive batches of (sample, view) keys, the last one possibly short."""
        keys = [(int(i), int(self.views[i])) for i in self.order]
        return [keys[b : b + batch_size] for b in range(0, len(keys), batch_size)]


def epoch_plan(
    seed: int, epoch: int, num_samples: int, num_views: int, policy: str = "cycle", window: int = DEFAULT_WINDOW
) -> EpochPlan:
    """Window-shuffled order and per-sample views for ``epoch`` (see the module docstring)."""
    if window < 1:
        raise KdcacheError(f"shuffle window must be >= 1 (got {window})")
    rng = _generator(seed, epoch, _ORDER_TAG)
    num_windows = -(-num_samples // window)
    parts = []
    for w in rng.permutation(num_windows):
        start = int(w) * window
        parts.append(start + rng.permutation(min(window, num_samples - start)))
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return EpochPlan(order=order.astype(np.int64), views=views_for_epoch(seed, epoch, num_samples, num_views, policy),
                     window=window)


class CachedRows:
    """Teacher logits (and per-row statistics) of a store, in the order of an epoch plan.

    Iterating yields, per batch, a dict of float32 tensors: ``teacher_logits``
    (B, C) and each requested per-row statistic (B,). Reads are whole chunks
    covering one plan window, prefetched on a thread one window ahead.
    """

    def __init__(self, store: Store, teacher: str, row_stats: Sequence[str] = ()) -> None:
        self.store = store
        self.teacher = teacher
        self.logits = store.logits(teacher)
        self.row_stats = {name: store.group[f"{store.stats_group_path(teacher)}/{name}"] for name in row_stats}

    def _read_window(self, start: int, stop: int, views: np.ndarray) -> dict[str, torch.Tensor]:
        """The rows the plan uses in samples [start, stop): {array name: (rows, ...) tensor}.

        Row r holds sample start+r in the view the plan gives it. Whole chunks
        are read one view at a time and only the used rows are kept, so memory
        is one window whatever the number of views. Rows are gathered later
        with torch, several times faster than numpy's take + astype here.
        """
        window_views = views[start:stop]
        needed = np.unique(window_views)
        arrays = {"teacher_logits": self.logits, **self.row_stats}
        out: dict[str, torch.Tensor] = {}
        for name, arr in arrays.items():
            if len(needed) == 1:  # one view per epoch (cycle): the chunk rows are the window
                out[name] = torch.from_numpy(np.asarray(arr[int(needed[0]), start:stop]))
                continue
            buf = np.empty((stop - start,) + tuple(arr.shape[2:]), dtype=arr.dtype)
            for v in needed:
                mask = window_views == v
                buf[mask] = np.asarray(arr[int(v), start:stop])[mask]
            out[name] = torch.from_numpy(buf)
        return out

    def iterate(self, plan: EpochPlan, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Yield the rows of ``plan`` batch by batch, in the plan's order."""
        n = len(plan.order)
        window = plan.window
        num_samples = self.store.num_samples
        # Windows in visiting order: the plan visits each window's samples contiguously,
        # and only the last window of the dataset may be short (wherever it is visited).
        windows: list[int] = []
        pos = 0
        while pos < n:
            w = int(plan.order[pos]) // window
            windows.append(w)
            pos += min(window, num_samples - w * window)
        loaded: queue.Queue[tuple[int, dict[str, torch.Tensor]] | BaseException] = queue.Queue(maxsize=1)

        def reader() -> None:
            try:
                for w in windows:
                    loaded.put((w, self._read_window(w * window, min((w + 1) * window, num_samples), plan.views)))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                loaded.put(exc)

        thread = threading.Thread(target=reader, name="kdcache-reader", daemon=True)
        thread.start()
        current_w = -1
        current: dict[str, torch.Tensor] = {}
        order = torch.from_numpy(plan.order)
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            out: dict[str, list[torch.Tensor]] = {}
            # A batch may straddle two windows; gather each part from its window.
            for part in _split_by_window(idx, window):
                w = int(part[0]) // window
                while current_w != w:
                    item = loaded.get()
                    if isinstance(item, BaseException):
                        raise item
                    current_w, current = item
                local = part - w * window
                for name, rows in current.items():
                    out.setdefault(name, []).append(rows.index_select(0, local))
            yield {name: (parts[0] if len(parts) == 1 else torch.cat(parts)).float() for name, parts in out.items()}
        thread.join()


def _split_by_window(idx: torch.Tensor, window: int) -> list[torch.Tensor]:
    w = idx // window
    cuts = (torch.nonzero(w[1:] != w[:-1]).flatten() + 1).tolist()
    return list(torch.tensor_split(idx, cuts)) if cuts else [idx]
