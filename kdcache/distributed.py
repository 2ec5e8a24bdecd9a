"""Running one kdcache command as several processes under ``torchrun`` (torch.distributed).

``torchrun --nproc-per-node N --no-python kdcache COMMAND ...`` starts N copies
of the same command line with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in
their environment. :func:`init` reads them and joins the process group
(``gloo`` on CPU, ``nccl`` on CUDA with the GPU ``LOCAL_RANK``). Without that
environment (a plain ``kdcache ...``) nothing is initialised and every helper
here is a no-op: a single-process run behaves exactly as before.

Conventions the commands follow:

* Rank 0 is the only one that writes run records, holds a store's writer lock
  and prints (progress bars, summaries); :func:`is_main` says which rank this is.
* Every rank calls the same collectives in the same order (a rank that skips a
  barrier hangs the others).
* A failure on one rank ends that process with its one ``error:`` line, prefixed
  with its rank (:func:`error_line`); torchrun then stops the other ranks. An
  option error, which every rank finds identically, is printed by rank 0 alone.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from kdcache.errors import UsageError

# How long a rank waits in a collective for the others (a slow rank 0 opening a big remote store).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job: its rank, the world size and its rank on this node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether this is one process of a multi-process job (a process group is initialised)."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_context = Context()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"the environment variable {name}={raw!r} must be an integer (set by torchrun)") from None


def from_env() -> Context:
    """The rank, world size and local rank torchrun put in the environment (rank 0 of 1 without it)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not describe a job; "
                         "start several processes with torchrun, or one without these variables")
    return Context(rank=rank, world=world, local_rank=local)


def current() -> Context:
    """This process's :class:`Context` (rank 0 of 1 until :func:`init` joined a job)."""
    return _context


def is_main() -> bool:
    """Whether this process is rank 0 (always true in a single-process run)."""
    return _context.is_main


def init(device: str | torch.device = "cpu") -> tuple[Context, torch.device]:
    """Join torchrun's job if this process is one of several; return the context and the device to use.

    ``device`` is the user's ``--device``: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process,
    the process group on nccl); anything else runs the group on gloo. Calling it again is a no-op.
    Rank-0-only output starts here: the other ranks' console is silenced.
    """
    global _context
    dev = torch.device(device)
    ctx = from_env() if not dist.is_initialized() else _context
    if ctx.enabled and dev.type == "cuda" and dev.index is None:
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was given but torch sees no CUDA device; use --device cpu")
        dev = torch.device("cuda", ctx.local_rank)  # one GPU per rank of this node
    if not ctx.enabled or dist.is_initialized():  # one process: the device exactly as given, as before
        _context = ctx
        return ctx, dev
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT,
                            device_id=dev if dev.type == "cuda" else None)
    _context = ctx
    _quiet_other_ranks()
    return ctx, dev


def _quiet_other_ranks() -> None:
    # One console for the whole job: N copies of every progress bar and note would interleave.
    if not _context.is_main:
        from kdcache.progress import silence

        silence()


def barrier() -> None:
    """Wait until every rank reaches this point (a no-op in a single process)."""
    if _context.enabled:
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (picklable Python values; a no-op in one process).

    Only values this job's own ranks made are sent this way (lists of chunk indices, small records).
    """
    if not _context.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_sum(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """The sum over ranks of each number in ``values`` (float64; the same list on every rank)."""
    if not _context.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def _collective_device(device: torch.device | None) -> torch.device:
    # nccl moves CUDA tensors only; gloo CPU tensors.
    if dist.get_backend() == "nccl":
        return device if device is not None and device.type == "cuda" else torch.device("cuda",
                                                                                        torch.cuda.current_device())
    return torch.device("cpu")


def shard(items: Sequence[Any]) -> list[Any]:
    """This rank's share of ``items``: every ``world``-th item starting at ``rank`` (strided)."""
    return list(items[_context.rank :: _context.world])


class Counter:
    """A job-wide counter (how many rows all ranks finished), for rank 0's progress bar.

    It lives in the key-value store torchrun's rendezvous already runs (c10d's store), so adding to it
    is not a collective: ranks with different amounts of work never wait on each other for it.
    """

    def __init__(self, key: str) -> None:
        self.key = f"kdcache/{key}"
        # c10d has no public accessor for the default group's store; this one is what init_process_group made.
        self._store = dist.distributed_c10d._get_default_store() if _context.enabled else None
        self._local = 0

    def add(self, n: int) -> int:
        """Add ``n``; return the job-wide total so far."""
        if self._store is None:
            self._local += n
            return self._local
        return int(self._store.add(self.key, int(n)))

    def final(self) -> int:
        """The job-wide total once every rank has added all of its share.

        A collective (a barrier): every rank calls it at the same point. Rank 0 often finishes its share
        first; its bar would otherwise stop at the total of that moment (86% of a 2-rank job).
        """
        barrier()
        return self.add(0)


def error_line(message: str, usage: bool) -> str | None:
    """The ``error:`` text this rank prints for a failure, or None when another rank prints it.

    In a job, the first rank to fail reports, naming itself (a counter in the key-value store of
    torchrun's rendezvous says which was first): a failure that hits every rank at once, or a rank
    that fails because another one left, adds no line. Before the job is joined, an option error
    (``usage``), which every rank finds identically from the same command line, is printed by rank 0
    alone; any other early failure by the rank that hit it.
    """
    ctx = _context if dist.is_initialized() else _safe_env_context()
    if ctx.world <= 1:
        return message
    if dist.is_initialized():
        try:
            first = int(dist.distributed_c10d._get_default_store().add("kdcache/failures", 1)) == 1
        except RuntimeError:  # the store went away with rank 0: report rather than stay silent
            first = True
        return f"rank {ctx.rank}: {message}" if first else None
    if usage:
        return message if ctx.is_main else None
    return f"rank {ctx.rank}: {message}"


def record_failure(line: str) -> None:
    """Hand this rank's one-line error to torchrun, whose end-of-job report then shows it as the root cause.

    torchrun names the file in ``TORCHELASTIC_ERROR_FILE`` and reads it in the format its ``@record``
    decorator writes (without one it reports "To enable traceback see ...").
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    payload = {"message": {"message": line, "extraInfo": {"py_callstack": line,
                                                           "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(payload, f)
    except OSError:
        pass  # the report falls back to torchrun's generic line; the error line itself was printed


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank of the job went away."""
    if not dist.is_initialized():
        return False
    # nccl raises DistError subclasses; gloo a plain RuntimeError naming the closed connection.
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and ("Connection closed by peer" in str(exc) or "gloo" in str(exc).lower()))


def _safe_env_context() -> Context:
    try:
        return from_env()
    except UsageError:
        return Context()


def shutdown() -> None:
    """Leave the process group (the end of a command run under torchrun)."""
    global _context
    if dist.is_initialized():
        dist.destroy_process_group()
    _context = Context()
