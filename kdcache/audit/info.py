"""``kdcache info``: what is in a store, as JSON-able data and as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdcache.store import Store
from kdcache.store.derivation import changes, derivation
from kdcache.store.stat_io import describe


def store_info(path: str | Path) -> dict[str, Any]:
    """Everything a user wants to know about a store, as JSON-able data."""
    store = Store.open(path)
    teachers = {}
    for name in store.teacher_names():
        card = store.card(name).to_dict()
        enc = store.encoding(name)
        # Every stored part of the encoding (float16/float32: the one `logits` array).
        parts = {}
        for part, node in store.part_nodes(name):
            arr = store.part_array(name, part.name)  # a damaged zarr.json is one StoreCorruptError line
            parts[part.name] = {"node": node, "shape": list(arr.shape), "dtype": str(arr.dtype),
                                "chunks": list(arr.chunks)}
        on_disk = store.logits_bytes(name)
        teachers[name] = {
            **card,
            "logits": {"shape": [store.num_views, store.num_samples, card["num_classes"]],
                       "dtype": "float32" if not enc.lossless_dense else parts["logits"]["dtype"],
                       "decoded_from": enc.spec},
            "parts": parts,
            "bytes_on_disk": on_disk,
            "bytes_per_view": on_disk / max(1, store.num_views),
            "bytes_per_row": enc.row_bytes(card["num_classes"]),  # before any codec
            # Each statistic with the logits it was computed from (the densest source, see kdcache.stats).
            "stats": {k: {**v, **({"source": card["stats"][k]["source"]} if "source" in card["stats"].get(k, {})
                                  else {})} for k, v in describe(store, name).items()},
        }
        if derivation(store, name) is not None:  # kdcache ensemble: whether its members still hold its rows' source
            teachers[name]["derived_changes"] = changes(store, name)
    m = store.manifest
    views = m.views.to_dict()
    return {
        "path": str(store.path),
        "format_version": m.format_version,
        "status": m.status,
        "created": m.created,
        "updated": m.updated,
        "versions": m.versions,
        "dataset": m.dataset.to_dict(),
        "views": {k: v for k, v in views.items() if k != "recipe"} | {"recipe_name": views["recipe"].get("name")},
        "recipe": views["recipe"],
        "params": _params_info(store),
        "teachers": teachers,
        "bytes_on_disk": store.disk_bytes(),
    }


def _params_info(store: Store) -> dict[str, Any]:
    """How the recorded view parameters are stored: how many, in how many columns of which dtype (int16
    with wide values in two halves from format 2 on), and bytes per (view, sample) row."""
    arr = store.params()
    count = len(store.views.param_names)
    columns = int(arr.shape[2]) if count else 0
    return {"node": "views/params", "count": count, "columns": columns, "dtype": str(arr.dtype),
            "bytes_per_view": columns * int(np.dtype(arr.dtype).itemsize)}


def _op_text(op: dict[str, Any]) -> str:
    config = op.get("configuration") or {}
    return op["name"] + (" " + ", ".join(f"{k}={v}" for k, v in config.items()) if config else "")


def format_info(info: dict[str, Any]) -> str:
    """The human view of :func:`store_info`."""
    d, v = info["dataset"], info["views"]
    lines = [
        f"store      {info['path']}  (format v{info['format_version']}, {info['status']})",
        f"dataset    {d['spec']}  {d['num_samples']:,} samples, {d['num_classes']} classes",
        f"           fingerprint {d['fingerprint']}",
        f"views      {v['num_views']} views, seed {v['seed']}, recipe {v['recipe_name']} ({v['recipe_hash'][:19]}...)",
        f"           {v['chunk_rows']:,} rows per chunk; params: {', '.join(v['param_names']) or 'none'}",
        f"size       {info['bytes_on_disk'] / 1e6:.2f} MB on disk",
    ]
    # The recipe op by op, and what its recorded parameters cost per view (docs/data-and-views.md).
    recipe = info["recipe"]
    ops = recipe.get("ops", [])
    lines.insert(4, "recipe     " + ("; ".join(_op_text(op) for op in ops) if ops else "none (the image as is)"))
    if recipe.get("eval"):
        lines.insert(5, "           eval: " + "; ".join(_op_text(op) for op in recipe["eval"]))
    p = info["params"]
    lines.insert(len(lines) - 1, f"params     {p['count']} recorded per view ({p['columns']} {p['dtype']} columns): "
                                 f"{p['bytes_per_view']} B per view")

    for name, t in info["teachers"].items():
        acc = t.get("accuracy_per_view")
        acc_text = f", mean accuracy {np.mean(acc):.2%}" if acc else ""
        lines.append(
            f"teacher    {name}: {t['spec']} [{t['status']}] logits {tuple(t['logits']['shape'])} "
            f"{t['encoding']} ({t['codec']}), {t['bytes_on_disk'] / 1e6:.2f} MB{acc_text}"
        )
        lines.append(f"           {t['bytes_per_view'] / 1e6:.3f} MB per view on disk; {t['bytes_per_row']} B "
                     f"per (view, sample) row before the codec; parts: {', '.join(t['parts'])}")
        derived = t.get("derived")
        if isinstance(derived, dict):
            weights = derived.get("weights") or [None] * len(derived.get("members", []))
            members = ", ".join(m if w is None else f"{m} ({w:.3g})"
                                for m, w in zip(derived.get("members", []), weights))
            at = f" at T={derived.get('temperature', 1.0):g}" if derived.get("how") == "mean-prob" else ""
            state = ("; ".join(t["derived_changes"]) + ": CHANGED since") if t.get("derived_changes") else \
                "members unchanged since"
            lines.append(f"           derived    {derived.get('how')} of {members}{at} ({state})")
        if t.get("weights_sha256"):
            lines.append(f"           weights {t.get('weights')} (sha256 {t['weights_sha256']})")
        if t.get("program_sha256"):
            lines.append(f"           program sha256 {t['program_sha256']}")
        if t.get("random_init"):
            lines.append("           UNTRAINED: made with --random-init (random weights, on purpose)")
        trained = t.get("trained")
        if isinstance(trained, dict):
            how = trained.get("loss", "?")
            if trained.get("regt_beta") is not None:
                how = f"RegT(beta={trained['regt_beta']:g})"
            elif trained.get("label_smoothing"):
                how = f"label smoothing {trained['label_smoothing']:g}"
            top1 = trained.get("val_top1")
            lines.append(
                f"           trained with {how}, {trained.get('epochs', '?')} epochs on {trained.get('data', '?')}"
                + (f", val top-1 {top1:.2%}" if isinstance(top1, float) else "")
            )
        elif trained:
            lines.append(f"           trained: {trained}")
        if t["stats"]:
            for key, s in t["stats"].items():
                extra = {k: val for k, val in s.items() if k not in ("shape", "dtype", "method")}
                lines.append(f"           stats/{key} {tuple(s['shape'])} {s['dtype']} {extra if extra else ''}")
        else:
            lines.append(f"           no statistics (run `kdcache stats {info['path']}`)")
    return "\n".join(lines)
