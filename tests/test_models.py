"""Tests of kdcache.models and the kdcache.zoo registry.

The batch-invariance tests pin the property the store's replay contract
rests on: a row's float32 logits from run_model do not depend on how many
rows the caller passed, on the row's position in a micro-batch, or on its
neighbours (docs/models.md has the measurements).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from kdcache import zoo
from kdcache.errors import ModelError, SpecError
from kdcache.models import (
    DEFAULT_MICRO_BATCH,
    build_model,
    check_output_width,
    check_row_independence,
    list_models,
    list_torchvision_models,
    load_checkpoint,
    run_model,
    save_checkpoint,
    sha256_file,
)
from kdcache.registry import DuplicateNameError
from kdcache.zoo import _registry

PAPER_MODELS = [
    "resnet8x4", "resnet32x4", "resnet20", "resnet56", "wrn_40_2", "wrn_16_2", "vgg8", "vgg13",
    "mobilenetv2", "shufflev2",
]  # fmt: skip


def _with_bn_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


# --------------------------------------------------------------------------- registry


def test_zoo_lists_the_papers_models_and_the_small_ones() -> None:
    names = list_models()
    assert names == sorted(names)
    for name in [*PAPER_MODELS, "tiny_cnn", "cnn_small", "mlp"]:
        assert name in names


def test_registering_a_taken_name_raises_and_changes_nothing() -> None:
    before = _registry.MODELS.items()
    with pytest.raises(DuplicateNameError, match="zoo model 'tiny_cnn' is already registered"):
        zoo.register_model("tiny_cnn")(lambda *, num_classes, in_channels: nn.Identity())
    assert _registry.MODELS.items() == before


def test_register_a_new_model() -> None:
    with _registry.MODELS.temporary():  # restored after the test
        _register_a_new_model()
    assert "test_linear" not in list_models()


def _register_a_new_model() -> None:
    @zoo.register_model("test_linear")
    def test_linear(*, num_classes: int, in_channels: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, num_classes))

    assert "test_linear" in list_models()
    model, card = build_model("kdcache:test_linear", 4, 1, random_init=True)
    assert card["spec"] == "kdcache:test_linear"
    check_output_width(model, 1, 28, 4)


def test_unknown_zoo_name_lists_valid_ones() -> None:
    with pytest.raises(SpecError, match="kdcache:resnet9: unknown zoo model 'resnet9'; known: .*resnet8x4"):
        build_model("kdcache:resnet9", 10)


@pytest.mark.parametrize("bad", ["", "a:b", "has space"])
def test_register_rejects_names_unfit_for_specs(bad: str) -> None:
    with pytest.raises(SpecError):
        zoo.register_model(bad)


# --------------------------------------------------------------------------- zoo shapes


# The papers' main pairs and the quickstart models run in the fast suite;
# the other depths and widths of the same families only under -m slow.
FAST_ZOO = {*PAPER_MODELS, "tiny_cnn", "cnn_small", "mlp"}


@pytest.mark.parametrize(
    "name", [n if n in FAST_ZOO else pytest.param(n, marks=pytest.mark.slow) for n in list_models()]
)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_zoo_model_takes_28_and_32_pixel_inputs(name: str, in_channels: int) -> None:
    model, card = build_model(f"kdcache:{name}", 7, in_channels, random_init=True)
    assert not model.training
    assert card["in_channels"] == in_channels and card["num_classes"] == 7
    with torch.inference_mode():
        for size in (28, 32):
            out = model(torch.randn(2, in_channels, size, size))
            assert out.shape == (2, 7), (name, size)
            assert torch.isfinite(out).all()


# Parameter counts on CIFAR-100 as the KD papers (CRD, DKD) report them, in
# millions: the zoo reproduces the papers' architectures.
PAPER_PARAMS = {
    "resnet56": 0.86, "resnet20": 0.28, "resnet32x4": 7.43, "resnet8x4": 1.23, "wrn_40_2": 2.25,
    "wrn_16_2": 0.70, "vgg13": 9.46, "vgg8": 3.96, "mobilenetv2": 0.81, "shufflev2": 1.36,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_models_have_the_papers_parameter_counts(name: str) -> None:
    model = zoo.create_model(name, 100, 3)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - PAPER_PARAMS[name]) <= 0.011


def test_state_dict_keys_follow_the_reference_code() -> None:
    # The reference CIFAR code's checkpoints should load without renaming.
    expected = {
        "resnet8x4": ["conv1.weight", "layer1.0.downsample.0.weight", "layer3.0.bn2.running_var", "fc.weight"],
        "wrn_40_2": ["block1.layer.0.convShortcut.weight", "block3.layer.5.bn2.weight", "bn1.weight", "fc.bias"],
        "vgg13": ["block0.0.weight", "block0.1.running_mean", "block0.3.weight", "block4.4.bias", "classifier.weight"],
        "mobilenetv2": ["conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.bias", "classifier.0.weight"],
        "shufflev2": ["conv1.weight", "layer1.0.conv5.weight", "layer3.3.bn3.weight", "bn2.weight", "linear.weight"],
    }  # fmt: skip
    for name, keys in expected.items():
        state = zoo.create_model(name, 100, 3).state_dict()
        for key in keys:
            assert key in state, (name, key)


def test_mlp_and_cnn_small_costs_fit_the_quickstart() -> None:
    student = zoo.create_model("mlp", 10, 1)
    teacher = zoo.create_model("cnn_small", 10, 1)
    tiny = zoo.create_model("tiny_cnn", 10, 1)
    assert 1000 < sum(p.numel() for p in tiny.parameters()) < 10_000
    # Forward multiply-adds on 1x28x28 (see docs/models.md): the teacher
    # should cost 5-20x the student.
    assert 5 <= _macs(teacher, (1, 28, 28)) / _macs(student, (1, 28, 28)) <= 20


def _macs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    total = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


# --------------------------------------------------------------------------- specs


def test_torchvision_resnet18_with_one_input_channel() -> None:
    model, card = build_model("torchvision:resnet18", 10, in_channels=1, random_init=True)
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert model.conv1.padding == (3, 3) and model.conv1.bias is None
    assert card == {
        "spec": "torchvision:resnet18", "weights": None, "weights_sha256": None,
        "program_sha256": None, "state_sha256": None, "random_init": True,
        "num_classes": 10, "in_channels": 1, "trained": None,
    }  # fmt: skip
    json.dumps(card)
    assert run_model(model, torch.randn(3, 1, 32, 32)).shape == (3, 10)


def test_unknown_torchvision_name_suggests_close_ones() -> None:
    with pytest.raises(SpecError, match="resnet18"):
        build_model("torchvision:resnet17", 10)
    assert "resnet18" in list_torchvision_models()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("resnet8x4", "did you mean 'kdcache:resnet8x4'"),
        ("resnet18", "did you mean 'torchvision:resnet18'"),
        ("keras:resnet18", "unknown model spec kind .keras.; known: torchvision, kdcache"),
        ("kdcache:", "names no model"),
        ("import:os", "import:module.path:factory"),
        ("import:no_such_module_kd:f", "cannot import module"),
        ("import:os:no_such_attr", "has no attribute"),
        ("import:os:sep", "not callable"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        build_model(spec, 10)


@pytest.mark.parametrize("value", [0, -1, True, 2.0])
def test_num_classes_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(ModelError, match="num_classes"):
        build_model("kdcache:tiny_cnn", value)  # type: ignore[arg-type]


def test_import_spec_passes_the_arguments_the_factory_accepts() -> None:
    model, card = build_model("import:kdcache.zoo.small:TinyCNN", 5, 1)
    assert card["spec"] == "import:kdcache.zoo.small:TinyCNN"
    assert run_model(model, torch.randn(2, 1, 28, 28)).shape == (2, 5)


def test_import_spec_calls_argumentless_factories_bare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kd_user_models.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def fixed():
                return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3))

            def only_classes(num_classes):
                return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))

            def not_a_model():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kd_user_models", raising=False)
    model, _ = build_model("import:kd_user_models:fixed", 10, 1)
    check_output_width(model, 1, 28, 3)
    with pytest.raises(ModelError, match="outputs 3 classes but the dataset has 10"):
        check_output_width(model, 1, 28, 10)
    model, _ = build_model("import:kd_user_models:only_classes", 6, 1)
    check_output_width(model, 1, 28, 6)
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        build_model("import:kd_user_models:not_a_model", 10)


# --------------------------------------------------------------------------- teacher identity


@pytest.mark.parametrize("spec", ["kdcache:tiny_cnn", "torchvision:resnet18"])
def test_an_architecture_without_weights_is_refused_unless_random_init(spec: str) -> None:
    with pytest.raises(ModelError) as info:
        build_model(spec, 10, 1)
    message = str(info.value)
    assert message == (
        f"teacher {spec} has no --weights: pass --weights CKPT, "
        "or --random-init to use an untrained network on purpose"
    )
    with pytest.raises(ModelError, match=f"^student {spec} has no --weights"):
        build_model(spec, 10, 1, role="student")
    _, card = build_model(spec, 10, 1, random_init=True)
    assert card["random_init"] is True and card["weights"] is None


def test_random_init_and_weights_contradict(tmp_path: Path) -> None:
    model, card = build_model("kdcache:tiny_cnn", 10, 1, random_init=True)
    save_checkpoint(tmp_path / "w.pt", model, card)
    with pytest.raises(ModelError, match="--weights and --random-init contradict"):
        build_model("kdcache:tiny_cnn", 10, 1, weights=tmp_path / "w.pt", random_init=True)
    with pytest.raises(ModelError, match="random_init=.yes. must be True or False"):
        build_model("kdcache:tiny_cnn", 10, 1, random_init="yes")  # type: ignore[arg-type]
    _, card = build_model("kdcache:tiny_cnn", 10, 1, weights=tmp_path / "w.pt")
    assert card["random_init"] is False


def test_weights_and_program_paths_are_recorded_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, card = build_model("kdcache:tiny_cnn", 10, 1, random_init=True)
    save_checkpoint(tmp_path / "w.pt", model, card)
    model = model.eval()
    torch.export.save(torch.export.export(model, (torch.zeros(DEFAULT_MICRO_BATCH, 1, 28, 28),)), str(tmp_path / "p.pt2"))
    monkeypatch.chdir(tmp_path)
    _, card = build_model("kdcache:tiny_cnn", 10, 1, weights="w.pt")
    assert card["weights"] == str(tmp_path / "w.pt") and os.path.isabs(card["weights"])
    assert card["weights_sha256"] == sha256_file(tmp_path / "w.pt")
    _, card = build_model("export:p.pt2", 10, 1)
    assert card["spec"] == f"export:{tmp_path / 'p.pt2'}"
    assert card["program_sha256"] == sha256_file(tmp_path / "p.pt2")
    with pytest.raises(ModelError, match="cannot start untrained: drop --random-init"):
        build_model("export:p.pt2", 10, 1, random_init=True)


def test_import_factories_are_trusted_and_their_state_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An import: factory may load its own weights, so it is not refused; the
    # hash of what it returned identifies them.
    _, first = build_model("import:tests.helpers:tiny", 10, 1)
    _, again = build_model("import:tests.helpers:tiny", 10, 1)
    assert first["random_init"] is False and first["weights"] is None
    assert first["state_sha256"] and first["state_sha256"] == again["state_sha256"]
    (tmp_path / "kd_other_weights.py").write_text(
        "from tests.helpers import _seeded, TinyNet\n"
        "def tiny(num_classes=10, in_channels=1):\n"
        "    return _seeded(lambda: TinyNet(num_classes, in_channels), seed=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _, other = build_model("import:kd_other_weights:tiny", 10, 1)
    assert other["state_sha256"] != first["state_sha256"]
    _, untrained = build_model("import:tests.helpers:tiny", 10, 1, random_init=True)
    assert untrained["random_init"] is True and untrained["state_sha256"] is None


def test_precompute_refuses_a_weightless_zoo_teacher(tmp_path: Path) -> None:
    from tests.cli_helpers import assert_one_line_error, run_cli

    out = tmp_path / "store.zarr"
    code, text = run_cli(
        "precompute", "--data", "synthetic:samples=8,classes=2,size=8,channels=1", "--teacher",
        "kdcache:tiny_cnn", "--views", "1", "--recipe", "none", "--out", str(out),
    )
    assert_one_line_error(code, text, "teacher kdcache:tiny_cnn has no --weights", "--random-init")
    assert not out.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated
def test_torchscript_round_trip(tmp_path: Path) -> None:
    model = _with_bn_stats(zoo.create_model("tiny_cnn", 10, 1))
    x = torch.randn(DEFAULT_MICRO_BATCH, 1, 28, 28)
    path = tmp_path / "teacher.ts"
    torch.jit.trace(model, x).save(str(path))
    loaded, card = build_model(f"torchscript:{path}", 10, 1)
    assert card["program_sha256"] == sha256_file(path)
    assert card["weights"] is None and card["trained"] is None
    assert torch.equal(run_model(loaded, x[:37]), run_model(model, x[:37]))
    with pytest.raises(ModelError, match="carries its own weights"):
        build_model(f"torchscript:{path}", 10, 1, weights=str(path))


def test_export_round_trip(tmp_path: Path) -> None:
    model = _with_bn_stats(zoo.create_model("tiny_cnn", 10, 1))
    x = torch.randn(DEFAULT_MICRO_BATCH, 1, 28, 28)
    path = tmp_path / "teacher.pt2"
    # A static batch equal to the micro-batch suffices: run_model only ever
    # passes micro-batches of that size.
    torch.export.save(torch.export.export(model, (x,)), str(path))
    loaded, card = build_model(f"export:{path}", 10, 1)
    assert card["program_sha256"] == sha256_file(path)
    check_output_width(loaded, 1, 28, 10)
    check_row_independence(loaded, 1, 28)
    assert torch.equal(run_model(loaded, x[:37]), run_model(model, x[:37]))
    with pytest.raises(ModelError, match="failed on a batch of shape \\(8, 1, 28, 28\\)"):
        check_output_width(loaded, 1, 28, 10, micro_batch=8)


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_program_files_missing_or_foreign(kind: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        build_model(f"{kind}:{tmp_path / 'nope.pt'}", 10)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a program")
    with pytest.raises(ModelError, match="is not a program saved with"):
        build_model(f"{kind}:{junk}", 10)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _with_bn_stats(zoo.create_model("tiny_cnn", 10, 1))
    trained = {"spec": "kdcache:tiny_cnn", "num_classes": 10, "in_channels": 1, "epochs": 3}
    path = tmp_path / "sub" / "tiny.pt"
    save_checkpoint(path, model, trained)
    assert os.listdir(path.parent) == ["tiny.pt"]  # no temporary file left behind

    ckpt = load_checkpoint(path)
    assert ckpt["card"] == trained
    assert set(ckpt["state_dict"]) == set(model.state_dict())

    rebuilt, card = build_model("kdcache:tiny_cnn", 10, 1, weights=str(path))
    assert card["trained"] == trained
    assert card["weights"] == str(path)
    assert card["weights_sha256"] == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    json.dumps(card)
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(run_model(rebuilt, x), run_model(model, x))


def test_a_saved_model_card_hands_on_its_training_record(tmp_path: Path) -> None:
    # train-teacher saves {**card, "trained": {...}}: the new card's
    # "trained" is that record, not a card nested in a card.
    model, card = build_model("kdcache:tiny_cnn", 10, 1, random_init=True)
    record = {"epochs": 2, "loss": "ce", "val_top1": 0.5}
    save_checkpoint(tmp_path / "t.pt", model, {**card, "trained": record})
    _, rebuilt = build_model("kdcache:tiny_cnn", 10, 1, weights=str(tmp_path / "t.pt"))
    assert rebuilt["trained"] == record
    assert load_checkpoint(tmp_path / "t.pt")["card"]["trained"] == record


def test_save_checkpoint_refuses_cards_that_are_not_json(tmp_path: Path) -> None:
    model = zoo.create_model("tiny_cnn", 10, 1)
    with pytest.raises(ModelError, match="JSON"):
        save_checkpoint(tmp_path / "a.pt", model, {"x": torch.zeros(1)})
    assert not list(tmp_path.iterdir())


def test_plain_and_foreign_state_dict_layouts_load(tmp_path: Path) -> None:
    model = _with_bn_stats(zoo.create_model("tiny_cnn", 10, 1))
    state = model.state_dict()
    x = torch.randn(3, 1, 28, 28)
    layouts = {
        "plain.pt": state,
        "mdistiller.pt": {"model": state, "epoch": 240, "best_acc": 0.7},
        "ddp.pt": {f"module.{k}": v for k, v in state.items()},
        "old_bn.pt": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        rebuilt, card = build_model("kdcache:tiny_cnn", 10, 1, weights=str(tmp_path / name))
        assert card["trained"] is None
        assert torch.equal(run_model(rebuilt, x), run_model(model, x)), name


_SIDE_EFFECTS: list[str] = []


def _side_effect(tag: str) -> None:
    _SIDE_EFFECTS.append(tag)


class _Payload:
    """Unpickling this calls _side_effect: what a malicious checkpoint would do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_side_effect, ("ran",))


def test_load_checkpoint_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    torch_file = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload()}, torch_file)
    pickle_file = tmp_path / "evil.pkl"
    pickle_file.write_bytes(pickle.dumps(_Payload()))
    for path in (torch_file, pickle_file):
        with pytest.raises(ModelError, match="not a weights-only torch checkpoint"):
            load_checkpoint(path)
    assert _SIDE_EFFECTS == []


def test_load_checkpoint_errors_on_missing_empty_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="not a file"):
        load_checkpoint(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ModelError, match="not a torch checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"w": torch.zeros(1), "lr": 0.1}, tmp_path / "mixed.pt")
    with pytest.raises(ModelError, match="not a state dict.*'lr'"):
        load_checkpoint(tmp_path / "mixed.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path: Path) -> None:
    model = zoo.create_model("resnet8x4", 100, 3)
    path = tmp_path / "r.pt"
    save_checkpoint(path, model, {"spec": "kdcache:resnet8x4", "num_classes": 100, "in_channels": 3})

    with pytest.raises(ModelError) as e:
        build_model("kdcache:resnet8x4", 10, weights=str(path))
    msg = str(e.value)
    assert "\n" not in msg
    assert "fc.weight (checkpoint (100, 256), model (10, 256))" in msg
    assert "kdcache:resnet8x4 with num_classes=10" in msg
    assert "saved from kdcache:resnet8x4 with num_classes=100" in msg

    with pytest.raises(ModelError, match=r"missing from checkpoint: layer1\.1\..* and \d+ more"):
        build_model("kdcache:resnet32x4", 100, weights=str(path))
    with pytest.raises(ModelError, match=r"conv1\.weight \(checkpoint \(32, 3, 3, 3\), model \(32, 1, 3, 3\)\)"):
        build_model("kdcache:resnet8x4", 100, in_channels=1, weights=str(path))
    with pytest.raises(ModelError, match=r"not in model: .*layer1\.0\.downsample"):
        build_model("kdcache:resnet8", 100, weights=str(path))


# --------------------------------------------------------------------------- run_model


def _batch_invariance(name: str, channels: int, size: int, rows: int, online: list[int]) -> None:
    """Logits of rows in dataset order == logits of the same rows in shuffled batches."""
    model = _with_bn_stats(zoo.create_model(name, 10, channels))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, channels, size, size, generator=g)
    stored = run_model(model, x)  # the precompute: dataset order
    perm = torch.randperm(rows, generator=g)
    online_logits = torch.empty_like(stored)
    start = 0
    for b in online:  # a student's shuffled batches, of assorted sizes
        idx = perm[start : start + b]
        online_logits[idx] = run_model(model, x[idx])
        start += b
    assert start == rows
    assert torch.equal(online_logits, stored)


def test_run_model_rows_do_not_depend_on_batching_tiny_cnn() -> None:
    _batch_invariance("tiny_cnn", 1, 28, 200, [1, 7, 64, 65, 13, 50])


def test_run_model_rows_do_not_depend_on_batching_resnet8x4() -> None:
    _batch_invariance("resnet8x4", 3, 32, 40, [3, 37])


def _position_and_neighbours(name: str, channels: int, size: int, positions: list[int]) -> None:
    """One row, placed at each position among random or zero neighbours: same bits."""
    mb = DEFAULT_MICRO_BATCH
    model = _with_bn_stats(zoo.create_model(name, 10, channels))
    g = torch.Generator().manual_seed(2)
    row = torch.randn(channels, size, size, generator=g)
    seen = []
    with torch.inference_mode():
        for i, p in enumerate(positions):
            batch = torch.randn(mb, channels, size, size, generator=g) if i % 2 else torch.zeros(mb, channels, size, size)
            batch[p] = row
            seen.append(run_model(model, batch, mb)[p])
    for p, logits in zip(positions, seen):
        assert torch.equal(logits, seen[0]), f"{name}: position {p} differs from {positions[0]}"


def test_run_model_rows_ignore_position_and_neighbours_tiny_cnn() -> None:
    _position_and_neighbours("tiny_cnn", 1, 28, list(range(DEFAULT_MICRO_BATCH)))


def test_run_model_rows_ignore_position_and_neighbours_resnet8x4() -> None:
    _position_and_neighbours("resnet8x4", 3, 32, [0, 63, 31])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [("resnet8x4", 3, 32), ("resnet8x4", 1, 28), ("cnn_small", 1, 28), ("mlp", 1, 28), ("wrn_16_2", 3, 32)],
)
def test_run_model_rows_ignore_every_position_slow(name: str, channels: int, size: int) -> None:
    _position_and_neighbours(name, channels, size, list(range(DEFAULT_MICRO_BATCH)))


def test_micro_batch_of_one_agrees_to_rounding() -> None:
    # Bits may differ between micro-batch sizes (batch 1 takes other kernels;
    # docs/models.md), so a store records its micro-batch; values agree.
    model = _with_bn_stats(zoo.create_model("tiny_cnn", 10, 1))
    x = torch.randn(9, 1, 28, 28)
    one, many = run_model(model, x, micro_batch=1), run_model(model, x)
    assert torch.allclose(one, many, rtol=1e-5, atol=1e-6)
    assert torch.equal(run_model(model, x[4:5], micro_batch=1), one[4:5])


def test_run_model_output_is_plain_float32() -> None:
    model = _with_bn_stats(zoo.create_model("tiny_cnn", 10, 1))
    x = torch.randn(3, 1, 28, 28)
    out = run_model(model, x)
    assert out.dtype == torch.float32 and out.shape == (3, 10)
    assert not out.is_inference()  # usable in a loss that saves it for backward
    assert run_model(model, x[:0]).shape == (0, 10)
    channels_last = x.to(memory_format=torch.channels_last)
    assert torch.equal(run_model(model, channels_last), out)
    assert torch.equal(run_model(model, x.double()), out)


def test_run_model_takes_the_logits_of_tuple_outputs() -> None:
    class WithFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = zoo.create_model("tiny_cnn", 10, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
            return self.inner(x), {"feats": []}

    model = WithFeatures().eval()
    assert run_model(model, torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_run_model_refuses_training_mode_and_bad_micro_batches() -> None:
    model = zoo.create_model("tiny_cnn", 10, 1)
    with pytest.raises(ModelError, match="eval mode"):
        run_model(model.train(), torch.zeros(2, 1, 28, 28))
    model.eval()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ModelError, match="micro_batch"):
            run_model(model, torch.zeros(2, 1, 28, 28), micro_batch=bad)  # type: ignore[arg-type]


def test_check_row_independence_catches_batch_dependent_models() -> None:
    check_row_independence(_with_bn_stats(zoo.create_model("tiny_cnn", 10, 1)), 1, 28)

    class BatchCentred(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = torch.flatten(x, 1)[:, :10]
            return flat - flat.mean(0)

    with pytest.raises(ModelError, match="not batch-invariant"):
        check_row_independence(BatchCentred().eval(), 1, 28)


def test_check_output_width() -> None:
    model, _ = build_model("kdcache:tiny_cnn", 10, 1, random_init=True)
    check_output_width(model, 1, 28, 10)
    check_output_width(model, 1, (28, 32), 10)
    with pytest.raises(ModelError, match="teacher outputs 10 classes but the dataset has 100"):
        check_output_width(model, 1, 28, 100)
    with pytest.raises(ModelError, match="student outputs 10 classes"):
        check_output_width(model, 1, 28, 100, role="student")
    with pytest.raises(ModelError, match=r"failed on a batch of shape \(64, 3, 28, 28\)"):
        check_output_width(model, 3, 28, 10)


# --------------------------------------------------------------------------- the spec-kind registry


def test_a_new_spec_kind_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdcache.models import kinds

    monkeypatch.setattr(kinds.KINDS, "_entries", dict(kinds.KINDS.items()))  # restored after the test
    built = []

    def build(rest: str, num_classes: int, in_channels: int) -> tuple[nn.Module, None]:
        built.append((rest, num_classes, in_channels))
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes)), None

    kinds.register_kind(kinds.SpecKind("hub", build, weights="checkpoint"))
    with pytest.raises(ModelError, match="teacher hub:net has no --weights"):
        build_model("hub:net", 4, 1)
    _, card = build_model("hub:net", 4, 1, random_init=True)
    assert built[-1] == ("net", 4, 1) and card["spec"] == "hub:net" and card["random_init"] is True
    with pytest.raises(DuplicateNameError, match="model spec kind 'hub' is already registered"):
        kinds.register_kind(kinds.SpecKind("hub", build, weights="checkpoint"))
    with pytest.raises(SpecError, match="unknown model spec kind 'nope'; known: torchvision, kdcache, import, torchscript, export, timm, hub"):
        build_model("nope:x", 4)
