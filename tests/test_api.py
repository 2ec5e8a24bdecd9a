"""The Python API (`kdcache.open_store`): the example in docs/api.md runs as written, and is distill.

The example is read from docs/api.md (its one ```python block), so what is tested is what the page
shows. Run for a few steps on the embedded sample, then in full on a small store against `kdcache
distill` with the same options and seeds: the weights must be bitwise equal (the CLI builds its
steps from the same pieces).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch

import kdcache
from kdcache.api import EpochLoader
from kdcache.errors import KdcacheError
from tests.cli_helpers import run_cli
from tests.resume_helpers import assert_same_tensors

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=256,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=64,classes=4,size=12,channels=1,seed=5,split=test"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) == 1, "docs/api.md should hold exactly one python block (the tested example)"
    return blocks[0]


def precompute(out: Path, data: str, *extra: str) -> None:
    code, text = run_cli("precompute", "--data", data, "--teacher", "import:tests.helpers:tiny", "--seed", "0",
                         "--out", out, *extra)
    assert code == 0, text


def test_the_doc_example_runs_a_few_steps_on_the_embedded_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    precompute(tmp_path / "store.zarr", "embedded", "--views", "1")
    original = EpochLoader.__iter__
    taken: list[int] = []

    def few(self: EpochLoader):  # a few steps per epoch: the example as written, shortened
        for b in itertools.islice(original(self), 3):
            taken.append(len(b.labels))
            yield b

    monkeypatch.setattr(EpochLoader, "__iter__", few)
    monkeypatch.chdir(tmp_path)
    exec(compile(doc_example(), "docs/api.md", "exec"), {"__name__": "__main__"})
    assert taken == [128] * 6
    out = capsys.readouterr().out
    assert re.search(r"epoch 2: last loss \d+\.\d{4}, val top-1 \d+\.\d\d%", out), out
    weights = torch.load(tmp_path / "student.pt", weights_only=True)
    assert weights and all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_the_doc_example_in_full_equals_kdcache_distill_bitwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    precompute(tmp_path / "store.zarr", DATA, "--views", "3", "--recipe", RECIPE, "--encoding", "float32")
    monkeypatch.chdir(tmp_path)
    code = doc_example().replace('"embedded,split=test"', repr(VAL))
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "__main__"})
    code_, text = run_cli("distill", tmp_path / "store.zarr", "--data", DATA, "--val-data", VAL, "--student",
                          "kdcache:tiny_cnn", "--loss", "nkd", "--loss-opt", "gamma=1.5", "--loss-opt",
                          "temperature=1", "--schedule", "constant", "--epochs", "2", "--batch-size", "128",
                          "--lr", "0.05", "--seed", "0", "--init-seed", "0", "--out", tmp_path / "run")
    assert code_ == 0, text
    assert_same_tensors(torch.load(tmp_path / "student.pt", weights_only=True),
                        torch.load(tmp_path / "run" / "final.pt", weights_only=True))


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api") / "store.zarr"
    precompute(out, DATA, "--views", "3", "--recipe", RECIPE, "--encoding", "float32")
    code, text = run_cli("stats", out, "--tau0", "3")
    assert code == 0, text
    return out


def test_batches_carry_the_statistics_the_loss_declares(small_store: Path) -> None:
    store = kdcache.open_store(small_store, DATA)
    assert (store.num_samples, store.num_classes, store.num_views, store.in_channels) == (256, 4, 3, 1)
    plain = next(iter(store.batches(1, batch_size=32)))
    assert plain.loss_inputs == {}
    isats = next(iter(store.batches(1, batch_size=32, loss="isats")))
    assert set(isats.loss_inputs) == {"tau_star"} and isats.loss_inputs["tau_star"].shape == (32,)
    fgcr = next(iter(store.batches(1, batch_size=32, loss="fgcr")))
    assert fgcr.loss_inputs["class_table"].shape == (4, 4)
    assert torch.equal(plain.images, isats.images) and torch.equal(plain.teacher_logits, isats.teacher_logits)
    with pytest.raises(KdcacheError, match="kdcache stats"):
        store.batches(1, loss="fgcr", loss_opts={"tau0": 2})  # a class table the store lacks


def test_an_epoch_is_the_plan_distill_uses_and_replays(small_store: Path) -> None:
    from kdcache.loader import epoch_plan

    store = kdcache.open_store(small_store)  # data: the spec the store was made from
    loader = store.batches(2, batch_size=50, seed=7, num_workers=2)
    assert isinstance(loader, torch.utils.data.DataLoader) and len(loader) == 6
    first = list(loader)
    again = list(loader)
    plan = epoch_plan(7, 2, 256, 3, "cycle")
    assert torch.cat([b.samples for b in first]).tolist() == plan.order.tolist()
    assert torch.cat([b.views for b in first]).tolist() == [1] * 256  # cycle: epoch 2 shows view 1
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.teacher_logits, b.teacher_logits)
    before = torch.get_rng_state()
    list(store.batches(1, batch_size=64, num_workers=0))
    assert torch.equal(before, torch.get_rng_state())  # loading never draws from the global generator


def test_open_store_refuses_other_data(small_store: Path) -> None:
    with pytest.raises(KdcacheError, match="fingerprint|samples|classes"):
        kdcache.open_store(small_store, "synthetic:samples=256,classes=4,size=12,channels=1,seed=6")
