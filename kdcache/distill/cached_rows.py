"""What a distill epoch reads, in which order, and how cached logits reach the step.

* :func:`epoch_plan` decides, as a pure function of (seed, epoch, sample), which
  view each sample uses and the order samples are visited. The order is a
  *window shuffle*: the samples are cut into windows of consecutive samples,
  windows are visited in a random order, and samples are fully shuffled inside
  a window. With a window of at least N samples this is an ordinary full
  shuffle; with large stores it keeps reads chunk-aligned and memory bounded
  (per-row zarr reads are 100-1000x slower than chunk reads; docs/store-format.md, "Why").
* :class:`CachedRows` streams the rows of one plan from a store: a background
  thread reads the next window's chunks while the current window's rows are
  gathered, so at most two windows (and the chunks they cover) are in memory.
  On an object store the chunks of the current window and of the next
  ``REMOTE_LOOKAHEAD`` windows are fetched concurrently on a thread pool (each
  GET waits on the network, not the CPU), so the student does not wait on
  request latency; memory then holds those windows' chunks too.
  Every chunk is read whole and checked against its checksum record before
  a row of it is used: logits, recorded view parameters, per-row statistics.
* :class:`CachedBatches` hands an epoch to a DataLoader: it is the
  ``batch_sampler`` (keys ``(sample, view, recorded params)``, so every view
  is rendered from the store's record) and, in lockstep, the rows of each
  batch in a FIFO the training step pops in the same order.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdcache.errors import KdcacheError
from kdcache.store import Store
from kdcache.store.stat_io import RowStatReader

VIEW_POLICIES = ("cycle", "random")
DEFAULT_WINDOW = 16384
# Chunk GETs in flight on an object store, and how many windows ahead they reach (a local disk reads
# a window's chunks one by one when the window is read, as before).
REMOTE_CONCURRENCY = 8
REMOTE_LOOKAHEAD = 2
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
    """Teacher logits, recorded view parameters and per-row statistics of a store, in an epoch plan's order.

    Iterating yields, per batch, a dict of tensors: ``teacher_logits`` (B, C)
    float32, ``params`` (B, P) int32, and each requested per-row statistic
    (B,) float32. Reads are whole verified chunks covering one plan window,
    prefetched on a thread one window ahead; a corrupted chunk raises
    :class:`~kdcache.errors.StoreCorruptError` naming it.
    """

    def __init__(self, store: Store, teacher: str, row_stats: Sequence[str] = (), verify: bool = True,
                 concurrency: int | None = None, decode_temperature: float = 1.0) -> None:
        self.store = store
        # The temperature a topk store is decoded for (the loss's; kdcache.encodings.consume).
        self.decode_temperature = decode_temperature
        # Chunks read at once within a window: several on an object store (latency-bound GETs; obstore and
        # hashlib release the GIL), one on a local disk.
        self.concurrency = concurrency or (REMOTE_CONCURRENCY if store.backend.high_latency else 1)
        self.teacher = teacher
        self.verify = verify  # False only to measure what verification costs (benchmarks/bench_store.py)
        self.stat_readers = {name: RowStatReader(store, teacher, name) for name in row_stats}
        # name -> read(view, chunk, verify): one verified chunk of each per-row array a batch carries.
        self._readers: dict[str, Callable[[int, int, bool], np.ndarray]] = {
            "teacher_logits": lambda v, j, check: store.read_logits_chunk(teacher, v, j, check),
            "params": store.read_params_chunk,
            **{name: reader.read_chunk for name, reader in self.stat_readers.items()},
        }
        # A compact encoding is read packed (its parts side by side per row) and only a batch's
        # gathered rows are decoded, at the loss's temperature (kdcache.encodings).
        self._finish: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
        encoding = store.encoding(teacher)
        if not encoding.lossless_dense:
            classes = store.card(teacher).num_classes
            self._readers["teacher_logits"] = lambda v, j, check: store.read_packed_chunk(teacher, v, j, check)
            self._finish["teacher_logits"] = lambda t: torch.from_numpy(encoding.decode(
                encoding.unpack(t.numpy(), classes), classes, temperature=decode_temperature))
        self._cache: dict[tuple[str, int, int], np.ndarray] = {}
        # Chunk reads in flight on the pool (object stores only), by (name, view, chunk).
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[tuple[str, int, int], Future[np.ndarray]] = {}

    def _keys(self, start: int, stop: int, views: np.ndarray) -> set[tuple[str, int, int]]:
        """(name, view, chunk) of every chunk the plan's samples [start, stop) read."""
        needed = [int(v) for v in np.unique(views[start:stop])]
        chunks = list(self.store.grid.covering(start, stop))
        return {(n, v, j) for n in self._readers for v in needed for j in chunks}

    def _prefetch(self, keys: list[tuple[str, int, int]]) -> None:
        """Start reading ``keys`` (in this order) on the pool, unless cached or already in flight."""
        if self._pool is None:
            return
        for key in keys:
            if key not in self._cache and key not in self._pending:
                self._pending[key] = self._pool.submit(self._readers[key[0]], key[1], key[2], self.verify)

    def _chunk(self, name: str, view: int, chunk: int) -> np.ndarray:
        key = (name, view, chunk)
        if key not in self._cache:
            self._cache[key] = self._readers[name](view, chunk, self.verify)
        return self._cache[key]

    def _read_window(self, start: int, stop: int, views: np.ndarray,
                     ahead: Sequence[tuple[int, int]] = ()) -> dict[str, np.ndarray]:
        """The rows the plan uses in samples [start, stop): {name: (rows, ...) tensor}.

        Row r holds sample start+r in the view the plan gives it. Whole chunks
        are read and verified; the chunks of this window stay cached (a chunk
        larger than a window then serves the next window it covers) and all
        others are dropped, so memory is bounded by one window's chunks, plus
        on an object store those of the windows ``ahead`` ([start, stop) of
        the next ones), whose reads are started here.
        """
        grid = self.store.grid
        window_views = views[start:stop]
        needed = [int(v) for v in np.unique(window_views)]
        chunks = list(grid.covering(start, stop))
        names = list(self._readers)
        current = self._keys(start, stop, views)
        later = [sorted(self._keys(a, b, views)) for a, b in ahead] if self._pool is not None else []
        keep = current.union(*map(set, later))
        for key in [k for k in self._cache if k not in keep]:
            del self._cache[key]
        for key in [k for k in self._pending if k not in keep]:
            self._pending.pop(key).cancel()
        self._prefetch(sorted(current))
        for keys in later:
            self._prefetch(keys)
        for key in sorted(current):  # in a fixed order: the first failing chunk is the one reported
            if key in self._pending:
                self._cache[key] = self._pending.pop(key).result()
        out: dict[str, np.ndarray] = {}
        for name in names:
            per_view = {}
            for v in needed:
                parts = []
                for j in chunks:
                    a, b = grid.bounds(j)
                    lo, hi = max(a, start), min(b, stop)
                    parts.append(self._chunk(name, v, j)[lo - a : hi - a])
                per_view[v] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if len(needed) == 1:  # one view per epoch (cycle): the chunk rows are the window
                out[name] = np.ascontiguousarray(per_view[needed[0]])
                continue
            first = per_view[needed[0]]
            buf = np.empty(first.shape, dtype=first.dtype)
            for v in needed:
                mask = window_views == v
                buf[mask] = per_view[v][mask]
            out[name] = buf
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
        # The thread only reads and verifies (zarr, numpy); tensors are made here, on the consumer's side.
        loaded: queue.Queue[tuple[int, dict[str, np.ndarray]] | BaseException] = queue.Queue(maxsize=1)
        stop_reading = threading.Event()

        def bounds(w: int) -> tuple[int, int]:
            return w * window, min((w + 1) * window, num_samples)

        def reader() -> None:
            try:
                for i, w in enumerate(windows):
                    if stop_reading.is_set():
                        return
                    ahead = [bounds(u) for u in windows[i + 1 : i + 1 + REMOTE_LOOKAHEAD]]
                    loaded.put((w, self._read_window(*bounds(w), plan.views, ahead)))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                loaded.put(exc)

        if self.concurrency > 1:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="kdcache-get")

        thread = threading.Thread(target=reader, name="kdcache-reader", daemon=True)
        thread.start()
        current_w = -1
        current: dict[str, torch.Tensor] = {}
        order = torch.from_numpy(plan.order)
        try:
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
                        current_w, current = item[0], {k: torch.from_numpy(a) for k, a in item[1].items()}
                    local = part - w * window
                    for name, rows in current.items():
                        out.setdefault(name, []).append(rows.index_select(0, local))
                batch = {name: (parts[0] if len(parts) == 1 else torch.cat(parts)) for name, parts in out.items()}
                yield {name: (t if name == "params" else self._finish[name](t) if name in self._finish else t.float())
                       for name, t in batch.items()}
        finally:
            stop_reading.set()
            while thread.is_alive():  # unblock a reader waiting to hand over a window
                try:
                    loaded.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._cache.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            self._pending.clear()


class CachedBatches:
    """One epoch for a DataLoader: the ``batch_sampler`` and, in lockstep, the rows of each batch.

    Iterating yields key lists ``[(sample, view, recorded params), ...]``; as
    each list is handed out, that batch's rows (teacher logits and per-row
    statistics) are appended to a FIFO. The DataLoader may take a few key
    lists ahead of the step (workers, prefetch), and returns batches in the
    order it took them, so :meth:`pop` in the training step always gives the
    rows of the batch being trained on. Memory: the prefetched batches' rows
    plus the reader's windows. Each iteration starts the epoch afresh.
    """

    def __init__(self, rows: CachedRows, plan: EpochPlan, batch_size: int) -> None:
        self.rows = rows
        self.plan = plan
        self.batch_size = batch_size
        self.num_samples = len(plan.order)
        self._fifo: collections.deque[dict[str, torch.Tensor]] = collections.deque()

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, Any]]]:
        self._fifo.clear()
        start = 0
        for rows in self.rows.iterate(self.plan, self.batch_size):
            params = rows.pop("params").numpy()
            samples = self.plan.order[start : start + len(params)]
            start += len(params)
            keys = list(zip(samples.tolist(), self.plan.views[samples].tolist(), params))
            self._fifo.append(rows)  # before the keys are handed out: the step pops it with their batch
            yield keys

    def pop(self) -> dict[str, torch.Tensor]:
        """The rows of the next batch the training step receives (FIFO order)."""
        return self._fifo.popleft()

    def side(self) -> Iterator[dict[str, torch.Tensor]]:
        """An endless iterator of :meth:`pop` (what a training loop calls ``next`` on, once per batch)."""
        while True:
            yield self.pop()


def _split_by_window(idx: torch.Tensor, window: int) -> list[torch.Tensor]:
    w = idx // window
    cuts = (torch.nonzero(w[1:] != w[:-1]).flatten() + 1).tolist()
    return list(torch.tensor_split(idx, cuts)) if cuts else [idx]
