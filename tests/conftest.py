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


def run_script(script, *args, cwd=ROOT):
    """Run an entry script as a user would, without progress bars."""
    return subprocess.run([sys.executable, str(ROOT / script), "--no-progress", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


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
    rows = json.loads(Path(summary_path).read_text())["per_class"]
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


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
