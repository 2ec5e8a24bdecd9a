"""The tables run_all.py writes into the docs: formatting of figures and one renderer per table.

A renderer takes every job's record (``benchmarks/results/JOB.json``) and returns the markdown between
the table's markers; ``run_all.render`` adds above it the provenance line of each job it reads
(command, date, machine, load), or says which job has not run yet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def num(x: float, digits: int = 3) -> str:
    """A figure with about ``digits`` significant digits, thousands separated."""
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def fig(record: dict[str, Any], key: str, digits: int = 3, suffix: str = "") -> str:
    """``median (min–max)`` of a figure (just the value when it has one)."""
    f = record["figures"].get(key)
    if f is None:
        return "n/a"
    if f["n"] == 1:
        return num(f["median"], digits) + suffix
    return f"{num(f['median'], digits)}{suffix} ({num(f['min'], digits)}–{num(f['max'], digits)})"


def med(record: dict[str, Any], key: str) -> float:
    return float(record["figures"][key]["median"])


def provenance(record: dict[str, Any]) -> str:
    m = record.get("machine", {})
    repeats = max((f["n"] for f in record["figures"].values()), default=1)
    load = f"load average {record.get('load_before')} before, {record.get('load_after')} after"
    smoke = "**A smoke run: tiny sizes, the figures mean nothing.** " if record.get("smoke") else ""
    spread = f"; median (min–max) over {repeats} repeats" if repeats > 1 else ""
    threads = m.get("torch_threads")
    return (f"{smoke}`{record['command']}`, {record['date']}: {m.get('cores')} cores ({m.get('cpu')}), "
            f"torch {m.get('torch')} ({threads} intra-op thread{'' if threads == 1 else 's'}), zarr {m.get('zarr')}; "
            f"{load}{spread}.")


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "-" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def missing(*jobs: str) -> str:
    only = " ".join(f"--only {j}" for j in jobs)
    return f"_Not measured yet: run `python benchmarks/run_all.py {only}`._"


def verdict(value: float, low: float | None, high: float | None, lo: float, hi: float) -> str:
    """``met`` / ``not met`` on the median, saying when the min–max range crosses the target."""
    ok = (low is None or value >= low) and (high is None or value <= high)
    crosses = (low is not None and (lo < low <= hi)) or (high is not None and (lo <= high < hi))
    return ("met" if ok else "not met") + (" (the range crosses the target)" if crosses else "")


def within_noise(record: dict[str, Any], key: str) -> str:
    """A ratio of two readers run back to back: within the noise when its per-repeat range holds 1."""
    f = record["figures"][key]
    return "within noise" if f["min"] <= 1.0 <= f["max"] else ("faster" if f["min"] > 1.0 else "slower") + " in every repeat"


def target_cell(record: dict[str, Any], key: str, low: float | None = None, high: float | None = None) -> str:
    f = record["figures"][key]
    return verdict(f["median"], low, high, f["min"], f["max"])


# ---------------------------------------------------------------------------------------------- tables

Results = dict[str, dict[str, Any]]
Renderer = Callable[[Results], str]


@dataclass
class Table:
    doc: str
    jobs: tuple[str, ...]
    render: Renderer
    provenance: bool = True  # a measured table: one provenance line per job above it
    extra: dict[str, Any] = field(default_factory=dict)


def render_precompute(r: Results) -> str:
    rows = []
    for job in ("precompute", "precompute-workers1"):
        if job in r:
            x, c = r[job], r[job]["config"]
            rows.append([f"{c['teacher']}, {c['samples']} views, C={c['classes']}, batch {c['batch']}, "
                         f"workers {c['workers']}", fig(x, "views_per_s/inference only"), fig(x, "views_per_s/precompute"),
                         fig(x, "ratio/precompute / inference"), target_cell(x, "ratio/precompute / inference", 0.95)])
    return table(["teacher, views", "inference only (views/s)", "precompute (views/s)", "precompute ÷ inference",
                  "target ≥ 0.95"], rows, "-rrr-")


def render_store_bytes(r: Results) -> str:
    x = r["store"]
    rows = []
    for key in x["figures"]:
        m = re.fullmatch(r"bytes/C=(\d+)/(\w+)/([\w-]+)/bytes per row", key)
        if m:
            c, enc, codec = int(m.group(1)), m.group(2), m.group(3)
            bpr = med(x, key)
            rows.append([str(c), f"{x['config'][f'bytes_N_C={c}']:,}", enc, codec, num(bpr, 4),
                         f"{bpr / (4 * c):.3f}", f"{bpr / (2 * c):.3f}", fig(x, key.replace('bytes per row', 'write s'), 2)])
    return table(["C", "N", "encoding", "codec", "bytes/row", "÷ raw float32 (4·C)", "÷ raw float16 (2·C)",
                  "write s"], rows, "rr--rrrr")


READ_LABELS = {"memmap": "`numpy.memmap` of the same logits (the bound)", "plain zarr": "plain zarr, `oindex` per batch",
               "unverified": "kdcache reader, unverified", "verified, seen": "kdcache reader, chunks verified before",
               "verified, first": "kdcache reader, first read (every chunk hashed)"}


def render_store_reads(r: Results) -> str:
    x = r["store"]
    rows = []
    for key in x["figures"]:
        m = re.fullmatch(r"reads/C=(\d+)/(\w+)/(.+)/rows per s", key)
        if m:
            c, policy, reader = m.groups()
            base = key.rsplit("/", 1)[0]
            to_unverified = fig(x, f"{base}/ratio to unverified") if reader.startswith("verified") else ""
            rows.append([f"{c}, N={x['config'][f'reads_N_C={c}']:,}", policy, READ_LABELS[reader], fig(x, key),
                         fig(x, f"{base}/ratio to memmap"), to_unverified, fig(x, f"{base}/CPU ms per pass")])
    return table(["C", "view policy", "reader", "rows/s", "÷ memmap", "÷ unverified", "CPU ms per pass"], rows,
                 "---rrrr")


def render_distill(r: Results) -> str:
    x = r["distill"]
    rows = [[mode, fig(x, f"samples_per_s/{mode}"), ""] for mode in ("plain CE", "cached KD", "online KD")]
    rows.append(["cached KD step ÷ plain CE step", fig(x, "ratio/cached KD step / plain CE step"),
                 "≤ 1.05: " + target_cell(x, "ratio/cached KD step / plain CE step", high=1.05)])
    rows.append(["online KD step ÷ cached KD step (the speed-up)", fig(x, "ratio/online KD step / cached KD step"),
                 "report"])
    c = x["config"]
    head = (f"{c['student']} from {c['teacher']} (random init), {c['samples']} samples 32×32×3, C={c['classes']}, "
            f"batch {c['batch']}, workers {c['workers']}, {c['epochs']} epoch per repeat "
            f"({c['online_repeats']} online repeats).\n\n")
    return head + table(["", "training samples/s, or ratio", "target"], rows, "-r-")


def render_distill_memory(r: Results) -> str:
    x = r["distill-memory"]
    small, large = x["config"]["mem_views"]
    rows = []
    for policy in ("cycle", "random"):
        if f"peak RSS growth %/{policy}" not in x["figures"]:
            continue
        rows.append([policy, fig(x, f"peak RSS MiB/{policy}/views={small}", 4),
                     fig(x, f"peak RSS MiB/{policy}/views={large}", 4), fig(x, f"peak RSS growth %/{policy}", 2, "%"),
                     target_cell(x, f"peak RSS growth %/{policy}", high=10.0)])
    head = (f"One epoch of distill (`kdcache:tiny_cnn`, {x['config']['mem_samples']:,} samples of 8×8×3, C=1000, "
            f"batch 256), each in a fresh process; stores of {small} and {large} views "
            f"({fig(x, f'store MiB/views={small}', 3)} and {fig(x, f'store MiB/views={large}', 3)} MiB on disk).\n\n")
    return head + table(["view policy", f"peak RSS, {small} views (MiB)", f"peak RSS, {large} views (MiB)",
                         "growth", "target < +10%"], rows, "-rrr-")


def render_losses(r: Results) -> str:
    x = r["losses"]
    labels = [k.split("/", 2)[2] for k in x["figures"] if k.startswith("loss ms/C=100/")]
    rows = [[label, fig(x, f"loss ms/C=100/{label}"), fig(x, f"loss x CE/C=100/{label}"),
             fig(x, f"loss ms/C=1000/{label}"), fig(x, f"loss x CE/C=1000/{label}")] for label in labels]
    stats = [k.split("/", 2)[2] for k in x["figures"] if k.startswith("stats rows per s/C=100/")]
    srows = [[s, fig(x, f"stats rows per s/C=100/{s}"), fig(x, f"stats rows per s/C=1000/{s}")] for s in stats]
    c = x["config"]
    return (f"Forward + backward, B={c['batch']}, {c['threads']} thread, each repeat the mean of {c['inner']} calls.\n\n"
            + table(["loss", "C=100 ms", "× CE", "C=1000 ms", "× CE"], rows, "-rrrr") + "\n\n"
            + table(["statistic (`kdcache stats`), 4,096 rows", "C=100 rows/s", "C=1000 rows/s"], srows, "-rr"))


def render_remote(r: Results) -> str:
    x = r["remote"]
    rows = []
    for key in x["figures"]:
        m = re.fullmatch(r"(\w+)/(epoch \d)/(.+)/rows per s", key)
        if m:
            policy, epoch, reader = m.groups()
            base = key.rsplit("/", 1)[0]
            rows.append([policy, {"epoch 1": "1 (includes opening)", "epoch 2": "2 (steady state)"}[epoch], reader,
                         fig(x, key), fig(x, f"{base}/ratio to local"), fig(x, f"{base}/ratio to local memmap"),
                         fig(x, f"{base}/x student step rate")])
    c = x["config"]
    head = (f"N={c['samples']:,}, C={c['classes']}, {c['views']} views, float16, batch {c['batch']}; student step rate "
            f"(`kdcache:mlp`, batch 128, 1 thread): {fig(x, 'student step rate')} samples/s.\n\n")
    return head + table(["view policy", "epoch", "reader", "rows/s", "÷ local", "÷ local memmap", "× student step rate"],
                        rows, "---rrrr")


def render_scaling(r: Results) -> str:
    x = r["precompute-scaling"]
    configs = [k.split("/", 1)[1] for k in x["figures"] if k.startswith("views_per_s/")]
    base = configs[0]
    rows = [[cfg, fig(x, f"views_per_s/{cfg}"), fig(x, f"job wall s/{cfg}"), fig(x, f"ratio/{cfg} / {base}")]
            for cfg in configs]
    c = x["config"]
    head = (f"`kdcache precompute` of {c['teacher']} (random init), {c['samples']:,} views of 32×32×3, "
            f"C={c['classes']}, batch {c['batch']}, workers {c['workers']}.\n\n")
    return head + table(["configuration", "views/s (as the command prints)", "job wall s (start-up included)",
                         f"÷ {base}"], rows, "-rrr")


def render_sweep(r: Results) -> str:
    rows = []
    for job in ("sweep-mlp", "sweep-tiny-cnn"):
        if job not in r:
            continue
        x = r[job]
        for key in x["figures"]:
            m = re.fullmatch(r"(\d+) students/separate runs s", key)
            if m:
                n = m.group(1)
                rows.append([x["config"]["student"], n, fig(x, key, 3, " s"), fig(x, f"{n} students/one sweep s", 3, " s"),
                             fig(x, f"{n} students/its report s", 2, " s"),
                             fig(x, f"{n} students/sweep training / separate")])
    return table(["student", "students", "separate runs", "one sweep", "its report", "sweep training ÷ separate"],
                 rows, "-rrrrr")


def render_encodings_reads(r: Results) -> str:
    x = r["encodings-reads"]
    names = [k.split("/")[1] for k in x["figures"] if k.startswith("reads/") and k.endswith("/rows per s")]
    rows = [[n, fig(x, f"reads/{n}/rows per s"), fig(x, f"reads/{n}/ratio to float16"),
             fig(x, f"reads/{n}/ratio to memmap")] for n in names]
    c = x["config"]
    head = (f"The distill reader (window shuffle, checksums verified, decoding included), C={c['read_classes']}, "
            f"N={c['read_samples']:,}, batch {c['read_batch']}, 1 thread; `float16 memmap` is the same logits as "
            "one raw float16 file gathered with `numpy.memmap` (the bound).\n\n")
    return head + table(["encoding", "rows/s", "÷ float16 store", "÷ memmap"], rows, "-rrr")


def render_ensemble(r: Results) -> str:
    x = r["ensemble"]
    c = x["config"]
    hows = [k.split("/", 1)[1] for k in x["figures"] if k.startswith("rows_per_s/") and k != "rows_per_s/read members"]
    rows = [["plain verified read of the members", fig(x, "rows_per_s/read members"), "1"]]
    rows += [[f"ensemble --how {h}", fig(x, f"rows_per_s/{h}"), fig(x, f"ratio to read/{h}")] for h in hows]
    small, large = c["mem_samples"]
    rows.append([f"peak RSS, ensemble --how mean-prob at N={small:,} / {large:,}",
                 f"{fig(x, f'peak RSS MiB/N={small}')} / {fig(x, f'peak RSS MiB/N={large}')} MiB",
                 f"growth {fig(x, 'peak RSS growth %', suffix='%')}"])
    head = (f"{c['members']} float16 members, C={c['classes']}, N={c['samples']:,} (one view), "
            f"{c['chunk_rows']:,} rows per chunk; an ensemble writes float32 and includes its lock, sync and "
            "accuracy pass.\n\n")
    return head + table(["", "rows/s", "÷ read"], rows, "-rr")


def render_quickstart(r: Results) -> str:
    x = r["quickstart"]
    return "```\n" + x["output"] + "\n```"


def render_summary(r: Results) -> str:
    rows: list[list[str]] = []

    def add(what: str, target: str, job: str, value: Callable[[dict[str, Any]], str],
            judge: Callable[[dict[str, Any]], str]) -> None:
        if job in r:
            try:
                rows.append([what, target, value(r[job]), judge(r[job])])
            except KeyError:  # a run that measured less (a smoke run's one view policy)
                rows.append([what, target, "not in this run", ""])
        else:
            rows.append([what, target, "not measured", f"`--only {job}`"])

    for job, workers in (("precompute", 0), ("precompute-workers1", 1)):
        key = "ratio/precompute / inference"
        add(f"precompute ÷ teacher inference alone (workers {workers})", "≥ 0.95", job,
            lambda x, key=key: fig(x, key), lambda x, key=key: target_cell(x, key, 0.95))
    for c, target in ((100, 1_000_000), (1000, 500_000)):
        key = f"reads/C={c}/cycle/verified, seen/rows per s"
        add(f"store reads, one view per epoch (cycle), C={c}, verifying reader", f"≥ {target:,} rows/s", "store",
            lambda x, key=key: fig(x, key) + " rows/s; " + fig(x, key.replace("rows per s", "ratio to memmap"))
            + " of the memmap bound",
            lambda x, key=key, target=target: target_cell(x, key, target))
    for c in (100, 1000):
        key = f"reads/C={c}/random/verified, seen/rows per s"
        add(f"store reads, a random view per sample, C={c}", "report", "store",
            lambda x, key=key: fig(x, key) + " rows/s; " + fig(x, key.replace("rows per s", "ratio to memmap"))
            + " of the memmap bound", lambda x: "")
    for c in (100, 1000):
        base = f"reads/C={c}/cycle"
        add(f"checksum verification ÷ unverified reads, C={c}, cycle (seen before / first read)", "within noise",
            "store", lambda x, base=base: fig(x, f"{base}/verified, seen/ratio to unverified") + " / "
            + fig(x, f"{base}/verified, first/ratio to unverified"),
            lambda x, base=base: "seen before: " + within_noise(x, f"{base}/verified, seen/ratio to unverified"))
    for c in (100, 1000):
        add(f"float16 logits, bytes per row ÷ 2·C, C={c}", "≈ 1", "store",
            lambda x, c=c: f"{med(x, f'bytes/C={c}/float16/none/bytes per row') / (2 * c):.3f}",
            lambda x, c=c: "met" if med(x, f"bytes/C={c}/float16/none/bytes per row") / (2 * c) <= 1.05 else "not met")
    add("cached KD step ÷ plain CE step", "≤ 1.05", "distill",
        lambda x: fig(x, "ratio/cached KD step / plain CE step"),
        lambda x: target_cell(x, "ratio/cached KD step / plain CE step", high=1.05))
    add("online KD step ÷ cached KD step (the speed-up)", "report", "distill",
        lambda x: fig(x, "ratio/online KD step / cached KD step"), lambda x: "")
    for policy in ("cycle", "random"):
        key = f"peak RSS growth %/{policy}"
        add(f"peak RSS of distill, store 10× larger ({policy})", "< +10%", "distill-memory",
            lambda x, key=key: fig(x, key, 2, "%"), lambda x, key=key: target_cell(x, key, high=10.0))
    add("slowest loss forward+backward, C=1000, B=256", "not loss-bound", "losses", _slowest_loss, lambda x: "")
    add("precompute, 2 torchrun ranks × 1 thread ÷ 1 process × 2 threads", "report", "precompute-scaling",
        lambda x: fig(x, "ratio/2 ranks x 1 thread / 1 process x 2 threads"), lambda x: "")
    for policy in ("cycle", "random"):
        key = f"{policy}/epoch 2/s3 obstore"
        add(f"distill reads from S3 (local moto) ÷ local disk, steady state ({policy})", "≥ 0.5, above the step rate",
            "remote", lambda x, key=key: fig(x, f"{key}/ratio to local") + "; " + fig(x, f"{key}/x student step rate")
            + "× the step rate", lambda x, key=key: target_cell(x, f"{key}/ratio to local", 0.5)
            + (", above the step rate" if med(x, f"{key}/x student step rate") > 1 else ", below the step rate"))
    for job in ("sweep-mlp", "sweep-tiny-cnn"):
        add(f"N students in one sweep ÷ N separate runs ({job.removeprefix('sweep-')})", "report", job,
            lambda x: "; ".join(f"N={k.split(' ')[0]}: {fig(x, k)}" for k in x["figures"]
                                if k.endswith("sweep training / separate")), lambda x: "")
    for enc in ("int8", "topk:32", "sample:48@4"):
        key = f"reads/{enc}/ratio to float16"
        add(f"decoding {enc} ÷ float16 reads, C=1000", "≥ 1 (never slower)", "encodings-reads",
            lambda x, key=key: fig(x, key), lambda x, key=key: target_cell(x, key, 1.0))
    return table(["what", "target", "measured: median (min–max)", "verdict"], rows)


def _slowest_loss(x: dict[str, Any]) -> str:
    keys = [k for k in x["figures"] if k.startswith("loss ms/C=1000/")]
    worst = max(keys, key=lambda k: med(x, k))
    return f"{fig(x, worst)} ms ({worst.split('/', 2)[2]})"


# The ImageNet-1k scale model of docs/scaling.md: arithmetic on kdcache's layout and stated assumptions.
