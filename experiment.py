"""The unlearning experiment shared by both entry scripts: flags, models, the per-unit loop, reports.

A *unit* is one set of forget classes: `[c]` for each class in a single-class run, one drawn
set of K classes in a multi-class run. For each unit the pipeline
  1. draws the retain subset (`retain_percent` of every retain class's training samples),
  2. makes anti-samples for each forget class and fine-tunes a copy of the original model on
     retain subset + anti-samples (then, with --repair-epochs, on the retain subset alone),
  3. evaluates it, and trains (or loads from cache) the retrained gold model for comparison.
Trained models are cached under --cache-dir and finished units under --out, so a rerun of the
same command reuses everything already done.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import hparams
import report
from anti_sample import anti_sample_set, farthest_retain_indices
from datasets import DATASETS, Split, get_dataset_spec, load_dataset
from errors import UserError
from methods import METHODS, UnlearnInputs, check_methods
from models import get_model, get_model_entry, list_models, resolve_pretrained
from train_utils import (SELECT_FRACTION, BestEpoch, NonFiniteLossError, TrainParams, atomic_write, evaluate,
                         load_checkpoint, PLAIN, Speed, load_weights, mia_efficacy, save_checkpoint, synchronize,
                         train)

DEFAULT_SEED = 100  # PAPER.md: torch seed 100
METRICS = [
    "original_retain_test_acc", "original_forget_test_acc",
    "unlearned_retain_test_acc", "unlearned_forget_test_acc",
    "unlearned_retain_train_acc", "unlearned_forget_train_acc",
    "retrained_retain_test_acc", "retrained_forget_test_acc",
    "unlearn_seconds",
    # membership inference and the comparison with the retrained model (README "Methods")
    "mia_efficacy", "retrained_retain_train_acc", "retrained_forget_train_acc",
    "retrained_mia_efficacy", "gap_to_retrain", "speedup_vs_retrain",
]
# The authors' protocol is each default (PAPER.md); the other choice is ours (README "Deviations").
UNLEARN_MODES = ["eval", "train"]  # anti_sample's model mode while it fine-tunes
NEIGHBOUR_POOLS = ["all", "subset"]  # far neighbours among all retain-class training data, or the subset
SELECTIONS = ["best-test", "last"]  # which epoch of the original and retrained models is kept
# Cached models hold the last and the best-test epoch of one training run (format 2; format 1
# held the last epoch only and is never read back).
CACHE_FORMAT = 2
# Under torchrun, how long a rank waits at a barrier (NCCL's own default, 10 minutes, would abort
# the ranks waiting while rank 0 trains the original model).
DIST_TIMEOUT_MINUTES = 360.0
# Resolved settings that do not change any number in the results (left out of fingerprints).
NOT_AFFECTING_RESULTS = {"out", "classes", "progress", "cache_dir", "methods", "dist_timeout_minutes"}


# ----------------------------------------------------------------------------------------------
# Flags


def parse_classes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids like 0,3,7, got {text!r}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else positive_float(text)


def probability(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}") from None
    if not 0 < value <= 100:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {value:g}")
    return value


def tail(text: str) -> int:
    return 0 if text.lower() in ("0", "none") else positive_int(text)


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags end with one line naming the value and what is accepted, and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def get_args_parser(dataset: str, model: str, retain_percent: float, description: str,
                    multi_class: bool) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--dataset", default=dataset, help=f"one of {', '.join(DATASETS)}")
    run.add_argument("--model", default=model, help=f"one of {', '.join(list_models())}")
    run.add_argument("--retain-percent", type=percent, default=retain_percent,
                     help="percentage of each retain class's training data the unlearner may use "
                          "(30: the paper's Unlearning-30, 100: Unlearning-100)")
    run.add_argument("--data-root", default=None,
                     help="where torchvision data sets live or are downloaded to (default ./data); "
                          "for cifar10 also an image-folder tree or a .tar.gz of one")
    run.add_argument("--max-per-class", type=positive_int, default=None,
                     help="use only the first N train and N test samples of each class (quick runs)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="torch device for data and models")
    run.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of every random draw")
    run.add_argument("--out", default=None,
                     help="results folder (default results/<dataset>/<model>/"
                          f"{'multi_class_k<K>' if multi_class else 'single_class'}_<percent>)")
    run.add_argument("--cache-dir", default="checkpoints",
                     help="where trained original and retrained models are cached")
    run.add_argument("--checkpoint", default=None,
                     help="use this trained original model (a checkpoint of this repository) "
                          "instead of training or loading one from the cache")
    run.add_argument("--no-retrain", action="store_true",
                     help="skip the retrained gold models (their columns are left empty)")
    run.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                     help="start ResNet18 / MobileNet_v2 from ImageNet weights (default: yes for "
                          "those two, as in the paper; the other models have none)")
    run.add_argument("--methods", type=lambda text: [m for m in text.split(",") if m],
                     default=["anti_sample"],
                     help=f"comma-separated unlearning methods, run from the same original model "
                          f"and retain subset: {', '.join(METHODS)}")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                     help="show progress bars")
    run.add_argument("--dist-timeout-minutes", type=positive_float, default=DIST_TIMEOUT_MINUTES,
                     help="under torchrun: how long a rank waits for the others (rank 0 trains the original "
                          "model while they wait; ranks that finish early wait for the slowest)")
    run.add_argument("--mia", action=argparse.BooleanOptionalAction, default=True,
                     help="measure membership-inference efficacy (SVC fits; slow on full CIFAR-10)")

    protocol = parser.add_argument_group(
        "protocol", "defaults follow the authors' code (PAPER.md); README \"Deviations\" measures the others")
    protocol.add_argument("--unlearn-mode", choices=UNLEARN_MODES, default="eval",
                          help="model mode while anti_sample fine-tunes: eval freezes BatchNorm's running "
                               "statistics (the authors'), train updates them; other methods keep their own")
    protocol.add_argument("--neighbour-pool", choices=NEIGHBOUR_POOLS, default="all",
                          help="where anti-samples' far neighbours are searched: all retain-class training "
                               "data (the authors', also at Unlearning-30) or only the retain subset")
    protocol.add_argument("--select", choices=SELECTIONS, default="best-test",
                          help=f"epoch kept of the original and retrained models: best-test is the "
                               f"authors' (best accuracy on a random {SELECT_FRACTION * 100:.0f}%% of the test set, "
                               f"drawn anew each epoch: it looks at test data), last is the final epoch")

    speed = parser.add_argument_group(
        "speed", "CUDA only; the CPU always runs the plain loop (README \"Speed\")")
    speed.add_argument("--fused-adam", action=argparse.BooleanOptionalAction, default=None,
                       help="torch's fused Adam kernel (default: on with a CUDA device)")
    speed.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                       help="capture each training step in a CUDA graph and replay it (default: on with a "
                            "CUDA device, unless --compile; 4.4x faster epochs on an H200, bench/RESULTS.md)")
    speed.add_argument("--bf16", action="store_true", help="bf16 autocast of forward pass and loss")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the model's forward (not with --cuda-graph)")

    hp = parser.add_argument_group(
        "hyperparameters", "default: the paper's table for the model and data set (hparams.py)")
    hp.add_argument("--epochs", type=positive_int, help="epochs of the original and retrained models")
    hp.add_argument("--lr", type=positive_float, help="Adam learning rate of the original and retrained models")
    hp.add_argument("--batch-size", type=positive_int, help="minibatch size of every phase")
    hp.add_argument("--unlearn-epochs", type=positive_int,
                    help=f"epochs on retain subset + anti-samples (paper: "
                         f"{hparams.UNLEARN_EPOCHS_MULTI if multi_class else hparams.UNLEARN_EPOCHS_SINGLE})")
    hp.add_argument("--unlearn-scale-lr", type=positive_float, help="unlearning lr = this x --lr")
    hp.add_argument("--local-variance", type=non_negative_float, help="lambda: noise scale")
    hp.add_argument("--size-multiplier", type=positive_int, help="m: candidate rounds")
    hp.add_argument("--p", type=probability, help="probability of keeping a perturbed feature")
    hp.add_argument("--tail-randomized", type=tail,
                    help="k: draw the neighbour among the k farthest (0 or none: the farthest)")
    hp.add_argument("--no-generated-data", type=positive_int, help="g: anti-samples per forget class")
    hp.add_argument("--eps", type=non_negative_float, help="floor of the noise scale")
    hp.add_argument("--convex-combination", action=argparse.BooleanOptionalAction, default=None,
                    help="mix the candidates into g anti-samples with softmax weights")
    hp.add_argument("--repair-epochs", type=non_negative_int, default=0,
                    help="after unlearning, fine-tune this many epochs on the retain subset alone "
                         "at --lr (ours; 0 is the paper's protocol)")
    return parser


@dataclass
class RunConfig:
    """Every resolved setting of a run; saved in summary.json and in each checkpoint."""
    dataset: str
    model: str
    retain_percent: float
    multi_class: bool
    data_root: str | None
    max_per_class: int | None
    device: str
    seed: int
    out: str
    cache_dir: str
    checkpoint: str | None
    retrain: bool
    pretrained: bool
    progress: bool
    dist_timeout_minutes: float
    mia: bool
    repair_epochs: int
    methods: list[str]
    hparams: hparams.RunHparams
    unlearn_mode: str = "eval"
    neighbour_pool: str = "all"
    select: str = "best-test"
    speed: Speed = PLAIN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_config(args: argparse.Namespace, multi_class: bool) -> RunConfig:
    spec = get_dataset_spec(args.dataset)
    pretrained = resolve_pretrained(args.model, args.pretrained)  # also validates the model name
    table = hparams.resolve(args.model, spec.hparams_as, args.retain_percent, multi_class)
    overrides = {field: getattr(args, field) for field in asdict(table)
                 if getattr(args, field, None) is not None}
    if overrides.get("tail_randomized") == 0:  # --tail-randomized 0/none: always the farthest
        overrides["tail_randomized"] = None
    run_hparams = hparams.RunHparams(**{**asdict(table), **overrides})
    device = resolve_device(args.device)
    speed = resolve_speed(args, device)
    out = resolve_out(args, multi_class)
    return RunConfig(
        dataset=args.dataset, model=args.model, retain_percent=float(args.retain_percent),  # 30 and 30.0: one key
        multi_class=multi_class, data_root=args.data_root, max_per_class=args.max_per_class,
        device=str(device), seed=args.seed, out=out, cache_dir=args.cache_dir,
        checkpoint=args.checkpoint, retrain=not args.no_retrain, pretrained=pretrained,
        progress=args.progress, dist_timeout_minutes=args.dist_timeout_minutes, mia=args.mia,
        repair_epochs=args.repair_epochs,
        methods=check_methods(args.methods, retrain=not args.no_retrain), hparams=run_hparams,
        unlearn_mode=args.unlearn_mode, neighbour_pool=args.neighbour_pool, select=args.select, speed=speed)


def resolve_speed(args: argparse.Namespace, device: torch.device) -> Speed:
    """The speed flags, checked: CUDA only, and --compile not with --cuda-graph."""
    cuda = device.type == "cuda"
    chosen = [flag for flag, on in [("--fused-adam", args.fused_adam), ("--cuda-graph", args.cuda_graph),
                                    ("--bf16", args.bf16), ("--compile", args.compile)] if on]
    if chosen and not cuda:
        raise UserError(f"{chosen[0]} needs a CUDA device (--device cuda); the CPU runs the plain loop")
    if args.cuda_graph and args.compile:
        raise UserError("--compile and --cuda-graph do not combine; choose one")
    cuda_graph = cuda and not args.compile if args.cuda_graph is None else args.cuda_graph
    return Speed(fused_adam=cuda if args.fused_adam is None else args.fused_adam,
                 cuda_graph=cuda_graph, bf16=args.bf16, compile=args.compile)


def resolve_out(args: argparse.Namespace, multi_class: bool) -> str:
    """--out, or results/<dataset>/<model>/single_class_<percent> (multi_class_k<K>_<percent>)."""
    if args.out:
        return args.out
    kind = "single_class"
    if multi_class:
        k = len(args.forget_classes) if args.forget_classes is not None else args.num_forget_classes
        kind = f"multi_class_k{k}"
    return f"results/{args.dataset}/{args.model}/{kind}_{args.retain_percent:g}"


def check_writable_folder(path: Path, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"{flag} {path} is not writable ({error.strerror}); give another folder") from None


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device; try cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} is not available here (no CUDA GPU); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name} is not available here: this machine has {torch.cuda.device_count()} "
                        f"CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name} is not available here; use --device cpu")
    return device


def check_classes(classes: list[int], num_classes: int, flag: str = "--classes") -> list[int]:
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"{flag}: class {bad[0]} is out of range; classes are 0..{num_classes - 1}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise UserError(f"{flag}: class {repeated[0]} is given more than once")
    if not classes:
        raise UserError(f"{flag}: no class given")
    return classes


PAPER_DRAWS = {2: 10, 4: 5, 7: 3}  # PAPER.md "Multi-class runs": draws per K
DEFAULT_DRAWS = 3


def check_forget_set(classes: list[int], num_classes: int, flag: str = "--forget-classes") -> list[int]:
    """A multi-class forget set: valid, distinct classes, at least one class left to retain."""
    check_classes(classes, num_classes, flag)
    if len(classes) >= num_classes:
        raise UserError(f"{flag}: forgetting {len(classes)} of {num_classes} classes leaves none to "
                        f"retain; forget at most {num_classes - 1}")
    return sorted(classes)


def draw_forget_sets(k: int, draws: int | None, num_classes: int, seed: int, out: str) -> list[list[int]]:
    """`draws` random sets of k classes, saved to <out>/draws.json and reused from there.

    Draw i depends only on (seed, k, i), so a run with fewer draws forgets a prefix of the sets
    of a run with more; a saved file for the same seed and k is read back as it is."""
    if not 1 <= k < num_classes:
        raise UserError(f"--num-forget-classes {k} is out of range; give 1..{num_classes - 1} "
                        f"so at least one class is retained")
    draws = draws or PAPER_DRAWS.get(k, DEFAULT_DRAWS)
    path = Path(out) / "draws.json"
    try:
        saved = json.loads(path.read_text())
        if saved["seed"] == seed and saved["num_forget_classes"] == k and len(saved["draws"]) >= draws:
            return [check_forget_set(s, num_classes, str(path)) for s in saved["draws"][:draws]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    sets = [sorted(torch.randperm(num_classes, generator=make_generator(seed, "draw", k, i))[:k].tolist())
            for i in range(draws)]
    write_json(path, {"seed": seed, "num_forget_classes": k, "draws": sets})
    return sets


# ----------------------------------------------------------------------------------------------
# Seeds and fingerprints


def derived_seed(seed: int, *keys: Any) -> int:
    """A seed for one purpose (e.g. ("retain", 3)), independent of the order units are run in."""
    return zlib.crc32(repr((seed, *keys)).encode())


def make_generator(seed: int, *keys: Any, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(seed, *keys))


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# The experiment


def draw_retain_subset(train: Split, forget_classes: list[int], percent: float, num_classes: int,
                       seed: int) -> Split:
    """`percent` of each retain class's training samples, drawn at random (seeded by `seed` and
    the forget classes, so every method and rerun gets the same subset)."""
    generator = make_generator(seed, "retain", forget_classes)
    labels = train.labels.cpu()
    keep = []
    for c in range(num_classes):
        if c in forget_classes:
            continue
        members = (labels == c).nonzero().squeeze(1)
        count = max(1, round(len(members) * percent / 100))
        keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return train.subset(torch.cat(keep).sort().values.to(train.labels.device))


class Experiment:
    """Data, the original model and cached models of one run; `run_unit` does one forget set."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.spec = get_dataset_spec(config.dataset)
        self.train_data, self.test_data = load_dataset(
            config.dataset, config.data_root, config.device, config.max_per_class)
        self.original_state, self.original_epoch = self._original_state()

    # -- models --------------------------------------------------------------------------------

    def new_model(self) -> torch.nn.Module:
        torch.manual_seed(derived_seed(self.config.seed, "init"))
        model = get_model(self.config.model, self.spec.num_classes, self.spec.in_channels,
                          self.config.pretrained)
        return model.to(self.config.device)

    def new_scratch_model(self) -> torch.nn.Module:
        """A randomly initialised model of the run's architecture (never pretrained)."""
        return get_model(self.config.model, self.spec.num_classes, self.spec.in_channels,
                         pretrained=False).to(self.config.device)

    def model_from(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = self.new_model()
        model.load_state_dict(state)
        return model

    def _training_settings(self) -> dict[str, Any]:
        c, h = self.config, self.config.hparams
        data_root = str(Path(c.data_root).resolve()) if c.data_root else None
        return {"dataset": c.dataset, "data_root": data_root, "max_per_class": c.max_per_class,
                "model": c.model, "architecture_version": get_model_entry(c.model).version,
                "pretrained": c.pretrained, "epochs": h.epochs, "lr": h.lr,
                "batch_size": h.batch_size, "seed": c.seed, "device": torch.device(c.device).type,
                "cache_format": CACHE_FORMAT,
                **({"speed": asdict(c.speed)} if c.speed != PLAIN else {})}

    def _trained_state(self, name: str, classes: list[int]) -> tuple[dict[str, torch.Tensor], float, int]:
        """A model trained on the training samples of `classes` (from the cache when it is there):
        its weights at the epoch --select keeps, the seconds its training took (per-epoch selection
        checks included) and that epoch. One training run stores both the last and the best-test
        epoch, so either selection reuses it."""
        settings = {**self._training_settings(), "classes": classes}
        path = (Path(self.config.cache_dir) / self.config.dataset / self.config.model
                / f"{name}_{fingerprint(settings)}.pt")
        checkpoint = read_cached_model(path) if path.exists() else None
        if checkpoint is None:
            checkpoint = self._train_and_cache(name, classes, settings, path)
        info = checkpoint["config"]
        if self.config.select == "last":
            return checkpoint["state_dict"], info["train_seconds"], self.config.hparams.epochs
        return checkpoint["best_state_dict"], info["train_seconds"], info["best_epoch"]

    def _train_and_cache(self, name: str, classes: list[int], settings: dict[str, Any], path: Path) -> dict:
        model = self.new_model()
        h = self.config.hparams
        best = BestEpoch(model, self.test_data.of_classes(classes), make_generator(self.config.seed, "select", name))
        synchronize(self.config.device)
        start = time.perf_counter()
        train(model, self.train_data.of_classes(classes), TrainParams(h.epochs, h.lr, h.batch_size),
              make_generator(self.config.seed, "train", name), phase=f"{name} model",
              progress=self.config.progress, speed=self.config.speed, after_epoch=best)
        synchronize(self.config.device)
        seconds = time.perf_counter() - start
        config = {"settings": settings, "train_seconds": seconds, "best_epoch": best.epoch,
                  "selection_accuracies": best.accuracies, "run": self.config.to_dict()}
        save_checkpoint(path, model, config, extra={"best_state_dict": best.state})
        return {"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "best_state_dict": best.state, "config": config}

    def _original_state(self) -> tuple[dict[str, torch.Tensor], int | None]:
        """The original model's weights and its selected epoch (None for a --checkpoint)."""
        if self.config.checkpoint:
            model = self.new_model()
            load_weights(model, load_checkpoint(self.config.checkpoint), self.config.checkpoint)
            return model.state_dict(), None
        state, _, epoch = self._trained_state("original", list(range(self.spec.num_classes)))
        return state, epoch

    def retrained_state(self, forget_classes: list[int]) -> tuple[dict[str, torch.Tensor], float, int]:
        retain = [c for c in range(self.spec.num_classes) if c not in forget_classes]
        return self._trained_state("retrained_without_" + "_".join(map(str, forget_classes)), retain)

    # -- one unit ------------------------------------------------------------------------------

    def anti_sample_examples(self, forget_class: int, count: int = 6):
        """(forget samples, the farthest retain sample of each, anti-samples) for a picture."""
        pool = self.neighbour_pool([forget_class])
        forget = self.train_data.of_classes([forget_class]).images[:count]
        far = pool.images[farthest_retain_indices(forget, pool.images, 1)[:, 0]]
        anti = anti_sample_set(self.train_data, [forget_class], pool, self.config.hparams.anti_sample_params,
                               make_generator(self.config.seed, "anti", [forget_class], device=self.config.device))
        return forget, far, anti.images[:count]

    def retain_subset(self, forget_classes: list[int]) -> Split:
        return draw_retain_subset(self.train_data, forget_classes, self.config.retain_percent,
                                  self.spec.num_classes, self.config.seed)

    def neighbour_pool(self, forget_classes: list[int]) -> Split:
        """Where anti-samples' far neighbours are searched (--neighbour-pool)."""
        if self.config.neighbour_pool == "subset":
            return self.retain_subset(forget_classes)
        return self.train_data.of_classes([c for c in range(self.spec.num_classes) if c not in forget_classes])

    def unlearn_inputs(self, forget_classes: list[int]) -> UnlearnInputs:
        """What every method receives for this forget set: the same retain subset and seeds."""
        c = self.config
        return UnlearnInputs(
            train=self.train_data, retain=self.retain_subset(forget_classes),
            pool=self.neighbour_pool(forget_classes), forget_classes=forget_classes, hparams=c.hparams,
            anti_sample=c.hparams.anti_sample_params, repair_epochs=c.repair_epochs,
            generator=make_generator(c.seed, "unlearn", forget_classes),
            device_generator=make_generator(c.seed, "anti", forget_classes, device=c.device),
            progress=c.progress, make_model=self.new_scratch_model, speed=c.speed, unlearn_mode=c.unlearn_mode)

    def unlearn(self, forget_classes: list[int], method: str) -> tuple[torch.nn.Module, float]:
        """A copy of the original model after `method`, and the seconds it took (retain-subset
        draw included, model copy excluded)."""
        c = self.config
        model = self.model_from(self.original_state)
        synchronize(c.device)
        start = time.perf_counter()
        inputs = self.unlearn_inputs(forget_classes)
        METHODS[method](model, inputs)
        synchronize(c.device)
        return model, time.perf_counter() - start

    def measure(self, model: torch.nn.Module, forget_classes: list[int]) -> dict[str, Any]:
        """Test and train accuracies and the membership-inference efficacy of `model`. The MIA's
        members are the retain subset the unlearner trains on, as SalUn's code takes its retain
        set (README "Deviations")."""
        retain_classes = [c for c in range(self.spec.num_classes) if c not in forget_classes]
        mia = None
        if self.config.mia:
            mia = mia_efficacy(model, self.retain_subset(forget_classes), self.test_data.of_classes(retain_classes),
                               self.train_data.of_classes(forget_classes),
                               make_generator(self.config.seed, "mia", forget_classes))
        return {"test": evaluate(model, self.test_data, forget_classes),
                "train": evaluate(model, self.train_data, forget_classes), "mia": mia}

    def run_unit(self, forget_classes: list[int], methods: list[str]) -> dict[str, dict[str, Any]]:
        """One summary row per method (accuracies in percent) for this forget set."""
        original = evaluate(self.model_from(self.original_state), self.test_data, forget_classes)
        gold, retrain_seconds, retrain_epoch = None, None, None
        if self.config.retrain:
            state, retrain_seconds, retrain_epoch = self.retrained_state(forget_classes)
            gold = self.measure(self.model_from(state), forget_classes)
        rows = {}
        for method in methods:
            if method == "retrain":
                result, seconds = gold, retrain_seconds
            else:
                unlearned, seconds = self.unlearn(forget_classes, method)
                result = self.measure(unlearned, forget_classes)
            rows[method] = {**summary_row(method, original, result, gold, seconds, retrain_seconds),
                            "original_epoch": self.original_epoch, "retrained_epoch": retrain_epoch}
        return rows

    def run(self, units: list[list[int]], methods: list[str]) -> list[dict[str, Any]]:
        """Rows for every unit and method, unit by unit; a unit already finished by an earlier
        run with the same settings is read back from --out instead of being computed again."""
        settings = {k: v for k, v in self.config.to_dict().items() if k not in NOT_AFFECTING_RESULTS}
        settings["device"] = torch.device(self.config.device).type  # cuda:1 and cuda:0 agree
        key = fingerprint(settings)
        rows = []
        for forget_classes in tqdm(units, desc="forget sets", disable=not self.config.progress):
            name = "_".join(map(str, forget_classes))
            paths = {m: Path(self.config.out) / "units" / f"{m}_forget_{name}.json" for m in methods}
            done = {m: read_unit(path, key) for m, path in paths.items()}
            todo = [m for m in methods if done[m] is None]
            if todo:
                try:
                    new = self.run_unit(forget_classes, todo)
                except NonFiniteLossError as error:
                    raise UserError(f"stopped, forgetting classes {forget_classes}: {error}; "
                                    f"try a smaller --unlearn-scale-lr or --lr") from None
                for method, row in new.items():
                    write_json(paths[method], {"fingerprint": key, "row": row})
                done.update(new)
            rows += [done[m] for m in methods]
        return rows


def read_cached_model(path: Path) -> dict[str, Any] | None:
    """A cached model written by `_train_and_cache`, or None (with a one-line warning) if the
    file is not one."""
    try:
        checkpoint = load_checkpoint(path)
        if "best_state_dict" not in checkpoint or not {"train_seconds", "best_epoch"} <= checkpoint["config"].keys():
            raise UserError(f"cached model {path} lacks the best-test epoch or its training time")
        return checkpoint
    except (UserError, AttributeError) as error:
        print(f"warning: {error}; training it again", file=sys.stderr)
        return None


def summary_row(method: str, original: dict, result: dict, gold: dict | None, seconds: float,
                retrain_seconds: float | None) -> dict[str, Any]:
    """One row of summary.json: accuracies in percent, seconds, and the comparison with the
    retrained model (None without it)."""
    row = {
        "method": method,
        "original_retain_test_acc": original["retain"], "original_forget_test_acc": original["forget"],
        "unlearned_retain_test_acc": result["test"]["retain"],
        "unlearned_forget_test_acc": result["test"]["forget"],
        "unlearned_retain_train_acc": result["train"]["retain"],
        "unlearned_forget_train_acc": result["train"]["forget"],
        "unlearn_seconds": seconds, "mia_efficacy": result["mia"],
    }
    gold_row = {"retrained_retain_test_acc": None, "retrained_forget_test_acc": None,
                "retrained_retain_train_acc": None, "retrained_forget_train_acc": None,
                "retrained_mia_efficacy": None, "gap_to_retrain": None, "speedup_vs_retrain": None}
    if gold:
        gold_row = {
            "retrained_retain_test_acc": gold["test"]["retain"],
            "retrained_forget_test_acc": gold["test"]["forget"],
            "retrained_retain_train_acc": gold["train"]["retain"],
            "retrained_forget_train_acc": gold["train"]["forget"],
            "retrained_mia_efficacy": gold["mia"],
            # SalUn's "average gap": forget-train, retain-train, retain-test accuracy and MIA
            "gap_to_retrain": None if result["mia"] is None else float(np.mean([
                abs(result["train"]["forget"] - gold["train"]["forget"]),
                abs(result["train"]["retain"] - gold["train"]["retain"]),
                abs(result["test"]["retain"] - gold["test"]["retain"]),
                abs(result["mia"] - gold["mia"])])),
            "speedup_vs_retrain": retrain_seconds / seconds,
        }
    return {**row, **gold_row}


def read_unit(path: Path, key: str) -> dict[str, Any] | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved["row"] if saved.get("fingerprint") == key else None


# ----------------------------------------------------------------------------------------------
# Summaries and reports


def summarise(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and (population) standard deviation of every metric over the rows; None if absent."""
    mean, std = {}, {}
    for metric in METRICS:
        values = [row[metric] for row in rows if row[metric] is not None]
        mean[metric] = float(np.mean(values)) if values else None
        std[metric] = float(np.std(values)) if values else None
    return mean, std


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2).encode()))


def write_summary(out: Path, config: RunConfig, row_key: str, rows: list[dict[str, Any]]) -> dict:
    """summary.json and summary.csv in `out`; returns the summary.

    "mean" and "std" summarise the first of --methods (anti_sample by default); "by_method"
    holds them for every method."""
    by_method = {}
    for method in config.methods:
        mean, std = summarise([r for r in rows if r["method"] == method])
        by_method[method] = {"mean": mean, "std": std}
    rows_name = "per_draw" if config.multi_class else "per_class"
    first = by_method[config.methods[0]]
    summary = {"config": config.to_dict(), rows_name: rows, "mean": first["mean"], "std": first["std"],
               "by_method": by_method}
    write_json(out / "summary.json", summary)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["row", "method", row_key, *METRICS])
    lines = [("unit", r["method"], r) for r in rows]
    for method, stats in by_method.items():
        lines += [("mean", method, stats["mean"]), ("std", method, stats["std"])]
    for label, method, row in lines:
        unit = row.get(row_key, "")
        unit = " ".join(map(str, unit)) if isinstance(unit, list) else unit
        writer.writerow([label, method, unit, *("" if row[m] is None else f"{row[m]:.4f}" for m in METRICS)])
    atomic_write(out / "summary.csv", lambda file: file.write(text.getvalue().encode()))
    return summary


COLUMNS = [  # (header, metric) of the printed table
    ("orig retain", "original_retain_test_acc"), ("orig forget", "original_forget_test_acc"),
    ("unl retain", "unlearned_retain_test_acc"), ("unl forget", "unlearned_forget_test_acc"),
    ("retr retain", "retrained_retain_test_acc"), ("retr forget", "retrained_forget_test_acc"),
    ("seconds", "unlearn_seconds"),
]


def format_table(row_key: str, rows: list[dict[str, Any]], mean: dict, std: dict) -> str:
    """The per-unit table with mean and std rows (test accuracies in percent)."""
    def cell(value):
        return "-" if value is None else f"{value:.2f}"

    def unit(row):
        value = row[row_key]
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)

    width = max(len(row_key), *(len(unit(r)) for r in rows), 4)
    lines = [f"{row_key:>{width}} " + " ".join(f"{h:>11}" for h, _ in COLUMNS)]
    for label, row in [*((unit(r), r) for r in rows), ("mean", mean), ("std", std)]:
        lines.append(f"{label:>{width}} " + " ".join(f"{cell(row[m]):>11}" for _, m in COLUMNS))
    return "\n".join(lines)


def protocol_line(config: RunConfig, rows: list[dict[str, Any]]) -> str:
    """How the models were chosen and unlearned, and the epochs kept, for the printed table."""
    if config.select == "best-test":
        selection = (f"best-test: each original/retrained model is its epoch with the best accuracy on a "
                     f"random {SELECT_FRACTION:.0%} of the test set (the authors' selection; it looks at test data)")
    else:
        selection = "last: each original/retrained model is its final epoch"
    epochs = sorted({r["retrained_epoch"] for r in rows if r.get("retrained_epoch") is not None})
    original = rows[0].get("original_epoch") if rows else None
    return (f"--select {selection}; kept epochs: original {original if original is not None else '-'}, "
            f"retrained {','.join(map(str, epochs)) or '-'} of {config.hparams.epochs}. "
            f"anti_sample: --unlearn-mode {config.unlearn_mode}, --neighbour-pool {config.neighbour_pool}")


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) when started by torchrun (its RANK and WORLD_SIZE), else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def run_units(config: RunConfig, units: list[list[int]]) -> tuple[Experiment, list[dict[str, Any]] | None]:
    """Every unit's rows, in one process or shared out under torchrun: rank r runs units
    r, r + world, ...; then rank 0 reads all finished units back from --out (the same reuse
    as a rerun) and returns the rows, the other ranks return None."""
    rank, world = distributed_rank()
    if world == 1:
        experiment = Experiment(config)
        return experiment, experiment.run(units, config.methods)
    import torch.distributed as dist

    cuda = torch.device(config.device).type == "cuda"
    timeout = datetime.timedelta(minutes=config.dist_timeout_minutes)
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        config.device = str(device)
        torch.cuda.set_device(device)  # before the process group, so NCCL binds each rank to its GPU
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    try:
        if rank == 0:
            experiment = Experiment(config)  # trains and caches the original model once
        dist.barrier()
        if rank != 0:
            experiment = Experiment(config)  # reads it from the cache
        experiment.run(units[rank::world], config.methods)
        dist.barrier()
        return experiment, experiment.run(units, config.methods) if rank == 0 else None
    finally:
        dist.destroy_process_group()


def main(parser: argparse.ArgumentParser, argv: list[str], multi_class: bool,
         choose_units) -> int:
    """Parse flags, run every unit, print the table and write the summary. Exit status 2 with a
    one-line message for anything the user can fix."""
    args = parser.parse_args(argv)
    try:
        config = resolve_config(args, multi_class)
        out = Path(config.out)
        check_writable_folder(out, "--out")
        check_writable_folder(Path(config.cache_dir), "--cache-dir")
        units = choose_units(args, get_dataset_spec(config.dataset))
        experiment, unit_rows = run_units(config, units)
        if unit_rows is None:  # a torchrun rank other than 0: its share is saved in --out
            return 0
        row_key = "forget_classes" if multi_class else "forget_class"
        unit_of_row = [u for u in units for _ in config.methods]
        rows = [{row_key: u if multi_class else u[0], **row} for u, row in zip(unit_of_row, unit_rows)]
        summary = write_summary(out, config, row_key, rows)
        report.write_comparison(out, summary, row_key)
        if "anti_sample" in config.methods:
            report.plot_anti_samples(*experiment.anti_sample_examples(units[0][0]), experiment.spec.mean,
                                     experiment.spec.std, out / "anti_samples.png")
    except UserError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    for method, stats in summary["by_method"].items():
        print(f"{config.dataset} / {config.model}, Unlearning-{config.retain_percent:g}, {method} "
              f"(accuracy on the test set, %):")
        print(format_table(row_key, [r for r in rows if r["method"] == method], stats["mean"], stats["std"]))
    print(protocol_line(config, rows))
    print(f"wrote summary.json, summary.csv, comparison.md and plots in {out}")
    return 0
