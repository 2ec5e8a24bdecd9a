"""Data sources: every spec, its errors, and content fingerprints."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from torchvision.io import write_png

from kdcache.data import DEFAULT_FASHION_MNIST_ROOT, EMBEDDED_PATH, FASHION_MNIST_CLASSES, DataSource, open_data
from kdcache.errors import DataNotFoundError, SpecError
from kdcache.registry import DuplicateNameError

# torchvision 0.29 deprecates its image codecs in favour of torchcodec (not
# installed here); the brief and docs/internals.md use torchvision.io.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

REAL_FASHION_MNIST = os.path.isfile(os.path.join(DEFAULT_FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz"))

# Pinned: the content of the shipped sample. Rebuilding data/ from the same
# Debian package must give the same arrays (data/README.md).
EMBEDDED_FINGERPRINTS = {
    "train": "sha256:95601d72a9c62e2273d6086174b4312ee77f13c46e1edab25278cfc55bfa0052",
    "test": "sha256:f8a39d34ae2fc4382850b4d43121c3cc4cba844c08b4cbbfb9d90fa3b8b5bca6",
}


# --------------------------------------------------------------------------- fixtures writing fake datasets


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fake_idx(root, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        arrays[prefix] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = root / f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(array)
            if gz:
                with gzip.open(f"{path}.gz", "wb") as f:
                    f.write(data)
            else:
                path.write_bytes(data)
    return arrays


def _fake_cifar(root, hundred=False, n=6):
    rng = np.random.default_rng(1)
    if hundred:
        folder, batches, meta = root / "cifar-100-python", ["train", "test"], ("meta", "fine_label_names")
        label_key, classes = "fine_labels", [f"c{i}" for i in range(100)]
    else:
        folder = root / "cifar-10-batches-py"
        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta, label_key, classes = ("batches.meta", "label_names"), "labels", [f"c{i}" for i in range(10)]
    folder.mkdir(parents=True)
    written = {}
    for name in batches:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, len(classes), n).tolist()
        written[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f)
    with open(folder / meta[0], "wb") as f:
        pickle.dump({meta[1]: classes}, f)
    return written, classes


@pytest.fixture
def no_md5(monkeypatch):
    """Let torchvision accept fake CIFAR batches: check existence, not the official MD5."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def _png_tree(root, spec):
    """spec: {class: [(channels, h, w, value), ...]}"""
    for cls, images in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k, (c, h, w, value) in enumerate(images):
            write_png(torch.full((c, h, w), value, dtype=torch.uint8), str(root / cls / f"{k}.png"))


# --------------------------------------------------------------------------- fashion-mnist (IDX)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    arrays = _fake_idx(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = open_data(f"fashion-mnist:{tmp_path},split={split}")
        images, labels = arrays[prefix]
        assert len(ds) == len(labels) and ds.split == split and ds.name == "fashion-mnist"
        assert ds.num_classes == 10 and ds.classes == FASHION_MNIST_CLASSES and ds.channels == 1
        assert ds.labels.dtype == np.int64 and np.array_equal(ds.labels, labels)
        image = ds.image(3)
        assert image.dtype == torch.uint8 and image.shape == (1, 28, 28)
        assert np.array_equal(image[0].numpy(), images[3])
        assert ds.image_size(3) == (28, 28)


def test_gzipped_and_plain_idx_have_the_same_fingerprint(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _fake_idx(tmp_path / "a", gz=True)
    _fake_idx(tmp_path / "b", gz=False)
    assert open_data(f"fashion-mnist:{tmp_path / 'a'}").fingerprint() == open_data(f"fashion-mnist:{tmp_path / 'b'}").fingerprint()


def test_fashion_mnist_torchvision_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _fake_idx(raw)
    assert len(open_data(f"fashion-mnist:{tmp_path},split=test")) == 5


def test_fashion_mnist_missing_files_and_bad_files(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"folder .*nowhere does not exist; install the Debian package"):
        open_data(f"fashion-mnist:{tmp_path / 'nowhere'}")
    with pytest.raises(DataNotFoundError, match=r"no train-images-idx3-ubyte\[\.gz\] in .*FashionMNIST/raw"):
        open_data(f"fashion-mnist:{tmp_path}")
    _fake_idx(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataNotFoundError, match="truncated"):
        open_data(f"fashion-mnist:{tmp_path}")
    path.write_bytes(b"\x01\x02\x08\x03" + b"\0" * 12)
    with pytest.raises(DataNotFoundError, match="not an IDX file"):
        open_data(f"fashion-mnist:{tmp_path}")
    # Labels that are not Fashion-MNIST's 10 classes.
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(np.full(5, 42, np.uint8)))
    with pytest.raises(DataNotFoundError, match="labels span 42..42 but the dataset has 10 classes"):
        open_data(f"fashion-mnist:{tmp_path},split=test")


@pytest.mark.skipif(not REAL_FASHION_MNIST, reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    train = open_data("fashion-mnist")
    test = open_data("fashion-mnist,split=test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert np.array_equal(np.bincount(train.labels), np.full(10, 6000))
    assert train.spec == f"fashion-mnist:{DEFAULT_FASHION_MNIST_ROOT},split=train"
    start = time.perf_counter()
    fingerprint = train.fingerprint()
    assert time.perf_counter() - start < 5.0  # measured ~0.03 s: it must stay cheap
    assert fingerprint == "sha256:da39ee0492f991fb74ce9a4b3cb9de3d6ddc89833e7d453aaa18e9a035f4ee10"
    assert test.fingerprint() == "sha256:e307f58db11d574e0506fca8047c9d3b129077ae53d9e6cac3555f5af4f50baf"
    # The shipped sample is exactly the recorded images of the real files.
    with np.load(EMBEDDED_PATH) as npz:
        for split, source in (("train", train), ("test", test)):
            idx = npz[f"{split}_indices"]
            assert np.array_equal(npz[f"{split}_labels"], source.labels[idx])
            images = npz[f"{split}_images"]
            for k in range(0, len(idx), 97):
                assert np.array_equal(images[k], source.image(int(idx[k]))[0].numpy())


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_reads_torchvision_batches(tmp_path, no_md5, hundred):
    written, classes = _fake_cifar(tmp_path, hundred=hundred)
    scheme = "cifar100" if hundred else "cifar10"
    train = open_data(f"{scheme}:{tmp_path}")
    test = open_data(f"{scheme}:{tmp_path},split=test")
    first = written["train" if hundred else "data_batch_1"]
    assert len(train) == (6 if hundred else 30) and len(test) == 6
    assert train.classes == classes and train.num_classes == len(classes) and train.channels == 3
    assert np.array_equal(train.labels[:6], first[1])
    # torchvision's rows are CHW-flattened: the image is that row reshaped.
    assert np.array_equal(train.image(2).numpy(), first[0][2].reshape(3, 32, 32))
    assert train.image_size(0) == (32, 32)
    assert train.fingerprint() != test.fingerprint()
    # Pointing at the batches folder itself works too.
    inner = open_data(f"{scheme}:{tmp_path / ('cifar-100-python' if hundred else 'cifar-10-batches-py')}")
    assert inner.spec == train.spec


def test_cifar_errors(tmp_path):
    with pytest.raises(SpecError, match="cifar10 needs a root folder"):
        open_data("cifar10")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        open_data(f"cifar10:{tmp_path / 'nope'}")
    with pytest.raises(DataNotFoundError, match=r"lacks data_batch_1, .*batches\.meta; extract cifar-10-python\.tar\.gz"):
        open_data(f"cifar10:{tmp_path}")
    _fake_cifar(tmp_path)
    with pytest.raises(DataNotFoundError, match="do not match the official release's MD5"):
        open_data(f"cifar10:{tmp_path}")


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder(tmp_path):
    _png_tree(tmp_path, {"cat": [(3, 5, 7, 10), (3, 6, 4, 20)], "dog": [(3, 5, 5, 30)]})
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = open_data(f"imagefolder:{tmp_path}")
    assert ds.spec == f"imagefolder:{tmp_path},channels=3" and ds.split is None
    assert len(ds) == 3 and ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1]
    assert ds.image(1).shape == (3, 6, 4) and ds.image(1).dtype == torch.uint8 and int(ds.image(1)[0, 0, 0]) == 20
    assert ds.image_size(0) == (5, 7)
    gray = open_data(f"imagefolder:{tmp_path},channels=1")
    assert gray.image(0).shape == (1, 5, 7)
    # Fingerprints cover file contents and relative paths.
    before = ds.fingerprint()
    assert open_data(ds.spec).fingerprint() == before
    write_png(torch.full((3, 5, 5), 31, dtype=torch.uint8), str(tmp_path / "dog" / "0.png"))
    assert open_data(ds.spec).fingerprint() != before
    moved = tmp_path.parent / (tmp_path.name + "-copy")
    shutil.copytree(tmp_path, moved)
    assert open_data(f"imagefolder:{moved}").fingerprint() == open_data(ds.spec).fingerprint()
    os.rename(moved / "dog" / "0.png", moved / "dog" / "1.png")
    assert open_data(f"imagefolder:{moved}").fingerprint() != open_data(ds.spec).fingerprint()


def test_imagefolder_detects_grayscale(tmp_path):
    _png_tree(tmp_path, {"a": [(1, 4, 4, 1)], "b": [(1, 4, 4, 2)]})
    ds = open_data(f"imagefolder:{tmp_path}")
    assert ds.channels == 1 and ds.spec.endswith(",channels=1") and ds.image(1).shape == (1, 4, 4)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        open_data(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(DataNotFoundError, match=r"holds no usable images .*ROOT/CLASS/IMAGE"):
        open_data(f"imagefolder:{tmp_path}")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataNotFoundError, match="holds no usable images"):
        open_data(f"imagefolder:{tmp_path}")
    with pytest.raises(SpecError, match="channels=2"):
        open_data(f"imagefolder:{tmp_path},channels=2")


# --------------------------------------------------------------------------- digits, embedded, synthetic


def test_digits_split_is_fixed_disjoint_and_balanced():
    train, test = open_data("digits"), open_data("digits,split=test")
    assert len(train) + len(test) == 1797 and len(test) == 355
    assert train.channels == 1 and train.image(0).shape == (1, 8, 8) and train.classes[3] == "3"
    assert np.bincount(test.labels).min() >= 34  # every class held out in proportion
    assert int(max(train.image(i).max() for i in range(20))) == 255
    flat_train = {train.image(i).numpy().tobytes() for i in range(len(train))}
    assert sum(test.image(i).numpy().tobytes() in flat_train for i in range(len(test))) < 5  # the few duplicate digits
    assert open_data("digits").fingerprint() == train.fingerprint() != test.fingerprint()


def test_embedded_sample():
    train, test = open_data("embedded"), open_data("embedded,split=test")
    assert (len(train), len(test)) == (6000, 1000)
    assert np.array_equal(np.bincount(train.labels), np.full(10, 600))
    assert np.array_equal(np.bincount(test.labels), np.full(10, 100))
    assert train.image(0).shape == (1, 28, 28) and train.classes == FASHION_MNIST_CLASSES
    assert train.fingerprint() == EMBEDDED_FINGERPRINTS["train"]
    assert test.fingerprint() == EMBEDDED_FINGERPRINTS["test"]
    assert EMBEDDED_PATH.stat().st_size < 5_000_000


def test_synthetic_is_deterministic_and_learnable():
    spec = "synthetic:samples=400,classes=4,size=12,channels=3,seed=2"
    train = open_data(spec)
    assert train.spec == spec + ",split=train"
    assert open_data(spec).fingerprint() == train.fingerprint()
    assert open_data(spec.replace("seed=2", "seed=3")).fingerprint() != train.fingerprint()
    test = open_data(spec + ",split=test")
    assert test.fingerprint() != train.fingerprint()
    assert np.array_equal(np.bincount(train.labels), np.full(4, 100))
    # A nearest-class-mean classifier fitted on train separates test: the classes have structure.
    x_train = np.stack([train.image(i).numpy().ravel() for i in range(len(train))]).astype(float)
    x_test = np.stack([test.image(i).numpy().ravel() for i in range(len(test))]).astype(float)
    means = np.stack([x_train[train.labels == c].mean(0) for c in range(4)])
    predicted = np.argmin(((x_test[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == test.labels).mean() > 0.9
    gray = open_data("synthetic:samples=3,channels=1,size=5")
    assert gray.image(0).shape == (1, 5, 5) and gray.num_classes == 10


# --------------------------------------------------------------------------- specs, fingerprints, pickling


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("", SpecError, "empty data spec"),
        ("mnist", SpecError, r"data spec 'mnist': unknown data scheme 'mnist'; known: fashion-mnist, cifar10"),
        ("digits,split=val", SpecError, r"split='val' .*expected split=train or split=test"),
        ("digits,colour=1", SpecError, r"unknown option 'colour' for digits .*allowed: split"),
        ("digits,split=test,split=train", SpecError, "option 'split' given twice"),
        ("digits:/data", SpecError, "digits takes no root folder"),
        ("digits,test", SpecError, "malformed option 'test'"),
        ("digits!", SpecError, "expected ':' or ','"),
        ("imagefolder", SpecError, "imagefolder needs a root folder"),
        ("synthetic:samples=ten", SpecError, "samples='ten' .*is not an integer"),
        ("synthetic:samples=0", SpecError, r"samples=0 .*out of range; expected 1\.\."),
        ("synthetic:channels=2", SpecError, "channels=2"),
        ("synthetic:samples=10000000,size=4096", SpecError, "more than 2 GiB"),
    ],
)
def test_bad_specs_fail_with_one_clear_line(spec, error, message):
    with pytest.raises(error, match=message) as info:
        open_data(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "spec", ["digits", "digits,split=test", "embedded", "synthetic:samples=5,size=6", "synthetic:seed=1,samples=5,size=6,classes=3"]
)
def test_canonical_spec_reopens_the_same_data(spec):
    ds = open_data(spec)
    again = open_data(ds.spec)
    assert again.spec == ds.spec and again.fingerprint() == ds.fingerprint()
    described = ds.describe()
    assert json.loads(json.dumps(described)) == described
    assert set(described) == {"spec", "name", "split", "num_samples", "num_classes", "channels", "fingerprint"}


def test_fingerprints_differ_between_datasets_and_splits():
    specs = ["digits", "digits,split=test", "embedded", "embedded,split=test", "synthetic:samples=50", "synthetic:samples=50,split=test"]
    fingerprints = [open_data(s).fingerprint() for s in specs]
    assert len(set(fingerprints)) == len(specs)
    assert all(f.startswith("sha256:") and len(f) == 7 + 64 for f in fingerprints)


def test_fingerprint_is_cached():
    ds = open_data("digits")
    first = ds.fingerprint()
    ds._images = None  # were it recomputed, it would have to reload
    ds._loader = None
    assert ds.fingerprint() is first


def test_sources_pickle_small_and_reload(tmp_path):
    ds = open_data("embedded")
    fingerprint = ds.fingerprint()
    blob = pickle.dumps(ds)
    assert len(blob) < 100_000  # labels and the spec, not 4.7 MB of pixels
    again = pickle.loads(blob)
    assert isinstance(again, DataSource) and again.fingerprint() == fingerprint
    assert torch.equal(again.image(123), ds.image(123))
    _png_tree(tmp_path, {"a": [(3, 4, 4, 9)]})
    folder = pickle.loads(pickle.dumps(open_data(f"imagefolder:{tmp_path}")))
    assert int(folder.image(0)[1, 2, 2]) == 9


def test_images_are_copies_and_indices_checked():
    ds = open_data("digits")
    image = ds.image(0)
    image.fill_(7)
    assert not torch.equal(ds.image(0), image)
    with pytest.raises(IndexError, match="out of range"):
        ds.image(len(ds))
    with pytest.raises(IndexError):
        ds.image(-1)


# --------------------------------------------------------------------------- the scheme registry


def test_a_new_scheme_is_one_registration(monkeypatch):
    from kdcache.data import ArraySource, Scheme, get_scheme, list_schemes, register_scheme
    from kdcache.data import registry

    monkeypatch.setattr(registry.SCHEMES, "_entries", dict(registry.SCHEMES.items()))  # restored after the test
    opened = []

    def opener(spec, root, options):
        opened.append((spec, root, options))
        return ArraySource(spec="ones", name="ones", split=None, classes=["a", "b"],
                           loader=lambda: (np.ones((3, 1, 4, 4), np.uint8), np.array([0, 1, 0])))

    register_scheme(Scheme("ones", opener, root="optional", options=("k",), default_recipe="none",
                           root_hint="ones:ROOT"))
    assert "ones" in list_schemes() and get_scheme("ones").default_recipe == "none"
    source = open_data("ones:rel/dir,k=v")
    assert len(source) == 3 and opened[-1] == ("ones:rel/dir,k=v", os.path.abspath("rel/dir"), {"k": "v"})
    with pytest.raises(SpecError, match="unknown option 'j' for ones"):
        open_data("ones,j=1")
    with pytest.raises(DuplicateNameError, match="data scheme 'ones' is already registered"):
        register_scheme(Scheme("ones", opener, root="none", options=(), default_recipe="none"))


def test_every_scheme_declares_an_existing_default_recipe():
    from kdcache.data import get_scheme, list_schemes
    from kdcache.views import list_presets

    assert list_schemes() == ["fashion-mnist", "cifar10", "cifar100", "imagefolder", "digits", "embedded", "synthetic"]
    assert all(get_scheme(name).default_recipe in list_presets() for name in list_schemes())


# --------------------------------------------------------------------------- default recipe per scheme


def _open_each_scheme(tmp_path):
    (tmp_path / "fm").mkdir()
    _fake_idx(tmp_path / "fm")
    _fake_cifar(tmp_path / "c10")
    _fake_cifar(tmp_path / "c100", hundred=True)
    _png_tree(tmp_path / "folder", {"a": [(3, 40, 30, 9)], "b": [(3, 50, 70, 200)]})
    return {
        "fashion-mnist": open_data(f"fashion-mnist:{tmp_path / 'fm'}"),
        "cifar10": open_data(f"cifar10:{tmp_path / 'c10'}"),
        "cifar100": open_data(f"cifar100:{tmp_path / 'c100'}"),
        "imagefolder": open_data(f"imagefolder:{tmp_path / 'folder'}"),
        "digits": open_data("digits"),
        "embedded": open_data("embedded"),
        "synthetic": open_data("synthetic:samples=4,size=9,channels=1"),
    }


def test_the_default_recipe_follows_the_dataset(tmp_path, no_md5):
    from kdcache.views import ViewDataset, load_recipe, resolve_recipe

    expected = {
        "fashion-mnist": "fashion-mnist", "cifar10": "cifar", "cifar100": "cifar", "imagefolder": "imagenet",
        "digits": "none", "embedded": "fashion-mnist", "synthetic": "none",
    }  # fmt: skip
    sources = _open_each_scheme(tmp_path)
    assert set(sources) == set(expected)
    for scheme, source in sources.items():
        recipe = resolve_recipe(None, source)
        assert recipe == load_recipe(expected[scheme]), scheme
        # ... and it fits the scheme's images: a view renders.
        assert ViewDataset(source, recipe, seed=0)[(0, 0)]["images"][0].ndim == 3
        # A name given wins over the default.
        assert resolve_recipe("none", source).name == "none"
    path = tmp_path / "mine.json"
    path.write_text('{"ops": []}')
    assert resolve_recipe(str(path), sources["cifar10"]).name == "mine"


def test_a_source_of_no_scheme_must_name_its_recipe():
    from kdcache.data import ArraySource
    from kdcache.errors import RecipeError
    from kdcache.views import resolve_recipe

    source = ArraySource(spec="mine", name="mine", split=None, classes=["a"],
                         loader=lambda: (np.zeros((1, 1, 4, 4), np.uint8), np.zeros(1, np.int64)))
    with pytest.raises(RecipeError, match="^data 'mine' declares no default recipe; pass --recipe$"):
        resolve_recipe(None, source)
    assert resolve_recipe("none", source).name == "none"
