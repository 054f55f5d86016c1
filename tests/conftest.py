"""Shared fixtures: the repository on sys.path, the embedded data set, the real CIFAR-10 archive."""
import os
import sys
from pathlib import Path

import pytest

# Numbers are compared across machines: every test runs on the CPU, also on a user's GPU machine
# (child processes inherit this). The GPU paths are exercised by bench/gpu_check.sh and paper_gpu.sh.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CIFAR10_ARCHIVE = Path(os.environ.get("CIFAR10_ARCHIVE", ROOT.parent / "shared/data/cifar10-jpeg.tar.gz"))


@pytest.fixture(scope="session")
def mnist5k():
    from datasets import load_dataset
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    """The real CIFAR-10 archive (../shared/data). CI always has it; elsewhere the tests that
    need it are skipped with the reason, never silently passed."""
    if not CIFAR10_ARCHIVE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the CIFAR-10 archive at {CIFAR10_ARCHIVE}")
        pytest.skip(f"no CIFAR-10 archive at {CIFAR10_ARCHIVE} (set CIFAR10_ARCHIVE)")
    return CIFAR10_ARCHIVE
