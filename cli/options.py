"""The CLI's vocabulary: every choice as an Enum (listed in ``--help``) and the options commands share.

One spelling per thing, in every command:

* a store that is *read* is the positional ``STORE``; ``--out`` names what a
  command *creates* (a store, a run directory, a checkpoint);
* ``--teacher``, ``--student`` and ``--model`` are model specs; a teacher
  *inside* a store is ``--teacher-name``;
* every choice is an Enum, so ``--help`` lists it and Click refuses anything
  else (exit 2); lists are repeatable options.

The values mirror the library's own tuples (``tests/test_cli_vocabulary.py``
fails when they drift). The loss names and the encodings come from their
registries themselves, so a newly registered loss or encoding appears without
a CLI change (the loss registry costs a torch import, paid once per CLI
start, ``--help`` included).
"""

from __future__ import annotations

from enum import Enum
from importlib import resources
from typing import Annotated, Any, Optional

import typer

from kdcache.errors import UsageError


def _encoding_help() -> str:
    from kdcache import encodings  # the registry (numpy only; no torch)

    return encodings.encoding_help()


# Free text, not a choice: an encoding may carry numbers (topk:K); kdcache.encodings.parse checks the value.
EncodingOpt = Annotated[str, typer.Option(
    "--encoding", help=f"Logit encoding: {_encoding_help()}. See docs/encodings.md.")]


class Codec(str, Enum):
    """Chunk compression: none (fastest) or zstd / blosc-zstd (smaller, slower)."""

    none = "none"
    zstd = "zstd"
    blosc_zstd = "blosc-zstd"


class Optimizer(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class Schedule(str, Enum):
    multistep = "multistep"
    cosine = "cosine"
    constant = "constant"


class ViewPolicy(str, Enum):
    cycle = "cycle"
    random = "random"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _loss_names() -> list[str]:
    # The registry is the one list of losses; importing it costs a torch import, paid once per CLI start.
    from kdcache import losses

    return losses.names()


Loss = Enum("Loss", {name: name for name in _loss_names()}, type=str)  # type: ignore[misc]
Loss.__doc__ = "A distillation loss from kdcache's loss registry (docs/losses.md)."


def recipe_presets() -> list[str]:
    """Names of the recipe presets shipped with kdcache (``kdcache/recipes/*.json``)."""
    folder = resources.files("kdcache").joinpath("recipes")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def value(choice: Enum | None) -> str | None:
    """The plain string of an Enum choice (None stays None: "not given")."""
    return None if choice is None else str(choice.value)


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None), so the library's own defaults apply to the rest."""
    return {k: v for k, v in options.items() if v is not None}


RECIPE_HELP = (
    f"Augmentation recipe: a preset ({', '.join(recipe_presets())}) or a JSON file. "
    "Default: the dataset's own recipe (cifar10/100: cifar; fashion-mnist, embedded: fashion-mnist; "
    "imagefolder: imagenet; digits, synthetic: none), printed when chosen."
)

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="Dataset spec: fashion-mnist[:ROOT][,split=train|test], cifar10:ROOT, cifar100:ROOT, "
        "imagefolder:ROOT, digits, embedded, synthetic:samples=N,classes=C,size=S,channels=K,seed=R.",
    ),
]
ValDataOpt = Annotated[str, typer.Option("--val-data", help="Validation dataset spec (evaluated every epoch).")]
# A str, not a Path: pathlib would fold the '//' of an s3:// URL.
StoreArg = Annotated[str, typer.Argument(help="Store to read: a directory, or an s3:// gs:// az:// file:// "
                                              "memory:// URL.", metavar="STORE", show_default=False)]
StorageOpt = Annotated[Optional[list[str]], typer.Option(
    "--storage-option", metavar="KEY=VALUE",
    help="Object-store setting KEY=VALUE (repeatable), e.g. endpoint=http://host:9000, region=us-east-1, "
    "lease_seconds=60; credentials default to the standard environment variables.",
    show_default=False)]


def use_storage_options(items: list[str] | None, store: object = None) -> None:
    """Apply ``--storage-option`` values to every object-store URL this command opens (parsed in the library).

    Given with a local ``store`` (the command's store or output), they would configure nothing: refused
    in one line (exit 2) rather than ignored.
    """
    from kdcache.store.location import locate, parse_storage_options, use_storage_options as apply

    options = parse_storage_options(items)
    if options and store is not None and not locate(str(store)).backend.takes_options:
        raise UsageError(f"{store} is a local path, but --storage-option ({', '.join(sorted(options))}) "
                         "configures an object-store client (s3://, gs://, az://, memory://): drop it for a local "
                         "store")
    apply(options)
RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", help=RECIPE_HELP, show_default=False)]
TeacherNameOpt = Annotated[
    Optional[str], typer.Option("--teacher-name", help="Teacher in the store (default: the only one).",
                                show_default=False)]
# The old spelling of --teacher-name in verify and stats (a name, where --teacher now means a spec).
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Training epochs.", min=1)]
LrOpt = Annotated[float, typer.Option("--lr", help="Learning rate.")]
OptimizerOpt = Annotated[Optimizer, typer.Option("--optimizer", help="sgd (with momentum) or adamw.")]
ScheduleOpt = Annotated[Schedule, typer.Option(
    "--schedule", help="Learning-rate schedule: multistep (x0.1 at 5/8, 3/4, 7/8 of training), cosine, constant.")]
MomentumOpt = Annotated[float, typer.Option("--momentum", help="SGD momentum.")]
WdOpt = Annotated[float, typer.Option("--weight-decay", help="Weight decay.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Batch size.", min=1)]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader worker processes (0: render in this one).",
                                         min=0)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of initialisation and data order (and, online, "
                                                     "of the views unless --view-seed).", min=0)]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where models run (pick a GPU with "
                                                            "CUDA_VISIBLE_DEVICES).")]
SyncBnOpt = Annotated[bool, typer.Option(
    "--sync-bn", help="Under torchrun: BatchNorm statistics over the whole global batch (SyncBatchNorm), so "
                      "N ranks follow the 1-process run.")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="Numerics of the network's forward pass: fp32, or bf16/fp16 under autocast (recorded; "
                        "the bits differ between precisions).")]
