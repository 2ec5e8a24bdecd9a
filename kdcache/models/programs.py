"""``torchscript:PATH`` and ``export:PATH``: saved programs that carry their own weights.

The file's SHA-256 is computed before loading it, so the card names exactly
the program that was run; the path is recorded absolute.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from kdcache.errors import ModelError
from kdcache.models.checkpoints import first_line, sha256_file
from kdcache.models.kinds import SpecKind, register_kind


def _load_program(kind: str, path_str: str) -> tuple[nn.Module, str]:
    path = Path(path_str)
    if not path.is_file():
        raise ModelError(f"{kind}:{path_str}: no such file")
    digest = sha256_file(path)
    try:
        if kind == "torchscript":
            with warnings.catch_warnings():
                # torch deprecates TorchScript in favour of torch.export; the
                # user chose this format, so the notice is noise here.
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        else:
            model = torch.export.load(str(path)).module()
    # A foreign file can fail to parse in many ways (zip, pickle, schema);
    # all of them mean the same to the user.
    except Exception as e:  # noqa: BLE001
        how = "torch.jit.save" if kind == "torchscript" else "torch.export.save"
        raise ModelError(
            f"{kind}:{path_str} is not a program saved with {how}: {first_line(e)}"
        ) from e
    return model, digest


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


for _kind in ("torchscript", "export"):
    register_kind(
        SpecKind(_kind, lambda rest, _c, _i, kind=_kind: _load_program(kind, rest), weights="program",
                 canonical=_absolute)
    )
