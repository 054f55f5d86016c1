"""The unlearning experiment behind both entry scripts: data, models, the per-unit loop, torchrun.

A *unit* is one set of forget classes: `[c]` for each class in a single-class run, one drawn
set of K classes in a multi-class run. For each unit the pipeline
  1. draws the retain subset (`retain_percent` of every retain class's training samples),
  2. runs each method (`methods.METHODS`; anti_sample is `anti_sample.unlearn`) on a copy of the
     original model,
  3. evaluates it, beside the retrained gold model (trained, or loaded from the cache).
Trained models are cached under --cache-dir and finished units under --out, so a rerun of the
same command reuses everything already done. `run(config, units)` returns the summary
(`report.make_summary`); `cli.py` turns flags into the `RunConfig` and prints.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import report
from anti_sample import AntiSampleParams, anti_sample_set, check_anti_sample_memory
from datasets import Split, draw_retain_subset, fingerprint_data, fingerprint_file, get_dataset_spec, load_dataset
from errors import UserError, first_line
from far_neighbours import farthest_retain_indices
from hparams import RunHparams
from methods import METHODS, MethodRecord, UnlearnInputs
from models import get_model, get_model_entry
from train_utils import (PLAIN, BestEpoch, NonFiniteLossError, Speed, TrainParams, evaluate, load_checkpoint,
                         load_weights, mia_efficacy, save_checkpoint, synchronize, train)

DEFAULT_SEED = 100  # PAPER.md: torch seed 100
# The authors' protocol is each default (PAPER.md); the other choice is ours (README "Deviations").
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
    methods: list[str]
    hparams: RunHparams
    unlearn_mode: str = "eval"
    neighbour_pool: str = "all"
    select: str = "best-test"
    speed: Speed = PLAIN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class Experiment:
    """Data, the original model and cached models of one run; `run_unit` does one forget set."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.spec = get_dataset_spec(config.dataset)
        given = self._read_checkpoint() if config.checkpoint else None  # refused before the data are loaded
        self.train_data, self.test_data = self.load_data()
        # the inputs by content: results are reused only for the same data and checkpoint
        self.inputs = {"data": self.data_fingerprint(),
                       "checkpoint": fingerprint_file(config.checkpoint, "checkpoint") if config.checkpoint else None}
        if "anti_sample" in config.methods:  # anti-samples that cannot fit: refused before any training
            check_anti_sample_memory(self.train_data, self.anti_sample_params())
        # the original model's weights and its selected epoch (None for a --checkpoint)
        if given is not None:
            self.original_state, self.original_epoch = given, None
        else:
            self.original_state, _, self.original_epoch = self._trained_state("original", list(range(self.spec.num_classes)))

    def load_data(self) -> tuple[Split, Split]:
        """The (train, test) splits the experiment trains and evaluates on."""
        c = self.config
        return load_dataset(c.dataset, c.data_root, c.device, c.max_per_class)

    def data_fingerprint(self) -> str:
        """What `load_data` gives, by content (`datasets.fingerprint_data`)."""
        return fingerprint_data(self.config.dataset, self.config.data_root)

    def results_key(self) -> str:
        """A fingerprint of everything that changes a result: settings and inputs by content."""
        settings = {k: v for k, v in self.config.to_dict().items() if k not in NOT_AFFECTING_RESULTS}
        settings["device"] = torch.device(self.config.device).type  # cuda:1 and cuda:0 agree
        settings["data_root"] = settings["checkpoint"] = None  # counted by content (self.inputs), wherever they are
        return fingerprint({**settings, **self.inputs})

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
        return {"dataset": c.dataset, "data": self.inputs["data"], "max_per_class": c.max_per_class,
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
        checkpoint = read_cached_model(path, self.new_scratch_model()) if path.exists() else None
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

    def _read_checkpoint(self) -> dict[str, torch.Tensor]:
        """The weights of --checkpoint, after checking its data set and that they fit the model."""
        model = self.new_model()
        checkpoint = load_checkpoint(self.config.checkpoint)
        notice = check_checkpoint_dataset(checkpoint, self.config.checkpoint, self.config.dataset)
        load_weights(model, checkpoint["state_dict"], self.config.checkpoint)
        if notice:
            print(f"note: {notice}", file=sys.stderr)
        return model.state_dict()

    def retrained_state(self, forget_classes: list[int]) -> tuple[dict[str, torch.Tensor], float, int]:
        retain = [c for c in range(self.spec.num_classes) if c not in forget_classes]
        return self._trained_state("retrained_without_" + "_".join(map(str, forget_classes)), retain)

    # -- one unit ------------------------------------------------------------------------------

    def anti_sample_examples(self, forget_class: int, count: int = 6):
        """(forget samples, the farthest retain sample of each, anti-samples) for a picture."""
        pool = self.neighbour_pool([forget_class])
        forget = self.train_data.of_classes([forget_class]).images[:count]
        far = pool.images[farthest_retain_indices(forget, pool.images, 1)[:, 0]]
        anti = anti_sample_set(self.train_data.of_classes([forget_class]), pool, self.anti_sample_params(),
                               make_generator(self.config.seed, "anti", [forget_class], device=self.config.device))
        return forget, far, anti.images[:count]

    def anti_sample_params(self) -> AntiSampleParams:
        c = self.config
        return AntiSampleParams.from_run(c.hparams, unlearn_mode=c.unlearn_mode)

    def retain_subset(self, forget_classes: list[int]) -> Split:
        """The retain subset every method of this unit gets (seeded by the seed and the forget classes)."""
        return draw_retain_subset(self.train_data, forget_classes, self.config.retain_percent,
                                  make_generator(self.config.seed, "retain", forget_classes))

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
            pool=self.neighbour_pool(forget_classes), forget_classes=forget_classes,
            anti_sample=self.anti_sample_params(), batch_size=c.hparams.batch_size,
            generator=make_generator(c.seed, "unlearn", forget_classes),
            device_generator=make_generator(c.seed, "anti", forget_classes, device=c.device),
            progress=c.progress, make_model=self.new_scratch_model, speed=c.speed)

    def unlearn(self, forget_classes: list[int], method: str) -> tuple[torch.nn.Module, float, MethodRecord | None]:
        """A copy of the original model after `method`, the seconds it took (retain-subset draw
        included, model copy excluded) and the method's own record."""
        c = self.config
        model = self.model_from(self.original_state)
        synchronize(c.device)
        start = time.perf_counter()
        inputs = self.unlearn_inputs(forget_classes)
        record = METHODS[method](model, inputs)
        synchronize(c.device)
        return model, time.perf_counter() - start, record

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
            unlearned, seconds, record = self.unlearn(forget_classes, method)
            result = self.measure(unlearned, forget_classes)
            rows[method] = {**report.summary_row(method, original, result, gold, seconds, retrain_seconds,
                                                 record.epochs if record else None),
                            "original_epoch": self.original_epoch, "retrained_epoch": retrain_epoch,
                            "forget_trace": record.forget_trace if record else None}
        return rows

    def run(self, units: list[list[int]], methods: list[str]) -> list[dict[str, Any]]:
        """Rows for every unit and method, unit by unit, each with its unit (`report.UNIT_KEYS`); a
        unit already finished by an earlier run with the same settings is read back from --out
        instead of being computed again."""
        key = self.results_key()
        rows = []
        for forget_classes in tqdm(units, desc="forget sets", disable=not self.config.progress):
            name = "_".join(map(str, forget_classes))
            paths = {m: Path(self.config.out) / "units" / f"{m}_forget_{name}.json" for m in methods}
            done = {m: read_unit(path, key, m) for m, path in paths.items()}
            for method, path in paths.items():
                if done[method] is None and path.exists():
                    print(f"note: {path} was computed from other data, checkpoint or settings (or is not a "
                          f"result file); computing it again", file=sys.stderr)
            todo = [m for m in methods if done[m] is None]
            if todo:
                try:
                    new = self.run_unit(forget_classes, todo)
                except NonFiniteLossError as error:
                    raise UserError(f"stopped, forgetting classes {forget_classes}: {error}; "
                                    f"try a smaller --unlearn-scale-lr or --lr") from None
                for method, row in new.items():
                    write_unit(paths[method], key, row)
                done.update(new)
            unit = forget_classes if self.config.multi_class else forget_classes[0]
            rows += [{report.UNIT_KEYS[self.config.multi_class]: unit, **done[m]} for m in methods]
        return rows


def read_cached_model(path: Path, model: torch.nn.Module) -> dict[str, Any] | None:
    """A cached model written by `_train_and_cache` whose weights fit `model`, or None (with a
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


def write_unit(path: Path, key: str, row: dict[str, Any]) -> None:
    """A finished unit's row, with the fingerprint of its settings and inputs and a digest of both."""
    report.write_json(path, {"fingerprint": key, "row": row, "sha256": _unit_digest(key, row)})


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


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) when started by torchrun (its RANK and WORLD_SIZE), else (0, 1).

    RANK / WORLD_SIZE left in the environment without torchrun would wait for ranks that never
    come: they are refused (torchrun marks its workers with TORCHELASTIC_RUN_ID)."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} and RANK={os.environ.get('RANK')!r} must be "
                        f"whole numbers (torchrun sets them); unset them for a single process") from None
    if world > 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        raise UserError(f"WORLD_SIZE={world} is set, but this process was not started by torchrun; "
                        f"unset RANK and WORLD_SIZE, or launch with torchrun --nproc_per_node N")
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is not in 0..{world - 1} (WORLD_SIZE={world}); unset RANK and WORLD_SIZE, "
                        f"or launch with torchrun")
    return rank, world


def run(config: RunConfig, units: list[list[int]]) -> tuple[Experiment, dict[str, Any] | None]:
    """The experiment and its summary (`report.make_summary`) over every unit and method; under
    torchrun the summary is rank 0's and the other ranks get None."""
    experiment, rows = run_units(config, units)
    return experiment, None if rows is None else report.make_summary(config.to_dict(), rows)


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
    try:
        if cuda:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            config.device = str(device)
            torch.cuda.set_device(device)  # before the process group, so NCCL binds each rank to its GPU
            dist.init_process_group("nccl", timeout=timeout, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    except (ValueError, RuntimeError) as error:  # e.g. a MASTER_PORT that is not a port, a peer that never came
        raise UserError(f"torchrun's rendezvous failed ({first_line(error)}); check MASTER_ADDR and MASTER_PORT, "
                        f"or run without torchrun") from None
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


