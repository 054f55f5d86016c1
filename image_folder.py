"""Reading a CIFAR-style image folder (`train/<class>/*`, `test/<class>/*`), or a tar archive of
one, into 8-bit arrays: checked against the expected classes and image size, every decoding
problem one line, images deeper than 8 bits scaled to 8. `datasets.py` normalises the result."""
from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from errors import UserError


def files_under(root: Path) -> list[Path]:
    """The regular files under a folder, sorted, through symlinked folders too (`Path.rglob` does not
    follow them before Python 3.13); not devices or FIFOs, which would block or never end."""
    found = [Path(folder) / name for folder, _, names in os.walk(root, followlinks=True) for name in names]
    return sorted(path for path in found if path.is_file())


MAX_IMAGE_BYTES = 1 << 20  # an archive member larger than this is refused before it is read (1 MiB)


def _deep_gray_to_8_bits(image, where: str) -> np.ndarray | None:
    """A grey image deeper than 8 bits as 8-bit levels, scaled by its depth: 16-bit (PNG's I;16 modes,
    and PGM, which PIL opens as mode I at 16 bits) and floats taken as [0, 1] (mode F). None for an
    8-bit image; a depth that cannot be scaled (a 32-bit integer TIFF) is refused in one line."""
    bits = getattr(image, "tag_v2", {}).get(258, (16,) if image.format == "PPM" else None)  # TIFF BitsPerSample
    if image.mode.startswith("I;16") or (image.mode == "I" and tuple(np.atleast_1d(bits)) == (16,)):
        levels = np.asarray(image).astype(np.int64)
        return ((levels.clip(0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise UserError(f"{where} is a floating-point image with values outside [0, 1] (from {values.min():g} "
                            f"to {values.max():g}); give 8- or 16-bit images, or floats in [0, 1]")
        return np.rint(values * 255).astype(np.uint8)
    if image.mode in ("I", "I;32", "I;32S"):
        raise UserError(f"{where} is a 32-bit integer image, whose range cannot be read from the file; give 8- or "
                        f"16-bit images (or floats in [0, 1])")
    return None


def load_image_folder(root: Path, max_per_class: int | None, classes: tuple[str, ...], size: int):
    """`train/<class>/*` and `test/<class>/*` from a folder or a tar archive of one: exactly
    `classes` (numbered in that order), each in both splits, every image `size` x `size`.

    Hidden files and files without an image extension (torchvision's ImageFolder's, any case) are
    skipped, with a one-line notice. Refused in one line: other class folders, two such trees in
    one archive, one path twice, a file over `MAX_IMAGE_BYTES`, an image of another size (checked
    from its header, before decoding, so a decompression bomb is never expanded) and an image that
    cannot be decoded."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS

    def decode(name: str, data: bytes) -> np.ndarray:
        try:
            image = Image.open(io.BytesIO(data))
            if image.size != (size, size):
                raise UserError(f"--data-root {root}: {name} is {image.size[0]}x{image.size[1]}; every image "
                                f"must be {size}x{size}")
            gray = _deep_gray_to_8_bits(image, f"--data-root {root}: {name}")
            if gray is not None:
                return np.repeat(gray[None], 3, axis=0)
            return np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        except UnidentifiedImageError:
            raise UserError(f"--data-root {root}: {name} cannot be decoded (not an image format PIL reads)") from None
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise UserError(f"--data-root {root}: {name} cannot be decoded ({error})") from None

    def locate(parts: tuple[str, ...]) -> tuple[tuple[str, ...], str, str] | None:
        """(leading folders, split, class) of an image path such as cifar10/train/cat/0001.jpg."""
        for i, part in enumerate(parts[:-2]):
            if part in ("train", "test") and i + 3 == len(parts):
                return parts[:i], part, parts[i + 1]
        return None

    found: dict[tuple[str, str], list[tuple[str, bytes]]] = {}  # (split, class): [(name, bytes)]
    trees, skipped, seen = set(), [], set()

    def add(name: str, parts: tuple[str, ...], read, declared_size: int, link: bool = False) -> None:
        where = locate(parts)
        if not where:
            return
        if any(part.startswith(".") for part in parts) or PurePosixPath(parts[-1]).suffix.lower() not in IMG_EXTENSIONS:
            skipped.append(name)  # not an image: .DS_Store, macOS's ._x.jpg, a README, ...
            return
        if link:  # the one streaming pass cannot go back for the bytes a link points at
            raise UserError(f"--data-root {root}: {name} is a link in the archive (tar stores files that are "
                            f"links, or hard links to one file, this way); make the archive with tar --dereference "
                            f"(-h) and --hard-dereference, or give the folder itself")
        if declared_size > MAX_IMAGE_BYTES:
            raise UserError(f"--data-root {root}: {name} declares {declared_size} bytes, more than "
                            f"an image of this data set can need ({MAX_IMAGE_BYTES}); refused")
        if parts in seen:  # a tar archive can hold one path twice; extracted, the last would win
            raise UserError(f"--data-root {root} holds {'/'.join(parts)} twice; keep one")
        seen.add(parts)
        trees.add(where[0])
        found.setdefault(where[1:], []).append((name, read()))
    if root.is_file():
        try:
            with tarfile.open(root, "r|*") as archive:  # one streaming pass, no seeking back
                for member in archive:
                    if member.isfile():
                        add(member.name, PurePosixPath(member.name).parts, archive.extractfile(member).read,
                            member.size)
                    elif member.issym() or member.islnk():
                        add(member.name, PurePosixPath(member.name).parts, None, 0, link=True)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise UserError(f"--data-root {root} is not a readable tar archive of an image folder "
                            f"({type(error).__name__}: {error})") from None
    else:
        for path in files_under(root):
            add(str(path), path.relative_to(root).parts, path.read_bytes, path.stat().st_size)
    if skipped:
        print(f"note: --data-root {root}: skipped {len(skipped)} file(s) that are not images (hidden, or not "
              f"{'/'.join(IMG_EXTENSIONS)}), e.g. {skipped[0]}", file=sys.stderr)
    if len(trees) > 1:
        names = sorted("/".join(tree) + "/" if tree else "./" for tree in trees)
        raise UserError(f"--data-root {root} holds {len(trees)} image-folder trees ({', '.join(names[:3])}); "
                        f"keep one, they are not merged")
    for split in ("train", "test"):
        present = sorted(cls for s, cls in found if s == split)
        if present != sorted(classes):
            raise UserError(f"--data-root {root}: {split}/ must hold exactly the class folders "
                            f"{', '.join(classes)}, each with images; found {present or 'none'}")

    def stack(split: str):
        images, labels = [], []
        for label, cls in enumerate(classes):
            named = sorted(found[split, cls])[:max_per_class]
            images += [decode(name, blob) for name, blob in named]
            labels += [label] * len(named)
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    return (*stack("train"), *stack("test"))


ARCHIVE_FORMATS = ".tar, .tar.gz / .tgz, .tar.bz2 or .tar.xz"  # whatever Python's tarfile reads
