"""Stores and subprocess helpers shared by test modules (no test module imports another).

Module-level data specs here are those of the session ``store`` fixture (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

from kdcache.store import Store
from kdcache.store.chunks import checksum
from tests.cli_helpers import RECIPE, TINY, distill_args, precompute_args, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=256,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5,split=test"


def make_store(out: Path, *extra: str, data: str = DATA, encoding: str = "float32") -> Path:
    """A complete store of the tiny teacher on ``data``: 3 views, seed 11, the small recipe."""
    code, text = run_cli(*precompute_args(out, *extra, data=data, views=3, seed=11, encoding=encoding))
    assert code == 0, text
    return out


def args_of(out: Path, store: Path | None, loss: str = "kd", schedule: str = "multistep", *extra: object) -> list:
    """A 4-epoch distill of the tiny student on :data:`DATA` from ``store``, or online (``store`` None)."""
    online = {} if store is not None else {"teacher": TINY, "views": 3, "recipe": RECIPE}
    return distill_args(out, *extra, store=store, data=DATA, val_data=VAL, loss=loss, epochs=4, seed=11, lr=0.1,
                        schedule=schedule, **online)


def killed(args: list[str], function: str, after: int) -> int:
    """Run `kdcache ARGS` in a subprocess that SIGKILLs itself when ``function`` ("module:name" or
    "module.Class:name") is called the ``after``+1-th time."""
    target, _, name = function.partition(":")
    code = f"""
import os, signal, sys, importlib
try:
    obj = importlib.import_module({target!r})
except ImportError:
    module, _, cls = {target!r}.rpartition(".")
    obj = getattr(importlib.import_module(module), cls)
orig = getattr(obj, {name!r})
calls = [0]
def patched(*a, **k):
    calls[0] += 1
    if calls[0] > {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(*a, **k)
setattr(obj, {name!r}, patched)
from kdcache_cli.main import app
sys.argv = ["kdcache", *{args!r}]
app()
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300).returncode


def rewrite_params(store: Path, flip: int) -> np.ndarray:
    """Set every recorded flip to ``flip`` and rewrite the checksums: a store whose record differs from the seed."""
    g = zarr.open_group(store, mode="r+")
    params = g["views/params"][:]
    col = list(g["views/params"].attrs["names"]).index("1.horizontal_flip.flip")
    params[:, :, col] = flip
    g["views/params"][:] = params
    sums = g["views/checksums"]
    rows = Store.open(store).grid.chunk_rows
    for v in range(params.shape[0]):
        for j in range(sums.shape[1]):
            sums[v, j] = checksum(params[v, j * rows : (j + 1) * rows])
    return params
