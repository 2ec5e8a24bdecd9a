"""A writer killed inside one of zarr's atomic writes leaves a ``*.partial`` file; the next writer removes it."""

from __future__ import annotations

from pathlib import Path

from kdcache.store.writing import WriterLock, remove_stale_partials


def test_next_writer_removes_killed_writes_temporary_files(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    chunk_dir = store / "teachers" / "t" / "logits" / "c" / "0" / "5"
    chunk_dir.mkdir(parents=True)
    stale = chunk_dir / "0.6c4842ae9b6d4d6184643e40c264e090.partial"
    stale.write_bytes(b"torn")
    kept = [chunk_dir / "0", chunk_dir / "notes.partial", chunk_dir / "0.XYZ.partial"]
    for f in kept:
        f.write_bytes(b"data")
    with WriterLock(store):
        assert not stale.exists()
    assert all(f.exists() for f in kept)  # only zarr's own temporary names are touched
    assert remove_stale_partials(store) == 0
