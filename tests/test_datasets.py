"""Data sets load into normalised tensors: the embedded mnist5k, the real CIFAR-10 archive."""
import io
import tarfile

import numpy as np
import pytest
import torch

from datasets import DATASETS, draw_retain_subset, load_dataset
from errors import UserError


def test_mnist5k_loads_offline_with_the_right_shapes_and_all_classes(mnist5k):
    train, test = mnist5k
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.equal(train.labels.bincount(), torch.full((10,), 400))
    assert torch.equal(test.labels.bincount(), torch.full((10,), 100))
    assert 0 <= train.images.min() and train.images.max() <= 1  # MNIST: ToTensor only
    assert train.images.mean() > 0.05  # real digits, not zeros


def test_mnist5k_split_is_fixed_and_disjoint(mnist5k):
    train, test = mnist5k
    again, _ = load_dataset("mnist5k")
    assert torch.equal(train.images, again.images)
    train_rows = {row.numpy().tobytes() for row in train.images.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in test.images.flatten(1))


def test_max_per_class_keeps_the_first_of_each_class():
    train, test = load_dataset("mnist5k", max_per_class=7)
    assert torch.equal(train.labels.bincount(), torch.full((10,), 7))
    assert len(test) == 70


def test_cifar10_from_the_real_archive(cifar10_archive):
    train, test = load_dataset("cifar10", cifar10_archive, max_per_class=20)
    assert train.images.shape == (200, 3, 32, 32) and test.images.shape == (200, 3, 32, 32)
    assert torch.equal(train.labels.bincount(), torch.full((10,), 20))
    # normalised with the paper's CIFAR-10 mean/std: roughly centred, unit spread
    assert abs(train.images.mean()) < 0.5 and 0.6 < train.images.std() < 1.4


def write_image_folder_archive(path, classes=("cat", "dog"), per_class=3):
    from PIL import Image
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as archive:
        for split in ("train", "test"):
            for cls in classes:
                for i in range(per_class):
                    buffer = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
                    info = tarfile.TarInfo(f"cifar/{split}/{cls}/{i}.png")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    archive.addfile(info, buffer)


def test_image_folder_classes_in_sorted_order_from_archive_and_folder(tmp_path):
    archive = tmp_path / "data.tar.gz"
    write_image_folder_archive(archive, classes=("dog", "cat"))
    train, _ = load_dataset("cifar10", archive)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]  # cat=0, dog=1
    with tarfile.open(archive) as opened:
        opened.extractall(tmp_path / "tree", filter="data")
    from_folder, _ = load_dataset("cifar10", tmp_path / "tree" / "cifar")
    assert torch.equal(from_folder.images, train.images)


def test_corrupt_archive_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"not a tar file at all")
    with pytest.raises(UserError, match="--data-root"):
        load_dataset("cifar10", bad)


def test_failed_download_names_data_root(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")
    monkeypatch.setattr(tvd, "MNIST", offline)
    (tmp_path / "MNIST").mkdir()  # a partial earlier download: not empty, still nothing usable
    with pytest.raises(UserError, match="could not download mnist.*--data-root"):
        load_dataset("mnist", tmp_path)


def test_unknown_data_set_lists_the_known_ones():
    with pytest.raises(UserError, match=", ".join(DATASETS)):
        load_dataset("imagenet")


@pytest.mark.parametrize("percent,per_class", [(30, 120), (100, 400), (0.1, 1)])  # of mnist5k's 400 per class
def test_retain_subset_takes_the_share_of_each_retain_class_and_no_forget_sample(mnist5k, percent, per_class):
    train, _ = mnist5k
    subset = draw_retain_subset(train, [2, 7], percent, torch.Generator().manual_seed(0))
    counts = subset.labels.bincount(minlength=10).tolist()
    assert counts == [0 if c in (2, 7) else per_class for c in range(10)]
    rows = {row.numpy().tobytes() for row in train.images.flatten(1)}
    assert all(row.numpy().tobytes() in rows for row in subset.images.flatten(1))  # real training samples
    assert len({row.numpy().tobytes() for row in subset.images.flatten(1)}) == len(subset)  # each once


def test_retain_subset_is_the_same_for_the_same_seed_and_another_for_another(mnist5k):
    train, _ = mnist5k

    def draw(seed):
        return draw_retain_subset(train, [0], 30, torch.Generator().manual_seed(seed)).images
    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))
