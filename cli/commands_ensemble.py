"""``kdcache ensemble``: derive one teacher from several teachers of a store (docs/ensembles.md).

The body parses, makes one library call (:func:`kdcache.precompute.ensemble.ensemble`) and prints.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kdcache_cli.exits import handle_errors, usage_fail
from kdcache_cli.options import StorageOpt, StoreArg, use_storage_options, value

if TYPE_CHECKING:
    from kdcache.precompute.ensemble import EnsembleResult


class How(str, Enum):
    """How members combine (kdcache.precompute.ensemble.HOWS)."""

    mean_prob = "mean-prob"
    mean_logit = "mean-logit"
    confidence = "confidence"
    best = "best"


ENSEMBLE_EPILOG = (
    "Example:\n\n"
    "    kdcache ensemble store.zarr --teacher-name a --teacher-name b --teacher-name c --how mean-prob "
    "--as abc_mean\n\n"
    "The new teacher is read like any other (distill/sweep --teacher-name abc_mean). "
    "Interrupted? Run the same command again: it resumes from the completed chunks."
)


def parse_weights(items: list[str] | None) -> dict[str, float]:
    """``--weight NAME=W`` values as a mapping; a malformed one is a usage error (exit 2)."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        try:
            weight = float(text)
        except ValueError:
            weight = None
        if not sep or not name or weight is None:
            usage_fail(f"--weight {item!r} is not NAME=WEIGHT (e.g. --weight a=2)")
        if name in out:
            usage_fail(f"--weight names {name!r} twice")
        out[name] = weight
    return out


def format_ensemble(r: EnsembleResult) -> str:
    """The human summary of ``kdcache ensemble``."""
    weights = "" if r.weights is None else " weights " + ", ".join(f"{m}={w:.3g}" for m, w in zip(r.members, r.weights))
    members = ", ".join(f"{m} {a:.2%}" for m, a in r.member_accuracy.items())
    return (f"teacher {r.name} ({r.encoding}) = {r.how} of {', '.join(r.members)}"
            + (f" at T={r.temperature:g}" if r.how == "mean-prob" else "") + f"{weights}: {r.rows_written:,} rows"
            + (f" ({r.rows_skipped:,} already stored)" if r.rows_skipped else "") + f" in {r.seconds:.1f}s\n"
            f"  mean accuracy {r.accuracy:.2%} (members: {members}); store {r.store}")


@handle_errors
def ensemble(
    store: StoreArg,
    teacher_name: Annotated[list[str], typer.Option(
        "--teacher-name", help="A member: a complete teacher of the store (repeat for each, two or more).")],
    how: Annotated[How, typer.Option("--how", help="mean-prob: T·log of the weighted mean softmax at T; "
                                     "mean-logit: weighted mean of logits; confidence: CA-MKD per-row weights "
                                     "from each member's cross-entropy on the label; best: per row, the member "
                                     "with the lowest cross-entropy (ties: the first named).")],
    new_name: Annotated[str, typer.Option("--as", help="Name of the derived teacher entry.")],
    weight: Annotated[Optional[list[str]], typer.Option(
        "--weight", metavar="NAME=W", help="A member's weight (mean-prob, mean-logit; default equal; positive, "
        "normalised to sum 1).", show_default=False)] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="T of mean-prob.")] = 1.0,
    encoding: Annotated[str, typer.Option("--encoding", help="Encoding of the derived teacher (any "
                                          "--encoding of precompute).")] = "float32",
    allow_approximate_encoding: Annotated[bool, typer.Option(
        "--allow-approximate-encoding", help="Combine a sample-encoded member where the rule does not read it "
        "exactly (mean-logit, confidence, best, or mean-prob at another T than the sample's); warns.")] = False,
    storage_option: StorageOpt = None,
) -> None:
    """Derive a teacher from several teachers of the store, on the same views, without running any of them."""
    from kdcache.precompute.ensemble import ensemble as run

    weights = parse_weights(weight)
    use_storage_options(storage_option, store)
    typer.echo(format_ensemble(run(store, members=teacher_name, how=value(how) or "", new_name=new_name,
                                   weights=weights, temperature=temperature, encoding=encoding,
                                   allow_approximate=allow_approximate_encoding)))
