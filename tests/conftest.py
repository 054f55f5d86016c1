"""Shared fixtures and helpers: the repository on sys.path, the embedded data set, the real
CIFAR-10 archive, and running the entry scripts (as a user does, or in this process)."""
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Numbers are compared across machines: every test runs on the CPU, also on a user's GPU machine
# (child processes inherit this). The GPU paths are exercised by bench/gpu_check.sh and paper_gpu.sh.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schema import METRICS  # noqa: E402  (needs ROOT on sys.path)

CIFAR10_ARCHIVE = Path(os.environ.get("CIFAR10_ARCHIVE", ROOT.parent / "shared/data/cifar10-jpeg.tar.gz"))
METRIC_NAMES = {m.name for m in METRICS}  # every row of summary.json has these
TIMINGS = {m.name for m in METRICS if m.is_timing}  # the metrics two runs of one command may differ in


# The authors' config file, as docs/METHOD.md writes it out (scale, lambda, m, p, k), copied here by hand
# so that a value mistyped in hparams.py fails; the ResNet18 / CIFAR-10 single-class runs use the
# notebook rows instead (test_resnet18_cifar10_uses_the_notebook_values).
PAPER_CONFIG_FILE = {
    ("AllCNN", "cifar10"): (2.3, 10, 1, 0.85, 20), ("AllCNN", "fashionMNIST"): (3.6, 10, 1, 0.95, 50),
    ("AllCNN", "mnist"): (4.8, 10, 1, 0.85, 20), ("AllCNN", "svhn"): (4, 1, 1, 0.95, 50),
    ("MobileNet_v2", "cifar10"): (1.8, 5, 1, 0.95, 30), ("MobileNet_v2", "fashionMNIST"): (2, 1, 2, 0.95, 50),
    ("MobileNet_v2", "mnist"): (3.5, 10, 1, 0.9, 50), ("MobileNet_v2", "svhn"): (3.1, 1, 1, 0.85, 20),
    ("ResNet9", "cifar10"): (2.5, 10, 2, 0.85, 20), ("ResNet9", "fashionMNIST"): (4.5, 1, 1, 0.85, 30),
    ("ResNet9", "mnist"): (7, 10, 1, 0.85, 50), ("ResNet9", "svhn"): (4.5, 1, 1, 0.85, 50),
    ("ResNet18", "cifar10"): (1.5, 5, 1, 0.95, 30), ("ResNet18", "fashionMNIST"): (3.3, 1, 1, 0.85, 50),
    ("ResNet18", "mnist"): (4, 10, 2, 0.85, 30), ("ResNet18", "svhn"): (3.3, 10, 1, 0.85, 50),
}
NOTEBOOK_ROWS = {30: (2.2, 5, 1, 0.95, 20), 100: (2.5, 1, 1, 0.95, 50)}  # ResNet18 / CIFAR-10
SMALL_CNN_ROW = (7.07, 1.44, 1, 0.83, 3)  # ours (README "Deviations"), without the convex combination


def method_row(row) -> tuple:
    """(scale, lambda, m, p, k) of a `hparams.RunHparams`."""
    return row.unlearn_scale_lr, row.local_variance, row.size_multiplier, row.p, row.tail_randomized



def run_script(script, *args, cwd=ROOT):
    """Run an entry script as a user would, without progress bars."""
    return subprocess.run([sys.executable, str(ROOT / script), "--no-progress", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


def run_torchrun(script, *args, port, timeout=300):
    """An entry script in two CPU processes under torchrun, with this process's thread count (CPU
    numerics depend on it; torchrun would set one). A run past `timeout` (a rank that hangs) is
    killed with all its workers, and fails the test."""
    import torch
    process = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(ROOT / script), "--no-progress", *map(str, args)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"torchrun {script} {' '.join(map(str, args))} ran past {timeout} s (a rank hung)")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@contextlib.contextmanager
def started(command, **popen_options):
    """A child process that a signal is sent to, as from a terminal: SIGINT at its default, also when
    these tests run in the background (a shell's `pytest &` ignores SIGINT, and children inherit
    that); killed if the test ends first, so a failed test never leaves a process taking a core."""
    process = subprocess.Popen(command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                               **popen_options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def run_main(script, argv, capsys):
    """Run an entry script's main in this process; returns (exit status, stderr)."""
    module = importlib.import_module(script)
    try:
        status = module.cli.main(module.get_args_parser(), [*argv, "--no-progress"],
                                 multi_class=script.startswith("multi"), choose_units=module.forget_sets)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def numbers(summary_path):
    """The rows of a summary.json without their timings: what must repeat exactly."""
    summary = json.loads(Path(summary_path).read_text())
    rows = summary["per_class"] if "per_class" in summary else summary["per_draw"]
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def write_image_folder_archive(path, classes=None, per_class=2, seed=0, mode="w:gz", size=32, prefix="cifar"):
    """A tar archive of a CIFAR-10-style image folder (train/ and test/, a folder per class) of random
    PNGs, `per_class` per class and split. The same arguments give the same bytes: a gzip stream
    carries no write time (tarfile's own "w:gz" stamps the second it was written)."""
    import contextlib
    import gzip
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    from datasets import CIFAR10_CLASSES
    rng = np.random.default_rng(seed)
    with contextlib.ExitStack() as stack:
        if mode == "w:gz":
            raw = stack.enter_context(open(path, "wb"))
            stream = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0))
            archive = stack.enter_context(tarfile.open(fileobj=stream, mode="w"))
        else:
            archive = stack.enter_context(tarfile.open(path, mode))
        for split in ("train", "test"):
            for cls in classes or CIFAR10_CLASSES:
                for i in range(per_class):
                    buffer = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
                    info = tarfile.TarInfo(f"{prefix}/{split}/{cls}/{i}.png")
                    info.size = buffer.tell()
                    buffer.seek(0)
                    archive.addfile(info, buffer)


class CreatesFile:
    """Unpickling this would create a file: a stand-in for arbitrary code in a checkpoint."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


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
