"""What a plain-zarr reader sees, and what kdcache trusts: the labels record, missing chunks, format versions.

Format version 2 records the labels' checksum in the manifest: labels changed with plain zarr fail
``verify`` and every read that uses them (stats, a teacher's accuracy, distill, the API), and a lost labels
or logits chunk is called missing. A store of format version 1 (``tests/data/store-format-v1``, written by
the kdcache before this change, with its top-level lock file) stays readable and writable in its own layout;
its labels, which carry no record, are checked for range, and against the dataset by readers that have it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdcache.errors import StoreCorruptError
from kdcache.store import FORMAT_VERSION, Store, layout
from tests.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
V1 = ROOT / "tests" / "data" / "store-format-v1"
# The data and command the version 1 store was made with (by kdcache at commit fea618a).
V1_DATA = "synthetic:samples=40,classes=3,size=8,channels=1,seed=2"
V1_ARGS = ["precompute", "--data", V1_DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2", "--seed", "5",
           "--recipe", "none", "--chunk-rows", "64"]
DATA = "synthetic:samples=200,classes=4,size=8,channels=1,seed=3"
ARGS = ["precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2", "--seed", "7",
        "--recipe", "none", "--chunk-rows", "64"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v2") / "store.zarr"
    code, text = run_cli(*ARGS, "--out", out)
    assert code == 0, text
    code, text = run_cli("stats", out)
    assert code == 0, text
    return out


@pytest.fixture
def store(made: Path, tmp_path: Path) -> Path:
    """A copy of a complete store of this version, with statistics, to damage."""
    return Path(shutil.copytree(made, tmp_path / "s.zarr"))


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    return Path(shutil.copytree(V1, tmp_path / "v1.zarr"))


def _shift_labels(path: Path) -> None:
    g = zarr.open_group(path, mode="r+")
    g["labels"][:] = np.roll(g["labels"][:], 1)


# ---------------------------------------------------------------- the labels record (this version)


def test_a_new_store_records_its_labels_for_plain_zarr_readers(made: Path) -> None:
    g = zarr.open_group(made, mode="r")
    m = g.attrs["kdcache"]
    assert m["format_version"] == FORMAT_VERSION == 2
    labels = np.asarray(g["labels"][:])
    import hashlib

    digest = int.from_bytes(hashlib.blake2b(labels.astype("<i8").tobytes(), digest_size=8).digest(), "little")
    assert m["dataset"]["labels_checksum"] == f"{digest or 1:016x}"  # as docs/store-format.md states it
    assert g["labels"].fill_value == -1


def test_labels_shifted_with_plain_zarr_fail_verify_and_every_reader(store: Path) -> None:
    _shift_labels(store)
    code, text = run_cli("verify", store)
    assert code == 1 and "BAD: labels do not match their checksum record" in text, text
    code, text = run_cli("verify", store, "--replay", "4")
    assert code == 1 and "BAD: labels" in text, text
    before = Store.open(store).card("tiny").stats
    assert_one_line_error(*run_cli("stats", store), "labels do not match their checksum record")
    assert Store.open(store).card("tiny").stats == before  # nothing was written
    from kdcache.api import open_store

    with pytest.raises(StoreCorruptError, match="labels do not match"):
        open_store(store, DATA)
    code, text = run_cli("distill", store, "--data", DATA, "--val-data", DATA, "--student", "import:tests.helpers:tiny",
                         "--epochs", "1", "--out", store.parent / "run")
    assert_one_line_error(code, text, "labels do not match")


def test_a_deleted_labels_chunk_is_called_missing(store: Path) -> None:
    (store / "labels" / "c" / "0").unlink()
    code, text = run_cli("verify", store)
    assert code == 1 and "BAD: labels chunk 0 (samples 0-199) is missing" in text, text
    code, text = run_cli("stats", store)
    assert_one_line_error(code, text, "labels chunk 0", "is missing")
    assert "have no cached rows" not in text


def test_precompute_rewrites_damaged_labels_from_the_dataset(store: Path, made: Path) -> None:
    _shift_labels(store)
    code, text = run_cli(*ARGS, "--out", store)
    assert code == 0, text
    assert run_cli("verify", store)[0] == 0
    assert np.array_equal(zarr.open_group(store)["labels"][:], zarr.open_group(made)["labels"][:])


# ---------------------------------------------------------------- missing chunks


def test_a_deleted_logits_chunk_is_called_missing_not_corrupted(store: Path) -> None:
    (store / "teachers" / "tiny" / "logits" / "c" / "1" / "2" / "0").unlink()
    code, text = run_cli("verify", store)
    assert code == 1, text
    assert "BAD: teachers/tiny/logits view 1 chunk 2 (rows 128-191) is missing" in text, text
    assert "checksum mismatch" not in text
    with pytest.raises(StoreCorruptError, match="view 1 chunk 2 .* is missing"):
        Store.open(store).read_logits_chunk("tiny", 1, 2)
    code, text = run_cli(*ARGS, "--out", store)  # the same precompute scores it again
    assert code == 0 and run_cli("verify", store)[0] == 0, text


def test_a_deleted_statistic_chunk_is_called_missing(store: Path) -> None:
    node = Store.open(store).card("tiny").stats["isats_tau"].get("node", "isats_tau")
    chunk = next((store / "teachers" / "tiny" / "stats" / node / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    code, text = run_cli("verify", store)
    assert code == 1 and "is missing" in text and "kdcache stats" in text, text


def test_a_corrupted_logits_chunk_is_still_called_corrupted(store: Path) -> None:
    path = store / "teachers" / "tiny" / "logits" / "c" / "0" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 1
    path.write_bytes(bytes(raw))
    code, text = run_cli("verify", store)
    assert code == 1 and "checksum mismatch (corrupted)" in text and "missing" not in text, text


# ---------------------------------------------------------------- format version 1


def test_a_version_1_store_is_read(v1: Path) -> None:
    store = Store.open(v1)
    assert store.manifest.format_version == 1 and store.dataset.labels_checksum is None
    assert store.labels().shape == (40,)
    code, text = run_cli("info", v1)
    assert code == 0 and "format v1" in text, text
    code, text = run_cli("verify", v1, "--replay", "4")
    assert code == 0, text
    assert "format version 1: its labels carry no checksum record" in text and "bitwise equal" in text, text
    from kdcache.api import open_store

    cached = open_store(v1, V1_DATA)  # compared with the dataset: equal
    assert cached is not None


def test_a_version_1_store_is_written_in_its_own_layout(v1: Path) -> None:
    assert (v1 / layout.LOCK_NAME).is_file()  # the old store's lock file, at the top level
    code, text = run_cli("stats", v1, "--tau0", "2")
    assert code == 0, text
    code, text = run_cli(*V1_ARGS, "--out", v1, "--teacher-name", "again")  # adds a teacher
    assert code == 0, text
    m = zarr.open_group(v1, mode="r").attrs["kdcache"]
    assert m["format_version"] == 1 and not m["dataset"].get("labels_checksum")
    assert set(Store.open(v1).teacher_names()) == {"tiny", "again"}
    assert run_cli("verify", v1)[0] == 0


def test_version_1_labels_are_checked_for_range_and_against_the_dataset(v1: Path) -> None:
    g = zarr.open_group(v1, mode="r+")
    _shift_labels(v1)
    # No record: verify and stats cannot see a shift (documented) ...
    assert run_cli("verify", v1)[0] == 0
    # ... but a reader with the dataset can, and the same precompute rewrites them from it.
    from kdcache.api import open_store

    with pytest.raises(StoreCorruptError, match="differ from the dataset's labels"):
        open_store(v1, V1_DATA)
    code, text = run_cli(*V1_ARGS, "--out", v1)
    assert code == 0, text
    open_store(v1, V1_DATA)
    g["labels"][0] = 7  # not a class of 3
    code, text = run_cli("verify", v1)
    assert code == 1 and "not a class id in [0, 3)" in text, text


def test_the_version_1_fixture_is_what_that_kdcache_wrote() -> None:
    m = json.loads((V1 / "zarr.json").read_text())["attributes"]["kdcache"]
    assert m["format_version"] == 1 and "labels_checksum" not in m["dataset"]
    assert m["versions"]["kdcache"] and (V1 / layout.LOCK_NAME).is_file()


# ---------------------------------------------------------------- what the user named wrongly


def test_a_damaged_zarr_json_is_called_malformed_not_missing(store: Path) -> None:
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')  # cut short
    for command in (("info", store), ("verify", store)):
        code, text = run_cli(*command)
        assert code == 1, text
        assert f"{store / 'zarr.json'} is not valid JSON" in text and "no zarr group" not in text, text


def test_storage_options_on_a_local_store_are_refused_not_ignored(made: Path, tmp_path: Path) -> None:
    for command in (("info", made), ("verify", made), ("precompute", *ARGS[1:], "--out", tmp_path / "new.zarr")):
        code, text = run_cli(*command, "--storage-option", "region=eu-west-1")
        assert code == 2, text
        assert "is a local path, but --storage-option (region)" in text, text
    assert not (tmp_path / "new.zarr").exists()  # refused before anything was written
