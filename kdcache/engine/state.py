"""The whole training state in one file, so a resumed run continues bit for bit.

What an epoch boundary must carry to make the rest of the run identical to an
uninterrupted one: every trained module (the student and, e.g., SLKD's extra
networks), every optimizer, every scheduler's own ``state_dict`` (a schedule
is restored, never re-stepped: stepping it again on top of a restored
optimizer's already-decayed learning rate decays it twice), the random
generators (torch, CUDA, numpy, python), the epoch and the metric history.
The file holds tensors and plain containers only, so it is read with
``torch.load(weights_only=True)``; it also records which command and which
arguments wrote it, so another run's state is refused instead of continued.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdcache.engine.config import diff_args
from kdcache.errors import RunError
from kdcache.models import atomic_torch_save

FORMAT = "kdcache-train-state/1"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed torch, numpy and random; on request make torch's kernels deterministic.

    Data order and views never use these generators (they are pure functions
    of the seed), so this fixes model initialisation and dropout.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def determinism(device: torch.device) -> dict[str, Any]:
    """Whether this run's kernels were deterministic, as recorded in a run's record.

    ``seed_everything`` asks torch for deterministic algorithms with ``warn_only`` (an op that
    has no deterministic version warns instead of failing), so bitwise-equal resumes hold only
    where ``deterministic`` is true: on CPU, or on CUDA with ``CUBLAS_WORKSPACE_CONFIG`` set
    (``:4096:8`` or ``:16:8``), which cuBLAS needs to be deterministic.
    """
    algorithms = torch.are_deterministic_algorithms_enabled()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    cuda_ok = device.type != "cuda" or cublas in (":4096:8", ":16:8")
    return {"deterministic": bool(algorithms and cuda_ok), "deterministic_algorithms": algorithms,
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cublas_workspace_config": cublas, "device": str(device)}


def capture_rng() -> dict[str, Any]:
    """The state of every random generator training may use, as tensors and plain values."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generators saved by :func:`capture_rng`.

    CUDA states are restored when the run continues on as many GPUs; a run
    moved to another device has no CUDA state to continue (``device`` may
    change on resume, and bitwise equality is promised on the same device).
    """
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(
    path: Path,
    *,
    command: str,
    args: dict[str, Any],
    epoch: int,
    modules: dict[str, nn.Module],
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
    history: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the state at the end of ``epoch`` atomically (see the module docstring).

    ``extra`` holds further plain entries (e.g. an fp16 run's gradient-scaler state).
    """
    atomic_torch_save(path, {
        "format": FORMAT,
        "command": command,
        "args": args,
        "epoch": epoch,
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizers": [o.state_dict() for o in optimizers],
        "schedulers": [s.state_dict() for s in schedulers],
        "rng": capture_rng(),
        "history": history,
        **(extra or {}),
    })


def read_state(path: Path, *, command: str, args: dict[str, Any],
               same: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Load a state file, refusing one written by another command, another run or an older kdcache.

    The saved arguments and ``args`` are compared after ``same`` (by default as they are).
    """
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file that is not a state
        raise RunError(f"{path} is not a kdcache training state ({type(exc).__name__}); "
                       "delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunError(f"{path} was not written by this kdcache's training engine (no learning-rate "
                       "schedule state to continue exactly); delete it to start over, or use another output")
    if state["command"] != command:
        raise RunError(f"{path} holds the state of a `kdcache {state['command']}` run, not of "
                       f"`kdcache {command}`; choose another output")
    changed = [k for k in ("data_fingerprint", "val_data_fingerprint")
               if k in args and state["args"].get(k) != args[k]]
    if changed:  # the same spec, other images or labels: continuing would mix two datasets
        raise RunError(f"{path} belongs to a run on other data ({', '.join(changed)} changed under the same "
                       "spec); restore that data to continue, or delete the state (or choose another output) "
                       "to start over")
    norm = same or (lambda a: a)
    diffs = diff_args(norm(state["args"]), norm(args))
    if diffs:
        raise RunError(f"{path} belongs to a run with other arguments ({'; '.join(diffs)}); repeat that "
                       "run's arguments to continue it, or delete it (or choose another output) to start over")
    return state


def load_into(
    state: dict[str, Any],
    modules: dict[str, nn.Module],
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler],
) -> tuple[int, list[dict[str, Any]]]:
    """Restore modules, optimizers, schedulers and generators; return (epoch, history)."""
    if set(state["modules"]) != set(modules) or len(state["optimizers"]) != len(optimizers):
        raise RunError("the saved training state holds other networks than this run builds; start a new run")
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    for opt, sd in zip(optimizers, state["optimizers"], strict=True):
        opt.load_state_dict(sd)
    for sched, sd in zip(schedulers, state["schedulers"], strict=True):
        sched.load_state_dict(sd)
    restore_rng(state["rng"])
    return int(state["epoch"]), list(state["history"])
