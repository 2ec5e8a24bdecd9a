"""Fidelity and read speed of every logit encoding, for every loss (the tables of docs/encodings.md).

For each number of classes C, encoding and loss, at T=1 and T=4 (the loss's
teacher temperature; ATS tau1 = T+1, tau2 = T; ISATS has no temperature):

* bytes per (view, sample) row as stored (before any codec);
* relative error of the loss value, |L_enc − L_fp32| / |L_fp32|;
* cosine between the student-logit gradient of the loss's TEACHER TERMS from
  the encoding and from float32 (the loss minus its hard-label CE term, whose
  gradient no encoding changes and which would flatter the cosine), over a
  batch flattened to one vector. Sampled encodings: mean over draws (the
  spread in brackets).

The teacher rows are decoded exactly as distill decodes them
(``Store.read_logits_chunk`` semantics: topk at the loss's temperature;
``topk:K/const`` is the constant fill, for comparison); statistics a loss
needs (ISATS tau*, FGCR class table) come from the float32 logits, as
``kdcache stats`` takes the densest source. A ``*`` marks a combination
distill refuses without ``--allow-approximate-encoding``.

Logits: C=10 are REAL: a ``kdcache:cnn_small`` Fashion-MNIST teacher
(``--fmnist-weights``, trained with ``kdcache train-teacher``) scored on the
embedded Fashion-MNIST images through ``kdcache precompute``. C=100 and
C=1000 come from :func:`model_like` (documented there), no real teacher of
that many classes being available here. The student logits are
``0.7·t + N(0, 1.5²)``: a student part-way to its teacher.

Read throughput: ``CachedRows`` (the distill reader: window shuffle, whole
verified chunks, decoding included) over a store of N rows per encoding at
C=1000, median of repeats, beside float16 in the same repeats and the same
rows gathered from a plain ``numpy.memmap`` of the float16 logits (the bound
of reading them from this disk).

    nice -n 10 python benchmarks/bench_encodings.py                       # everything
    nice -n 10 python benchmarks/bench_encodings.py --reads-only          # the read throughput alone
    python benchmarks/bench_encodings.py --smoke                          # seconds, for the tests
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchlib import Figures, add_common_args
from kdcache import encodings, losses
from kdcache.distill.cached_rows import CachedRows, epoch_plan
from kdcache.store import ChunkGrid, DatasetRecord, Store, TeacherCard, ViewsRecord
from kdcache.views import load_recipe

ENCODINGS = {
    10: ["float16", "int8", "topk:2", "topk:3", "topk:3/const", "sample:16@1", "sample:16@4"],
    100: ["float16", "int8", "topk:8", "topk:16", "topk:16/const", "sample:32@1", "sample:32@4"],
    1000: ["float16", "int8", "topk:16", "topk:32", "topk:32/const", "topk:128", "topk:256", "sample:48@1",
           "sample:48@4", "sample:128@4"],
}
LOSSES = ["kd", "dkd", "nkd", "la", "dtd", "ats", "isats", "fgcr", "slkd"]
# The weight of the hard-label CE inside each loss (docs/methods.md): its gradient is removed.
CE_WEIGHT: dict[str, Callable[[dict[str, Any]], float]] = {
    "kd": lambda h: h["ce_weight"], "dkd": lambda h: h["ce_weight"], "nkd": lambda h: 1.0,
    "la": lambda h: h["ce_weight"], "dtd": lambda h: h["ce_weight"], "ats": lambda h: 1 - h["lam"],
    "isats": lambda h: 1 - h["lam"], "fgcr": lambda h: 1 - h["lam"],
    "slkd": lambda h: h["a"] + h["p"] * h["a_cs"],
}


def model_like(rows: int, classes: int, seed: int = 0) -> np.ndarray:
    """Model-like logits: a trained classifier's output shape, made up.

    Every class gets N(0, 2²) noise plus an offset N(0, 1.5²) shared by its
    group of 10 classes (related classes move together); the label class gets
    +U(8, 14) and one other class of its group +U(2, 6) (a confusable
    neighbour). Top-1 probability ends near 0.9 at T=1 with a long tail.
    """
    rng = np.random.default_rng(seed)
    groups = -(-classes // 10)
    offset = rng.normal(0, 1.5, size=(rows, groups)).repeat(10, axis=1)[:, :classes]
    z = rng.normal(0, 2, size=(rows, classes)) + offset
    label = rng.integers(0, classes, rows)
    z[np.arange(rows), label] += rng.uniform(8, 14, rows)
    near = np.minimum((label // 10) * 10 + rng.integers(0, 10, rows), classes - 1)
    z[np.arange(rows), near] += rng.uniform(2, 6, rows)
    return z.astype(np.float32)


def fmnist_logits(weights: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Real C=10 logits and labels: the teacher scored on the embedded images by `kdcache precompute`."""
    out = tmp / "fmnist.zarr"
    cmd = ["kdcache", "precompute", "--data", "embedded", "--teacher", "kdcache:cnn_small", "--weights",
           str(weights), "--views", "1", "--seed", "0", "--encoding", "float32", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    s = Store.open(out)
    return np.asarray(s.logits("cnn_small")[0], dtype=np.float32), s.labels()


def hparams_at(loss: str, t: float) -> dict[str, Any]:
    return {"kd": {"temperature": t}, "dkd": {"temperature": t, "warmup": 1}, "nkd": {"temperature": t},
            "la": {"temperature": t}, "dtd": {"base_temperature": t, "beta": 0.2}, "ats": {"tau1": t + 1, "tau2": t},
            "isats": {}, "fgcr": {"tau": t, "tau0": max(t - 1, 1.0)}, "slkd": {"temperature": t}}[loss]


def call_inputs(loss: str, h: dict[str, Any], t32: torch.Tensor, y: torch.Tensor, extra: list[torch.Tensor]
                ) -> dict[str, Any]:
    """What distill hands the loss besides the logits: statistics from the float32 teacher."""
    if loss == "dkd":
        return {"epoch": 1}
    if loss == "isats":
        return {"tau_star": losses.isats_tau_star(t32, y, losses.spec("isats").resolve(h)["grid"])}
    if loss == "fgcr":
        p = torch.softmax(t32 / h["tau0"], dim=1)
        table = torch.zeros(t32.shape[1], t32.shape[1], dtype=t32.dtype).index_add_(0, y, p)
        counts = torch.bincount(y, minlength=t32.shape[1])[:, None]
        # A class without rows in this batch gets the batch's mean target (FGCR needs every row a distribution).
        table = torch.where(counts > 0, table / counts.clamp(min=1), p.mean(dim=0, keepdim=True))
        return {"class_table": table / table.sum(dim=1, keepdim=True)}
    if loss == "slkd":
        return {"slt_logits": extra}
    return {}


def teacher_grad(loss: str, h: dict[str, Any], s0: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                 inputs: dict[str, Any]) -> tuple[float, torch.Tensor]:
    """(loss value, gradient of its teacher terms w.r.t. the student logits)."""
    s = s0.clone().requires_grad_(True)
    out = losses.get(loss)(s, t, y, **h, **inputs)
    resolved = losses.spec(loss).resolve(h)
    teacher_terms = out["loss"] - CE_WEIGHT[loss](resolved) * torch.nn.functional.cross_entropy(s, y)
    (g,) = torch.autograd.grad(teacher_terms, s)
    return float(out["loss"].detach()), g.flatten()


def decode(spec: str, z: np.ndarray, t: float, draw: int, loss: str) -> np.ndarray:
    enc_spec, _, fill = spec.partition("/")
    enc = encodings.parse(enc_spec)
    parts = enc.encode(z, encodings.Rows(seed=draw, view=0, samples=np.arange(len(z)), teacher="bench"))
    return enc.decode(parts, z.shape[1], temperature=losses.spec(loss).read_temperature(hparams_at(loss, t)),
                      tail="constant" if fill == "const" else "temperature")


Cell = tuple[int, str, str, float]  # (C, encoding, loss, T)
RESULTS: dict[Cell, str] = {}


def fidelity(name: str, z: np.ndarray, y: np.ndarray, draws: int, batch: int) -> dict[tuple[str, str, float], float]:
    """Print the fidelity table of one set of logits (and keep its cells for the markdown tables)."""
    classes = z.shape[1]
    rng = np.random.default_rng(1)
    z = z[:batch]
    y_t = torch.from_numpy(np.asarray(y[:batch], dtype=np.int64))
    t32 = torch.from_numpy(z).double()
    s0 = (0.7 * t32 + torch.from_numpy(rng.normal(0, 1.5, size=z.shape))).double()
    extra = [torch.from_numpy(rng.normal(0, 2, size=z.shape)).double() for _ in range(2)]
    kd_cos: dict[tuple[str, str, float], float] = {}
    print(f"\n## {name}: C={classes}, {len(z):,} rows; rel. loss error / gradient cosine vs float32 "
          f"(sampled: mean over {draws} draws, [min])")
    header = f"{'encoding':<14} {'B/row':>6} " + " ".join(f"{loss + ' T=' + str(int(t)):>17}"
                                                       for loss in LOSSES for t in (1.0, 4.0) if loss != "isats" or t == 1)
    print(header)
    for spec in ENCODINGS[classes]:
        enc = encodings.parse(spec.partition("/")[0])
        cells = []
        for loss in LOSSES:
            for t in (1.0, 4.0):
                if loss == "isats" and t != 1.0:
                    continue
                h = hparams_at(loss, t)
                inputs = call_inputs(loss, h, t32, y_t, extra)
                ref_loss, ref_g = teacher_grad(loss, h, s0, t32, y_t, inputs)
                errs, coss = [], []
                for d in range(draws if enc.kind == "probabilities" else 1):
                    tt = torch.from_numpy(decode(spec, z, t, d, loss)).double()
                    try:
                        l_enc, g = teacher_grad(loss, h, s0, tt, y_t, inputs)
                    except losses.LossConfigError:  # e.g. DTD's per-row temperature ≤ 0
                        l_enc, g = float("nan"), torch.full_like(ref_g, float("nan"))
                    errs.append(abs(l_enc - ref_loss) / abs(ref_loss))
                    coss.append(float(torch.nn.functional.cosine_similarity(g, ref_g, dim=0)))
                ok = losses.spec(loss).accepts(enc.kind, enc.temperature, h)
                mark = "" if ok else "*"
                cos = statistics.mean(coss)
                spread = f"[{min(coss):.3f}]" if len(coss) > 1 else ""
                cells.append(f"{statistics.mean(errs):.1e}/{cos:.4f}{spread}{mark}")
                RESULTS[(classes, spec, loss, t)] = f"{statistics.mean(errs):.1e} / {cos:.4f}{mark}"
                if loss == "kd":
                    kd_cos[(spec, loss, t)] = min(coss)
        print(f"{spec:<14} {enc.row_bytes(classes):>6} " + " ".join(f"{c:>17}" for c in cells))
    return kd_cos


def markdown() -> None:
    """The tables of docs/encodings.md: per C, one row per (loss, T), one column per encoding."""
    for classes in sorted({k[0] for k in RESULTS}):
        specs = [s for s in ENCODINGS[classes] if (classes, s, "kd", 1.0) in RESULTS]
        print(f"\n### C={classes}: relative loss error / gradient cosine (`*`: refused without "
              "--allow-approximate-encoding)\n")
        print("| loss, T | " + " | ".join(f"{s} ({encodings.parse(s.partition('/')[0]).row_bytes(classes)} B)"
                                         for s in specs) + " |")
        print("|---|" + "---|" * len(specs))
        for loss in LOSSES:
            for t in (1.0, 4.0):
                if (classes, specs[0], loss, t) in RESULTS:
                    print(f"| {loss}, T={t:g} | " + " | ".join(RESULTS[(classes, s, loss, t)] for s in specs) + " |")


def make_store(path: Path, z: np.ndarray, spec: str, rows_per_chunk: int) -> Store:
    """A one-view store of teacher 't' holding ``z`` in ``spec`` (the bytes precompute would write)."""
    n, c = z.shape
    recipe = load_recipe("none")
    store = Store.create(path, dataset=DatasetRecord(spec="synthetic", name="synthetic", split=None, num_samples=n,
                                                     num_classes=c, channels=1, fingerprint="sha256:bench"),
                         labels=np.zeros(n, np.int64),
                         views=ViewsRecord(seed=0, num_views=1, recipe=recipe.to_dict(), recipe_hash=recipe.hash(),
                                           param_names=recipe.param_names(), chunk_rows=rows_per_chunk))
    store.add_teacher("t", TeacherCard(spec="bench", num_classes=c, in_channels=1, render={}, encoding=spec,
                                       codec="none", micro_batch=64, input_size=[1, 1]))
    enc, grid = encodings.parse(spec), ChunkGrid(n, rows_per_chunk)
    for j in range(grid.num_chunks):
        a, b = grid.bounds(j)
        parts = enc.encode(z[a:b], encodings.Rows(seed=0, view=0, samples=np.arange(a, b), teacher="t"))
        store.write_chunk("t", 0, j, parts, np.zeros((b - a, 0), np.int32))
    store.set_card("t", store.card("t").replace(status="complete"))
    return Store.open(path)


MEMMAP = "float16 memmap"  # the same logits, one raw float16 file gathered with numpy.memmap: the bound


def throughput(tmp: Path, n: int, classes: int, specs: list[str], repeats: int, batch: int,
               figures: Figures) -> dict[str, float]:
    """Rows/s of the distill reader per encoding (decoding at T=4 for topk), medians of ``repeats``, and of
    the same rows gathered from a numpy.memmap of the float16 logits."""
    z = model_like(n, classes, seed=7)
    rows = 4096
    readers = {spec: CachedRows(make_store(tmp / f"read-{spec.replace(':', '_').replace('@', '_')}", z, spec, rows),
                                "t", decode_temperature=4.0) for spec in specs}
    raw = tmp / "logits.f16"
    z.astype(np.float16).tofile(raw)
    memmap = np.memmap(raw, dtype=np.float16, mode="r", shape=z.shape)
    plan = epoch_plan(0, 1, n, 1, "cycle", window=rows * 2)

    def gather() -> int:
        count = 0
        for b in range(0, n, batch):
            count += torch.from_numpy(memmap[plan.order[b : b + batch]]).float().shape[0]
        return count

    passes = {spec: (lambda spec=spec: sum(out["teacher_logits"].shape[0] for out in readers[spec].iterate(plan, batch)))
              for spec in specs}
    passes[MEMMAP] = gather
    names = list(passes)
    rates: dict[str, list[float]] = {s: [] for s in names}
    for r in range(repeats + 1):  # the first pass warms the page cache and is not counted
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            count = passes[name]()
            if r:
                rates[name].append(count / (time.perf_counter() - t0))
    print(f"\n## distill-pattern reads, C={classes}, N={n:,}, batch {batch}, window shuffle, checksums verified, "
          f"decoding included (median of {repeats}, min-max)")
    med = {}
    for name in names:
        x = rates[name]
        fig = figures.add(f"reads/{name}/rows per s", x, "rows/s")
        to_f16 = figures.add(f"reads/{name}/ratio to float16", [a / b for a, b in zip(x, rates["float16"])])
        to_mm = figures.add(f"reads/{name}/ratio to memmap", [a / b for a, b in zip(x, rates[MEMMAP])])
        med[name] = fig["median"]
        print(f"  {name:<14} {fig['median']:>12,.0f} rows/s ({fig['min']:,.0f}-{fig['max']:,.0f})  "
              f"x{to_f16['median']:.2f} of float16  x{to_mm['median']:.3f} of the memmap")
    figures.config(read_classes=classes, read_samples=n, read_batch=batch, read_repeats=repeats)
    return med


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fmnist-weights", type=Path, default=Path("/work/fmnist-results/teacher.pt"),
                    help="a kdcache:cnn_small Fashion-MNIST checkpoint (kdcache train-teacher)")
    ap.add_argument("--batch", type=int, default=1024, help="rows per fidelity batch")
    ap.add_argument("--draws", type=int, default=5, help="draws per sampled encoding")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reads-only", action="store_true", help="the read throughput alone (no fidelity tables)")
    add_common_args(ap)
    args = ap.parse_args(argv)
    batch, draws, repeats, n = (64, 2, 1, 2048) if args.smoke else (args.batch, args.draws, args.repeats, 32768)
    figures = Figures(__file__, argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            if not args.reads_only:
                # The real C=10 teacher needs a trained checkpoint and a `kdcache precompute` process.
                if args.fmnist_weights.exists() and not args.smoke:
                    z10, y10 = fmnist_logits(args.fmnist_weights, tmp)
                    fidelity("Fashion-MNIST teacher (real logits, embedded images)", z10, y10, draws, batch)
                else:
                    print(f"\n(skipping C=10: {'a smoke run' if args.smoke else 'no Fashion-MNIST teacher at '}"
                          f"{'' if args.smoke else args.fmnist_weights})")
                for c in (100, 1000):
                    z = model_like(batch, c, seed=c)
                    fidelity("model-like generator", z, np.argmax(z, axis=1), draws, batch)
                markdown()
            throughput(tmp, n, 1000, ["float16", "int8", "topk:32", "sample:48@4"], repeats, 256, figures)
        figures.write(args.json)  # before the threads are restored: the record names the ones measured
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
