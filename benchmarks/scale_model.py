"""The ImageNet-1k scale model of docs/scaling.md: arithmetic on kdcache's own layout and stated assumptions.

Nothing here is measured: the tables follow kdcache's chunk layout (``default_chunk_rows``) and the
recipe's parameters, so they change when the layout does, and the assumptions are named constants.
"""

from __future__ import annotations

import math
from typing import Any

from doc_tables import table

Results = dict[str, dict[str, Any]]

IMAGENET_N = 1_281_167
IMAGENET_C = 1000
ASSUMED_T = 2500  # views/s per GPU for a ResNet-50-class teacher in bf16 (an assumption, not measured here)
PRICES = {"s": 0.023, "p": 0.005, "g": 0.0004}  # S3 Standard list prices in 2024: GB-month, 1,000 PUTs, 1,000 GETs
OPEN_CONCURRENCY, REQUEST_S = 10, 0.020
STUDENT_RATE, RANKS = 2500, 8  # samples/s of a ResNet-18-class student on an A100-class GPU (assumed); ranks


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_imagenet_precompute(_: Results) -> str:
    rows = []
    for k in (1, 10, 100, 400):
        passes = IMAGENET_N * k
        seconds = passes / ASSUMED_T
        rows.append([str(k), f"{passes / 1e6:,.3g} M", f"{seconds / 3600:.3g}",
                     *(_duration(seconds / w) for w in (1, 8, 64))])
    return (f"Computed from N = {IMAGENET_N:,} and an assumed T = {ASSUMED_T:,} views/s per GPU (nothing measured).\n\n"
            + table(["views K", "teacher passes", f"GPU-hours (T = {ASSUMED_T:,}/s)", "wall, W = 1", "W = 8", "W = 64"],
                    rows, "rrrrrr"))


def imagenet_layout(views: int = 10) -> dict[str, dict[str, float]]:
    """Per encoding: rows per chunk, chunks per view, bytes and objects of an ImageNet-1k store."""
    from kdcache.store import default_chunk_rows
    from kdcache.views import load_recipe

    p = len(load_recipe("imagenet").param_names())
    out = {}
    for enc, itemsize in (("float16", 2), ("float32", 4)):
        r = default_chunk_rows(IMAGENET_C, IMAGENET_N, itemsize, 64)
        k = math.ceil(IMAGENET_N / r)
        out[enc] = {"R": r, "K": k, "P": p, "logits": k * r * IMAGENET_C * itemsize, "params": k * r * p * 4,
                    "objects": 4 * k, "views": views}
    return out


def render_imagenet_objects(_: Results) -> str:
    rows = [[enc, f"{x['R']:,}", f"{x['K']:,}", f"{x['logits'] / 1e9:.2f} GB", f"{x['params'] / 1e6:.1f} MB",
             f"{x['objects']:,}"] for enc, x in imagenet_layout().items()]
    p = imagenet_layout()["float16"]["P"]
    return (f"Computed from kdcache's chunk layout (`kdcache.store.default_chunk_rows`, micro-batch 64) for "
            f"N = {IMAGENET_N:,}, C = {IMAGENET_C:,} and the `imagenet` recipe's P = {p} parameters.\n\n"
            + table(["encoding", "R", "K per view", "logits per view", "params per view",
                     "objects per view (first teacher)"], rows, "-rrrrr"))


def render_imagenet_costs(_: Results) -> str:
    x = imagenet_layout()["float16"]
    v, k = x["views"], x["K"]
    view_bytes = x["logits"] + x["params"]
    total_gb = v * view_bytes / 1e9
    puts = 4 * k * v
    open_gets = 2 * v * k
    cycle_gets, random_gets = 2 * k, 2 * v * k
    row_bytes = IMAGENET_C * 2 + x["P"] * 4
    rank_mb = STUDENT_RATE * row_bytes / 1e6
    chunk_mb = x["R"] * IMAGENET_C * 2 / 1e6
    s, p_, g = PRICES["s"], PRICES["p"], PRICES["g"]
    rows = [
        ["store: bytes, objects", f"{total_gb:.1f} GB in {v * x['objects']:,} objects", f"{total_gb:.1f} GB × s",
         f"${total_gb * s:.2f} per month"],
        ["precompute: PUTs (4 per chunk; the lease and manifest add a few)", f"{puts:,}", f"{puts / 1000:.1f} × p",
         f"${puts / 1000 * p_:.2f} once"],
        ["opening a store: checksum-record GETs (2 per view and chunk)",
         f"{open_gets:,} (≈ {open_gets / OPEN_CONCURRENCY * REQUEST_S:.0f} s at {REQUEST_S * 1e3:.0f} ms a request, "
         f"{OPEN_CONCURRENCY} at a time)", f"{open_gets / 1000:.1f} × g", f"${open_gets / 1000 * g:.4f} per process"],
        ["one epoch, `--view-policy cycle`", f"{cycle_gets:,} GETs, {view_bytes / 1e9:.2f} GB",
         f"{cycle_gets / 1000:.1f} × g", f"${cycle_gets / 1000 * g:.4f}"],
        ["one epoch, `--view-policy random`", f"{random_gets:,} GETs, {v * view_bytes / 1e9:.1f} GB",
         f"{random_gets / 1000:.1f} × g", f"${random_gets / 1000 * g:.4f}"],
        [f"read rate a rank needs at {STUDENT_RATE:,} samples/s ({row_bytes:,} B a row)", f"{rank_mb:.1f} MB/s", "", ""],
        [f"{RANKS} such ranks", f"{RANKS * rank_mb:.0f} MB/s, ≈ {RANKS * rank_mb / chunk_mb:.0f} GETs/s of "
                                f"{chunk_mb:.1f} MB chunks", "", ""],
    ]
    return (f"ImageNet-1k, {v} views, float16, one teacher; computed from the layout above and S3 Standard's "
            f"2024 list prices s = ${s}/GB-month, p = ${p_}/1,000 PUTs, g = ${g}/1,000 GETs (check your provider's). "
            f"The student rate ({STUDENT_RATE:,} samples/s, a ResNet-18-class student on one A100-class GPU) is an "
            "assumption, not measured here.\n\n"
            + table(["what", "quantity", "price", "cost"], rows, "-rrr"))


