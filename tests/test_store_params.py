"""``views/params`` in store format 2: int16 columns, a wide param in ``.hi``/``.lo`` halves.

The store packs the recorded view params on write (and before the checksum when precompute redraws a
damaged chunk) and unpacks them on read, so every reader above the store sees the (rows, P) int32 params
of ``Recipe.param_names()``. A plain-zarr reader decodes them as docs/store-format.md says. Version 1
stores keep one int32 column per param, also when kdcache writes into them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.data import open_data
from kdcache.errors import StoreError
from kdcache.store import Store, layout
from kdcache.store.chunks import checksum
from kdcache.views import Recipe, sample_params
from kdcache.views.packing import packed_names
from tests.cli_helpers import run_cli

DATA = "synthetic:samples=192,classes=4,size=20,channels=3,seed=5"
RECIPE = {
    "name": "wide",
    "ops": [
        {"name": "random_resized_crop", "configuration": {"size": [16, 16], "scale": [0.3, 1.0]}},
        {"name": "random_erasing", "configuration": {"p": 0.5, "value": "random"}},  # a 31-bit noise seed
        {"name": "mix", "configuration": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0,
                                          "switch_prob": 0.5}},  # mix_partner, and the partner's noise seed
    ],
    "render": {"size": None, "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.3], "channels": None},
}
WIDE = ["1.random_erasing.noise", "2.mix.mix_partner", "2.mix.partner.1.random_erasing.noise"]


def _args(recipe: Path, out: Path) -> list[str]:
    return ["precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2", "--seed", "4",
            "--recipe", str(recipe), "--out", str(out), "--chunk-rows", "64", "--encoding", "float32"]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "wide.json"
    path.write_text(json.dumps(RECIPE))
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, recipe_file: Path) -> Path:
    out = tmp_path_factory.mktemp("p") / "store.zarr"
    code, text = run_cli(*_args(recipe_file, out))
    assert code == 0, text
    return out


@pytest.fixture
def store(made: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(made, tmp_path / "s.zarr"))


def _drawn(view: int) -> np.ndarray:
    """(N, P) params as the seed draws them: what every reader must get back."""
    recipe, source = Recipe.from_dict(RECIPE), open_data(DATA)
    return np.stack([sample_params(recipe, 4, i, view, source.image_size(i), source) for i in range(len(source))])


def _plain_decode(g: zarr.Group, view: int) -> tuple[list[str], np.ndarray]:
    """docs/store-format.md's rule, with zarr alone: ``value = hi * 65536 + (lo & 0xFFFF)``."""
    columns = list(g["views/params"].attrs["names"])
    stored = np.asarray(g["views/params"][view]).astype(np.int64)
    names = [c[: -len(".hi")] if c.endswith(".hi") else c for c in columns if not c.endswith(".lo")]
    values = [stored[:, columns.index(n)] if n in columns else
              stored[:, columns.index(n + ".hi")] * 65536 + (stored[:, columns.index(n + ".lo")] & 0xFFFF)
              for n in names]
    return names, np.stack(values, axis=1)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_params_are_int16_with_wide_values_in_halves_and_read_back_as_drawn(made: Path) -> None:
    g = zarr.open_group(made, mode="r")
    arr = g["views/params"]
    recipe = Recipe.from_dict(RECIPE)
    assert g.attrs["kdcache"]["format_version"] == 2
    assert arr.dtype == np.int16 and list(arr.attrs["names"]) == packed_names(recipe)
    assert [n[:-3] for n in arr.attrs["names"] if n.endswith(".hi")] == WIDE
    # the manifest keeps the params' own names; the array's attribute names its columns
    assert g.attrs["kdcache"]["views"]["param_names"] == recipe.param_names()
    store = Store.open(made)
    for view in range(2):
        drawn = _drawn(view)
        assert drawn[:, recipe.param_names().index("2.mix.mix_partner")].max() > 0
        names, plain = _plain_decode(g, view)
        assert names == recipe.param_names() and np.array_equal(plain, drawn)
        got = np.concatenate([store.read_params_chunk(view, j) for j in range(store.grid.num_chunks)])
        assert got.dtype == np.int32 and np.array_equal(got, drawn)
        for j in range(store.grid.num_chunks):  # each record hashes the int16 bytes on disk
            start, stop = store.grid.bounds(j)
            raw = np.asarray(arr[view, start:stop]).astype("<i2").tobytes()
            digest = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") or 1
            assert int(g["views/checksums"][view, j]) == digest


def test_info_reports_the_packed_bytes_per_view(made: Path) -> None:
    code, text = run_cli("info", made)
    assert code == 0, text
    count, columns = len(Recipe.from_dict(RECIPE).param_names()), len(packed_names(Recipe.from_dict(RECIPE)))
    assert columns == count + len(WIDE)
    line = next(x for x in text.splitlines() if x.startswith("params"))
    assert f"{count} recorded per view ({columns} int16 columns): {2 * columns} B per view" in line, line


def test_a_damaged_packed_chunk_is_redrawn_packed_by_precompute(store: Path, recipe_file: Path) -> None:
    chunk = layout.chunk_file(store, layout.VIEW_PARAMS, 1, 2, 0)
    before = chunk.read_bytes()
    _flip(chunk)
    code, text = run_cli("verify", store)
    assert code == 1 and "views/params view 1 chunk 2 (rows 128-191): checksum mismatch" in text, text
    code, text = run_cli(*_args(recipe_file, store))  # redraws, packs, and checks against the record
    assert code == 0, text
    assert chunk.read_bytes() == before
    assert run_cli("verify", store)[0] == 0


def _downgrade(path: Path) -> None:
    """Make ``path`` what kdcache wrote in format 1: one int32 column per param, records of those bytes,
    no labels record."""
    g = zarr.open_group(path, mode="r+")
    store = Store.open(path)
    recipe, grid = store.recipe(), store.grid
    params = np.stack([np.concatenate([store.read_params_chunk(v, j) for j in range(grid.num_chunks)])
                       for v in range(store.num_views)])
    g.create_array(layout.VIEW_PARAMS, shape=params.shape, chunks=(1, grid.chunk_rows, params.shape[2]),
                   dtype="int32", fill_value=-1, compressors=None,
                   attributes={layout.PARAM_NAMES_ATTR: recipe.param_names()}, overwrite=True)
    g[layout.VIEW_PARAMS][:] = params
    for v in range(store.num_views):
        for j in range(grid.num_chunks):
            start, stop = grid.bounds(j)
            g[layout.VIEW_CHECKSUMS][v, j] = checksum(params[v, start:stop])
    m = dict(g.attrs["kdcache"])
    m["format_version"] = 1
    m["dataset"] = {k: v for k, v in m["dataset"].items() if k != "labels_checksum"}
    g.attrs["kdcache"] = m


def test_a_version_1_store_keeps_int32_params_read_and_repaired(store: Path, recipe_file: Path) -> None:
    _downgrade(store)
    s = Store.open(store)
    assert s.manifest.format_version == 1 and s.params().dtype == np.int32
    assert np.array_equal(np.concatenate([s.read_params_chunk(0, j) for j in range(s.grid.num_chunks)]), _drawn(0))
    code, text = run_cli("info", store)
    count = len(Recipe.from_dict(RECIPE).param_names())
    assert code == 0 and f"{count} recorded per view ({count} int32 columns): {4 * count} B per view" in text, text
    code, text = run_cli("verify", store, "--replay", "6")
    assert code == 0 and "bitwise equal" in text, text
    chunk = layout.chunk_file(store, layout.VIEW_PARAMS, 0, 1, 0)
    before = chunk.read_bytes()
    _flip(chunk)
    code, text = run_cli(*_args(recipe_file, store))  # redrawn in the store's own layout (int32)
    assert code == 0, text
    assert chunk.read_bytes() == before
    g = zarr.open_group(store, mode="r")
    assert g.attrs["kdcache"]["format_version"] == 1 and g["views/params"].dtype == np.int32
    assert run_cli("verify", store)[0] == 0


def test_a_version_2_store_with_unpacked_column_names_is_refused(store: Path) -> None:
    g = zarr.open_group(store, mode="r+")
    g["views/params"].attrs["names"] = Recipe.from_dict(RECIPE).param_names()  # the format 1 names
    with pytest.raises(StoreError, match="views/params attribute 'names'"):
        Store.open(store)
