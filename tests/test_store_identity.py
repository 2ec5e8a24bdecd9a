"""Teacher identity across runs: a random-init teacher is rebuilt from its recorded seed and checked by
the hash of its state, and each teacher card records the platform it was scored on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import kdcache.precompute.run as precompute_module
from kdcache.store import Store
from tests.cli_helpers import assert_one_line_error, precompute_args, run_cli

# The data of tests/test_precompute.py.
PRECOMPUTE = {"data": "synthetic:samples=300,classes=5,size=12,channels=1,seed=3"}

ZOO = "kdcache:tiny_cnn"


def _random_store(out: Path, *extra: str) -> Path:
    code, text = run_cli(*precompute_args(out, "--random-init", *extra, **{**PRECOMPUTE, "teacher": ZOO}))
    assert code == 0, text
    return out


def _edit_card(out: Path, name: str, **changes: object) -> None:
    store = Store.open(out, mode="r+")
    store.set_card(name, store.card(name).replace(**changes))


def test_random_init_teacher_is_seeded_recorded_and_reproducible(tmp_path: Path) -> None:
    a = _random_store(tmp_path / "a.zarr")
    torch.manual_seed(12345)  # the caller's torch stream must not decide the network
    b = _random_store(tmp_path / "b.zarr")
    ca, cb = Store.open(a).card(), Store.open(b).card()
    assert ca.init_seed == 7 and ca.state_sha256 is not None and len(ca.state_sha256) == 64
    assert ca.state_sha256 == cb.state_sha256
    assert np.array_equal(Store.open(a).logits("tiny_cnn")[:], Store.open(b).logits("tiny_cnn")[:])


def test_resume_of_a_random_init_teacher_with_another_network_is_refused(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = _random_store(tmp_path / "r.zarr")
    _edit_card(out, "tiny_cnn", status="writing")  # an interrupted run
    # Build without the recorded seed: another network, the same spec and arguments.
    monkeypatch.setattr(precompute_module.torch, "manual_seed", lambda seed: None)
    code, text = run_cli(*precompute_args(out, "--random-init", **{**PRECOMPUTE, "teacher": ZOO}))
    assert_one_line_error(code, text, "made differently", "state_sha256")


def test_verify_replay_rebuilds_a_random_init_teacher(tmp_path: Path) -> None:
    out = _random_store(tmp_path / "v.zarr", "--encoding", "float32")
    code, text = run_cli("verify", out, "--replay", "6")
    assert code == 0, text
    assert "bitwise equal" in text and "not bitwise" not in text


def test_card_records_the_platform_and_a_resume_elsewhere_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "p.zarr"
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert code == 0, text
    platform = Store.open(out).card().platform
    assert platform is not None
    assert platform["device"] == "cpu" and platform["torch"] == torch.__version__
    assert platform["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    # An interrupted teacher whose card says it was scored under another torch.
    store = Store.open(out, mode="r+")
    store.logit_checksums("tiny")[1, 2] = 0  # one chunk left to score
    _edit_card(out, "tiny", status="writing", platform={**platform, "torch": "0.0-other"})
    code, text = run_cli(*precompute_args(out, **PRECOMPUTE))
    assert_one_line_error(code, text, "another platform", "torch: 0.0-other vs")


def test_replay_compares_with_the_teachers_platform_not_the_manifests(tmp_path: Path) -> None:
    out = tmp_path / "q.zarr"
    assert run_cli(*precompute_args(out, "--encoding", "float32", **PRECOMPUTE))[0] == 0
    platform = Store.open(out).card().platform or {}
    # The teacher was scored elsewhere (here: a GPU); the manifest's versions match this machine.
    _edit_card(out, "tiny", platform={**platform, "device": "cuda", "cuda": "12.4"})
    code, text = run_cli("verify", out, "--replay", "4")
    assert code == 0, text
    assert "platform differs" in text and "device: cuda in the store, cpu here" in text
    # A card of an older store records no platform: the manifest stands in, and the report says so.
    _edit_card(out, "tiny", platform=None)
    code, text = run_cli("verify", out, "--replay", "4")
    assert code == 0, text
    assert "records no platform" in text and "bitwise equal" in text and "platform differs" not in text


@pytest.mark.parametrize("where", ["manifest", "attribute"])
def test_recorded_param_names_must_be_the_recipes(tmp_path: Path, where: str) -> None:
    out = tmp_path / "n.zarr"
    assert run_cli(*precompute_args(out, **PRECOMPUTE))[0] == 0
    store = Store.open(out, mode="r+")
    names = store.param_names()
    swapped = [names[1], names[0], *names[2:]]
    if where == "manifest":
        store._write_manifest(store.manifest.replace(views=store.views.replace(param_names=swapped)))
    else:
        store.params().attrs["names"] = swapped
    code, text = run_cli("info", out)
    assert_one_line_error(code, text, "its recipe draws", "precompute it again")
