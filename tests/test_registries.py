"""One registry idiom across every extension point (kdcache.registry), encodings in a registry, one place
for value checks (kdcache.validate), and the fixes that came with them: loss options exit 2, a repeated
--loss-opt key is refused, import: factories get only the arguments they accept."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcache import encodings, losses
from kdcache.data import registry as data_registry
from kdcache.errors import ModelError, UsageError
from kdcache.models import build_model, check_output_width
from kdcache.models import kinds
from kdcache.registry import DuplicateNameError, Registry
from kdcache.stats import registry as stats_registry
from kdcache.store import Store
from kdcache.views import ops
from kdcache.zoo import _registry as zoo_registry
from tests.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = "synthetic:samples=128,classes=4,size=12,channels=1,seed=5"
VAL = "synthetic:samples=32,classes=4,size=12,channels=1,seed=5,split=test"
TINY = "import:tests.helpers:tiny"
RECIPE = str(ROOT / "tests" / "data" / "recipe-small.json")

# Every extension point and one name registered in it.
REGISTRIES = {
    "losses": (losses.LOSSES, "kd"),
    "ops": (ops.OPS, "random_crop"),
    "model kinds": (kinds.KINDS, "kdcache"),
    "data schemes": (data_registry.SCHEMES, "synthetic"),
    "statistics": (stats_registry.PROVIDERS, "accuracy"),
    "encodings": (encodings.ENCODINGS, "int8"),
    "zoo": (zoo_registry.MODELS, "tiny_cnn"),
}


# --------------------------------------------------------------------------- one registry idiom


@pytest.mark.parametrize("where", sorted(REGISTRIES))
def test_every_extension_point_behaves_alike(where: str) -> None:
    registry, taken = REGISTRIES[where]
    assert isinstance(registry, Registry)
    before = registry.items()
    with pytest.raises(DuplicateNameError, match=f"'{re.escape(taken)}' is already registered"):
        registry.add(taken, registry.get(taken))
    assert registry.items() == before  # a refused registration changes nothing
    with pytest.raises(registry.error) as info:
        registry.get("no_such_name")
    message = str(info.value)
    assert f"unknown {registry.what} 'no_such_name'; known: " in message and "\n" not in message
    assert taken in message.split("known: ", 1)[1].split(", ")  # it lists the known names


def test_a_temporary_registration_is_undone() -> None:
    registry: Registry[int] = Registry("number", UsageError)
    registry.add("one", 1)
    with registry.temporary():
        registry.add("two", 2)
        registry.remove("one")
        assert registry.names() == ["two"]
    assert registry.names() == ["one"] and registry.get("one") == 1


# --------------------------------------------------------------------------- a toy encoding, end to end


def docs_example() -> str:
    """The worked example of docs/internals.md, "How to add an encoding" (what is tested is what the page shows)."""
    page = (ROOT / "docs" / "internals.md").read_text()
    section = page.split("### How to add an encoding", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_a_toy_encoding_registered_in_process_round_trips_through_the_store(tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    base = ["precompute", "--data", DATA, "--teacher", TINY, "--views", "2", "--seed", "3", "--recipe", RECIPE,
            "--chunk-rows", "64", "--out", out]
    with encodings.ENCODINGS.temporary():
        example: dict[str, object] = {}
        exec(compile(docs_example(), "docs/internals.md", "exec"), example)  # registers scaled:S
        Scaled = example["Scaled"]
        # Every place that names encodings asks the registry: the parser, the list users see, the losses.
        assert isinstance(encodings.parse("scaled:64"), Scaled)
        assert "scaled:S (logits x S as int16)" in encodings.encoding_help()
        assert "scaled:S" in losses.spec("dkd").accepted_encodings()
        with pytest.raises(UsageError, match="scaled:S"):
            encodings.parse("scaled:0")

        for name, encoding in (("f32", "float32"), ("sc", "scaled:64")):
            code, text = run_cli(*base, "--teacher-name", name, "--encoding", encoding)
            assert code == 0, text
        store = Store.open(out)
        assert store.card("sc").encoding == "scaled:64" and isinstance(store.encoding("sc"), Scaled)
        for view, chunk in store.iter_chunks():
            exact = store.read_logits_chunk("f32", view, chunk).astype(np.float64)
            assert set(store.read_encoded_chunk("sc", view, chunk)) == {"q"}
            got = store.read_logits_chunk("sc", view, chunk).astype(np.float64)
            assert np.abs(got - exact).max() <= 0.5 / 64 + 1e-6
        code, text = run_cli("verify", out)
        assert code == 0, text
    # Unregistered again: the name is unknown, as before the test.
    assert "scaled" not in encodings.ENCODINGS
    with pytest.raises(UsageError, match="is not an encoding"):
        encodings.parse("scaled:64")


def test_encoding_names_are_spelled_only_where_they_are_registered() -> None:
    """No module outside kdcache/encodings/ lists the encodings by hand or branches on one's name (they ask
    the registry); prose that mentions one is fine."""
    spelled = re.compile(r"float16\b.{0,40}\bfloat32\b.{0,40}\bint8\b|== \"float(16|32)\"|\"topk:K\"")
    found = [str(p.relative_to(ROOT)) for folder in ("kdcache", "cli") for p in (ROOT / folder).rglob("*.py")
             if "encodings" not in p.parts and spelled.search(p.read_text())]
    assert found == []


# --------------------------------------------------------------------------- one place for value checks


def test_option_checks_live_in_validate_only() -> None:
    from kdcache import validate
    from kdcache.engine import config

    assert not [n for n in dir(config) if n.startswith("require_")]
    assert validate.require_int("--epochs", 3, 1) == 3
    with pytest.raises(UsageError, match=r"^--epochs=0 must be a positive integer$"):
        validate.require_int("--epochs", 0, 1)
    with pytest.raises(UsageError, match=r"^--momentum=1.0 must be in \[0, 1\)$"):
        validate.require_number("--momentum", 1.0, minimum=0.0, below=1.0)


def test_precompute_refuses_a_bool_count_as_validate_does(tmp_path: Path) -> None:
    """The old tuple table took True for --views 1 (bool is an int); kdcache.validate refuses it."""
    from kdcache.precompute.run import TeacherRequest, precompute

    with pytest.raises(UsageError, match="--views=True must be a positive integer"):
        precompute(data=DATA, teachers=[TeacherRequest(spec=TINY)], views=True, seed=0, out=tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_duplicated_helpers_are_one() -> None:
    from kdcache import durable
    from kdcache.precompute import scoring
    from kdcache.engine import parallel, records
    from kdcache.store import writing
    import kdcache.distill.logit_sources as logit_sources

    assert scoring.PRECISIONS is parallel.PRECISIONS
    assert scoring.teacher_autocast is parallel.autocast
    assert writing.fsync_path is durable.fsync_path
    assert not hasattr(logit_sources, "_hash") and logit_sources.canonical_hash is records.canonical_hash


# --------------------------------------------------------------------------- import: factories


FACTORIES = textwrap.dedent("""
    from torch import nn

    def fails(num_classes):
        raise ValueError("no weights at /nowhere/w.pt\\nsecond line")

    def forwards(**kwargs):  # passes everything on to a callee that takes num_classes only
        return make(**kwargs)

    def make(num_classes=3):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
""")


@pytest.fixture()
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "kd_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "kd_factories"
    sys.modules.pop("kd_factories", None)


def test_torchvision_resnet18_as_an_import_factory_gets_only_what_it_accepts() -> None:
    model, card = build_model("import:torchvision.models:resnet18", 10, 1, role="student", random_init=True)
    assert model.fc.out_features == 10 and card["spec"] == "import:torchvision.models:resnet18"
    check_output_width(model, 3, 32, 10, micro_batch=2, role="student")  # it works on 3-channel data
    # On 1-channel data it cannot work: one line saying so, before any run.
    with pytest.raises(ModelError, match=r"^student failed on a batch of shape \(2, 1, 32, 32\): .*channels") as info:
        check_output_width(model, 1, 32, 10, micro_batch=2, role="student")
    assert "\n" not in str(info.value)


def test_an_import_factory_that_forwards_kwargs_or_fails_is_one_line(factories: str) -> None:
    model, _ = build_model(f"import:{factories}:forwards", 5, 1, random_init=True)
    assert model(torch.zeros(2, 1, 4, 4)).shape == (2, 5)  # num_classes reached the callee, in_channels dropped
    with pytest.raises(ModelError) as info:
        build_model(f"import:{factories}:fails", 5, 1)
    assert str(info.value) == (f"import:{factories}:fails: the factory failed when called with (num_classes=5): "
                               "ValueError: no weights at /nowhere/w.pt")


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reg") / "s.zarr"
    code, text = run_cli("precompute", "--data", DATA, "--teacher", TINY, "--views", "1", "--seed", "3",
                         "--recipe", RECIPE, "--out", out, "--chunk-rows", "64")
    assert code == 0, text
    return out


@pytest.mark.parametrize(("opt", "needle"), [
    ("temprature=2", "temprature"),
    ("temperature=-1", "temperature"),
    ("temperature=abc", "temperature"),
])
def test_a_bad_loss_option_is_a_usage_error(store: Path, tmp_path: Path, opt: str, needle: str) -> None:
    code, text = run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student", TINY, "--loss", "kd",
                         "--loss-opt", opt, "--epochs", "1", "--out", tmp_path / "run")
    assert_one_line_error(code, text, needle, exit_code=2)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_repeated_loss_option_is_refused_in_one_line(store: Path, tmp_path: Path) -> None:
    code, text = run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student", TINY, "--loss", "kd",
                         "--loss-opt", "temperature=2", "--loss-opt", "temperature=4", "--epochs", "1",
                         "--out", tmp_path / "run")
    assert_one_line_error(code, text, "--loss-opt temperature= is given twice", exit_code=2)
    assert not (tmp_path / "run").exists()
    from kdcache.losses.options import parse_loss_opts

    assert parse_loss_opts(["temperature=2", "grid=[1,2]", "variant=ps"]) == {
        "temperature": 2, "grid": [1, 2], "variant": "ps"}


def test_an_import_factory_error_is_one_cli_line(store: Path, factories: str, tmp_path: Path) -> None:
    code, text = run_cli("distill", store, "--data", DATA, "--val-data", VAL, "--student", f"import:{factories}:fails",
                         "--loss", "kd", "--epochs", "1", "--out", tmp_path / "run")
    assert_one_line_error(code, text, f"import:{factories}:fails", "ValueError: no weights at /nowhere/w.pt")
