"""What a run keeps on disk, written atomically and read back only when it is exactly what was
written: JSON and text files, checkpoints (tensors and plain data only), the cache of trained
models and the finished units' result files (each with a fingerprint of its settings and a digest).
Checkpoints are read with `weights_only=True`, so a checkpoint can never run code.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from torch import nn

from errors import UserError, check_regular_file, first_line

# Cached models hold the last and the best-test epoch of one training run (format 2; format 1
# held the last epoch only and is never read back).
CACHE_FORMAT = 2
_UMASK = os.umask(0)
os.umask(_UMASK)


def fingerprint(settings: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of `settings` as JSON: the key of a cached model or a result."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# Files, written atomically


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temp file beside `path`, then rename it over `path`: a reader
    (or a rerun after a kill) sees the old file or the complete new one, never a torn one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):  # a clean-up that fails (e.g. chattr +a) never hides the error
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error, tmp) from None
        if isinstance(error, RuntimeError):  # torch.save reports failed writes this way
            raise UserError(f"could not write {path} ({first_line(error)}); is the disk full?") from None
        raise


def _write_error(path: Path, error: OSError, tmp: str | None = None) -> OSError | UserError:
    """A full disk stays an OSError naming the file (cli.report_failure words it); anything else,
    such as a folder where the file goes or a file where its folder goes, is a one-line UserError."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(error.errno, error.strerror, str(path))
    where = f": {error.filename}" if error.filename and str(error.filename) not in (str(path), tmp) else ""
    return UserError(f"could not write {path} ({error.strerror}{where}); move that away or choose another folder")


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON (`atomic_write`)."""
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2).encode()))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


# ----------------------------------------------------------------------------------------------
# Checkpoints and the model cache


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any],
                    extra: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """State dict (on the CPU) + resolved config (+ `extra` named state dicts), written atomically."""
    def on_cpu(state):
        return {name: tensor.detach().cpu() for name, tensor in state.items()}
    saved = {"state_dict": on_cpu(model.state_dict()), "config": config,
             **{key: on_cpu(state) for key, state in (extra or {}).items()}}
    atomic_write(path, lambda file: torch.save(saved, file))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """{"state_dict", "config"} from `path`, refusing anything but tensors and plain data. A bare
    state dict (`torch.save(model.state_dict(), path)`) is taken as {"state_dict": it, "config": {}}."""
    check_regular_file(path, "checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message is a paragraph on weights_only
        raise UserError(f"checkpoint {path} is not a PyTorch checkpoint of tensors and plain data "
                        f"(anything else is refused without running it)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise UserError(f"checkpoint {path} is truncated or not a PyTorch checkpoint "
                        f"({first_line(error)})") from None
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        checkpoint = {"state_dict": checkpoint, "config": {}}  # a bare state dict
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"checkpoint {path} has no 'state_dict'; expected one written by this repository, "
                        f"a {{'state_dict': ..., 'config': ...}} dict or a bare state dict")
    return checkpoint


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load a checkpoint's weights (its "state_dict") into `model`, with a one-line error when they
    belong to another model."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path}: its 'state_dict' is not a dict of parameter names to tensors "
                        f"(got {type(state).__name__})")
    if any(v.is_meta for v in state.values()):
        raise UserError(f"checkpoint {path} holds meta tensors (shapes without values); save the trained weights")
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise UserError(f"checkpoint {path} holds NaN or infinite weights; give a model trained to the end")
    if state and all(name.startswith("module.") for name in state):  # saved from a DistributedDataParallel
        state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    expected = model.state_dict()
    wrong = next((name for name, tensor in state.items() if name in expected
                  and expected[name].is_floating_point() and not tensor.is_floating_point()), None)
    if wrong is not None:  # load_state_dict would copy them in, whole numbers and all
        raise UserError(f"checkpoint {path}: {wrong} holds {state[wrong].dtype} values where the model has "
                        f"{expected[wrong].dtype} weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
        raise UserError(f"checkpoint {path} does not fit this model and class count: {first[:300]}") from None


def cached_model_path(cache_dir: str | Path, dataset: str, model: str, name: str, settings: dict[str, Any]) -> Path:
    """Where the cache keeps the model `name` (e.g. "original") trained with `settings`."""
    return Path(cache_dir) / dataset / model / f"{name}_{fingerprint(settings)}.pt"


def read_cached_model(path: Path, model: torch.nn.Module) -> dict[str, Any] | None:
    """A cached model written by `Experiment._train_and_cache` whose weights fit `model`, or None (with a
    one-line warning) if the file is not one."""
    try:
        checkpoint = load_checkpoint(path)
        config = checkpoint.get("config")
        if (not isinstance(checkpoint.get("best_state_dict"), dict) or not isinstance(config, dict)
                or not isinstance(config.get("train_seconds"), float) or not isinstance(config.get("best_epoch"), int)):
            raise UserError(f"cached model {path} lacks the best-test epoch or its training time")
        for key in ("state_dict", "best_state_dict"):
            load_weights(model, checkpoint[key], path)
        return checkpoint
    except UserError as error:
        print(f"warning: {error}; training it again", file=sys.stderr)
        return None


def check_checkpoint_dataset(checkpoint: dict[str, Any], path: str, dataset: str) -> str | None:
    """Refuse a --checkpoint that records another data set; for one that records none (a user's
    own state dict), the one-line notice to give once its weights are loaded."""
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    records = [config.get("dataset"), *(config.get(key, {}).get("dataset") for key in ("run", "settings")
                                         if isinstance(config.get(key), dict))]
    recorded = next((name for name in records if isinstance(name, str)), None)
    if recorded is not None and recorded != dataset:
        raise UserError(f"--checkpoint {path} is a {recorded} model, but this run's --dataset is {dataset}")
    return f"--checkpoint {path} records no data set; taking it as a {dataset} model" if recorded is None else None


# ----------------------------------------------------------------------------------------------
# Unit files: one finished unit and method of a run, <out>/units/<method>_forget_<classes>.json


def unit_path(out: str | Path, method: str, forget_classes: list[int]) -> Path:
    return Path(out) / "units" / f"{method}_forget_{'_'.join(map(str, forget_classes))}.json"


def write_unit(path: Path, key: str, row: dict[str, Any]) -> None:
    """A finished unit's row, with the fingerprint of its settings and inputs and a digest of both."""
    write_json(path, {"fingerprint": key, "row": row, "sha256": _unit_digest(key, row)})


def read_unit(path: Path, key: str, method: str) -> dict[str, Any] | None:
    """The row `write_unit` saved for `method` with fingerprint `key`, or None (then it is computed
    again) when the file is missing, not a regular file, from other settings or another method, or
    not exactly as written: any edit to its row breaks the digest."""
    if not path.is_file():  # a FIFO would block the read
        return None
    try:
        saved = json.loads(path.read_text())
        row = saved["row"]
        if saved["fingerprint"] == key and saved["sha256"] == _unit_digest(key, row) and row["method"] == method:
            return row
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _unit_digest(key: str, row: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([key, row], sort_keys=True).encode()).hexdigest()
