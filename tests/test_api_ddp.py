"""DDP in your own loop: `store.batches(...)` gives each rank distill's slice of every global batch.

A plain PyTorch DDP loop over the API, run as 2 real processes (torchrun, gloo), ends with weights
bitwise equal to `torchrun --nproc-per-node 2 kdcache distill` with the same options and seeds, has
the same per-step losses, and each rank sees distill's rows. Arguments that contradict the process
group, or a global batch that leaves a rank without rows, are refused in one line. The Lightning
example of docs/api.md runs as written (a small store, 1 epoch, CPU).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import kdcache
from kdcache.engine.parallel import rank_bounds
from kdcache.errors import UsageError
from tests.cli_helpers import run_cli
from tests.dist_helpers import env, torchrun
from tests.resume_helpers import ROOT, assert_same_tensors, read_jsonl

# 157 samples in global batches of 64: the last batch (29 rows) splits 14/15, so the loss scale matters.
DATA = "synthetic:samples=157,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")
EPOCHS, BATCH, SEED, LR = 2, 64, 3, 0.1

# The user's loop: plain torch.distributed + DDP, nothing from kdcache's engine.
LOOP = """
import json, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
import kdcache
from kdcache.zoo import create_model

store_path, data, out, epochs, batch, seed, lr = sys.argv[1:8]
dist.init_process_group("gloo")
rank = dist.get_rank()
store = kdcache.open_store(store_path, data)
loss = kdcache.losses.spec("kd")
hp = loss.resolve({})
torch.manual_seed(int(seed))
model = create_model("tiny_cnn", num_classes=store.num_classes, in_channels=store.in_channels)
ddp = DistributedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=float(lr), momentum=0.9, weight_decay=5e-4)
steps, rows = [], []
for epoch in range(1, int(epochs) + 1):
    model.train()
    for b in store.batches(epoch, batch_size=int(batch), seed=int(seed), loss="kd", loss_opts=hp):
        parts = loss.fn(ddp(b.images), b.teacher_logits, b.labels, **hp, **b.loss_inputs)
        opt.zero_grad()
        (parts["loss"] * b.loss_scale).backward()
        opt.step()
        total = torch.tensor([float(parts["loss"].detach()) * len(b.labels)], dtype=torch.float64)
        dist.all_reduce(total)  # the global batch's mean loss, reduced as distill reduces it
        steps.append(float(total) / b.global_rows)
        rows.append({"samples": b.samples.tolist(), "views": b.views.tolist(), "global_rows": b.global_rows,
                     "world_size": b.world_size, "loss_scale": b.loss_scale})
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"steps": steps, "rows": rows}, f)
if rank == 0:
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f"{out}/student.pt")
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("api-ddp") / "store.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", "import:tests.helpers:tiny", "--views", "2",
                         "--seed", "7", "--recipe", RECIPE, "--out", out, "--chunk-rows", "64",
                         "--encoding", "float32")
    assert code == 0, text
    return out


def torchrun_script(nproc: int, script: Path, *args: object, timeout: float = 300.0) -> tuple[int, str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    proc = subprocess.run([*launcher, str(script), *map(str, args)], env=env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow  # two 2-process torchrun jobs (~20-45 s on a loaded 2-core machine)
def test_own_ddp_loop_equals_torchrun_distill_bitwise(store: Path, tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    own = tmp_path / "own"
    own.mkdir()
    code, text = torchrun_script(2, script, store, DATA, own, EPOCHS, BATCH, SEED, LR)
    assert code == 0, text
    run = tmp_path / "run"
    code, text = torchrun(2, "distill", store, "--data", DATA, "--val-data", VAL, "--student", "kdcache:tiny_cnn",
                          "--loss", "kd", "--schedule", "constant", "--epochs", EPOCHS, "--batch-size", BATCH,
                          "--lr", LR, "--seed", SEED, "--out", run)
    assert code == 0, text
    assert_same_tensors(torch.load(own / "student.pt", weights_only=True),
                        torch.load(run / "final.pt", weights_only=True))
    ranks = [json.loads((own / f"rank{r}.json").read_text()) for r in (0, 1)]
    # The same per-step global losses as distill's records, to the bit, on both ranks.
    assert [s["loss"] for s in read_jsonl(run / "steps.jsonl")] == ranks[0]["steps"] == ranks[1]["steps"]
    # Each rank's rows are its contiguous slice of the one-process global batch (distill's split).
    whole = kdcache.open_store(store, DATA)
    for epoch in range(1, EPOCHS + 1):
        per_epoch = len(whole.batches(epoch, batch_size=BATCH, seed=SEED, loss="kd"))
        for i, b in enumerate(whole.batches(epoch, batch_size=BATCH, seed=SEED, loss="kd")):
            n = len(b.labels)
            for r in (0, 1):
                got = ranks[r]["rows"][(epoch - 1) * per_epoch + i]
                lo, hi = rank_bounds(n, r, 2)
                assert got["samples"] == b.samples[lo:hi].tolist() and got["views"] == b.views[lo:hi].tolist()
                assert (got["global_rows"], got["world_size"]) == (n, 2)
                assert got["loss_scale"] == (hi - lo) * 2 / n
    assert {r["loss_scale"] for r in ranks[0]["rows"]} == {1.0, 14 * 2 / 29}  # the short batch is scaled


def test_explicit_rank_without_a_group_is_distills_slice(store: Path) -> None:
    s = kdcache.open_store(store, DATA)
    whole = list(s.batches(1, batch_size=BATCH, seed=SEED, loss="kd"))
    parts = [list(s.batches(1, batch_size=BATCH, seed=SEED, loss="kd", rank=r, world_size=2)) for r in (0, 1)]
    assert all(b.loss_scale == 1.0 and b.world_size == 1 for b in whole)
    for b, p0, p1 in zip(whole, *parts, strict=True):
        assert torch.equal(torch.cat([p0.samples, p1.samples]), b.samples)
        assert torch.equal(torch.cat([p0.teacher_logits, p1.teacher_logits]), b.teacher_logits)
        assert torch.equal(torch.cat([p0.images, p1.images]), b.images)
        assert len(p0.labels) == len(b.labels) // 2  # rank 0 takes the floor: [0, n//2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"world_size": 2}, "rank=None, world_size=2: pass a rank from 0 to 1"),
    ({"rank": 1}, "rank=1 needs world_size"),
    ({"rank": 2, "world_size": 2}, "rank=2, world_size=2: pass a rank from 0 to 1"),
    ({"rank": 0, "world_size": 2, "batch_size": 78}, "batch_size 78 over 157 samples leaves a batch of 1 rows "
                                                      "for 2 ranks"),
    ({"rank": 0, "world_size": 4, "batch_size": 3}, "batch_size 3 over 157 samples leaves a batch of 1 rows "
                                                     "for 4 ranks"),
])
def test_contradictory_or_unsplittable_arguments_are_refused(store: Path, kwargs: dict, message: str) -> None:
    s = kdcache.open_store(store, DATA)
    with pytest.raises(UsageError) as info:
        s.batches(1, **{"batch_size": BATCH, **kwargs})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_arguments_that_contradict_the_process_group_are_refused(store: Path, tmp_path: Path) -> None:
    s = kdcache.open_store(store, DATA)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        for kwargs in ({"rank": 1}, {"world_size": 2}, {"rank": 1, "world_size": 2}):
            with pytest.raises(UsageError, match=r"contradict the initialised process group \(rank 0 of 1\)"):
                s.batches(1, batch_size=BATCH, **kwargs)
        loader = s.batches(1, batch_size=BATCH, rank=0, world_size=1)  # agreeing values are fine
        assert (loader.rank, loader.world_size) == (0, 1)
        assert (s.batches(1).rank, s.batches(1).world_size) == (0, 1)  # the group's, by default
    finally:
        dist.destroy_process_group()


def lightning_example() -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
              if "import lightning" in b]
    assert len(blocks) == 1, "docs/api.md should hold one Lightning python block"
    return blocks[0]


def test_the_lightning_example_runs(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lightning")
    code = lightning_example()
    trainer = "L.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False)"
    here = ('L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False, '
            'enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1, '
            'use_distributed_sampler=False)')
    for old, new in (('"store.zarr"', repr(str(store))), ('"embedded,split=test"', repr(VAL)), (trainer, here),
                     ("batch_size: int = 128", "batch_size: int = 64")):
        assert old in code, f"the example no longer holds {old}, which this test replaces"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__main__"}
    exec(compile(code, "docs/api.md", "exec"), scope)
    trainer_ = scope["trainer"]
    assert trainer_.current_epoch == 1 and trainer_.global_step == 3  # ceil(157 / 64) steps of 1 epoch
    metrics = trainer_.callback_metrics
    assert torch.isfinite(metrics["train_loss"]) and 0.0 <= float(metrics["val_top1"]) <= 1.0
