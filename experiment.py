"""The unlearning experiment behind both entry scripts: the per-unit loop.

A *unit* is one set of forget classes: `[c]` for each class in a single-class run, one drawn
set of K classes in a multi-class run. For each unit the pipeline
  1. draws the retain subset (`retain_percent` of every retain class's training samples),
  2. runs each method (`methods.METHODS`; anti_sample is `anti_sample.unlearn`) on a copy of the
     original model,
  3. evaluates it, beside the retrained gold model (trained, or loaded from the cache).
Trained models are cached under --cache-dir and finished units under --out (`store.py`), so a
rerun of the same command reuses everything already done. `distributed.run(config, units)` drives
it, in one process or under torchrun; `cli.py` turns flags into the `RunConfig` and prints.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

import schema
import store
from anti_sample import AntiSampleParams, anti_sample_set, check_anti_sample_memory
from datasets import Split, draw_retain_subset, fingerprint_data, fingerprint_file, get_dataset_spec, load_dataset
from devices import Stopwatch
from errors import UserError
from far_neighbours import farthest_retain_indices
from hparams import RunHparams
from methods import METHODS, MethodRecord, UnlearnInputs
from metrics import BestEpoch, mia_efficacy
from models import get_model, get_model_entry
from seeding import derived_seed, make_generator
from train_utils import PLAIN, NonFiniteLossError, Speed, TrainParams, evaluate, train

# The authors' protocol is each default (docs/METHOD.md); the other choice is ours (README "Deviations").
NEIGHBOUR_POOLS = ["all", "subset"]  # far neighbours among all retain-class training data, or the subset
SELECTIONS = ["best-test", "last"]  # which epoch of the original and retrained models is kept
# Resolved settings that do not change any number in the results (left out of fingerprints).
NOT_AFFECTING_RESULTS = {"out", "classes", "progress", "cache_dir", "methods", "dist_timeout_minutes"}
# Settings added after results were written: left out of the fingerprint at this default, so that
# those results are still read.
ADDED_LATER = {"baseline_forget_target": None}


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
    baseline_forget_target: float | None = None  # methods.UnlearnInputs.baseline_target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunData(NamedTuple):
    """The splits an experiment trains and evaluates on, and what they are by content."""
    train: Split
    test: Split  # what models are evaluated on (and, with --select best-test, selected on)
    key: str  # changes when the data change (`datasets.fingerprint_data`), wherever they are


def load_run_data(config: RunConfig) -> RunData:
    """The run's data set: its train and test splits."""
    train_data, test_data = load_dataset(config.dataset, config.data_root, config.device, config.max_per_class)
    return RunData(train_data, test_data, fingerprint_data(config.dataset, config.data_root))


class TrainedModel(NamedTuple):
    state: dict[str, torch.Tensor]  # its weights at the kept epoch
    seconds: float | None  # its training time, per-epoch selection checks included (None: a --checkpoint)
    epoch: int | None  # the kept epoch (None: a --checkpoint)


# ----------------------------------------------------------------------------------------------
# The experiment


class Experiment:
    """One run's data and models; `run(units, methods)` does its forget sets. Nothing trains when it
    is made: the original model is trained (or read from the cache) when first used."""

    def __init__(self, config: RunConfig, data: RunData | None = None):
        """`data`: the splits to use (the tuner's: a validation split as the test split); default,
        the run's data set (`load_run_data`)."""
        self.config = config
        self.spec = get_dataset_spec(config.dataset)
        self._given = self._read_checkpoint() if config.checkpoint else None  # refused before the data load
        self.train_data, self.test_data, data_key = data or load_run_data(config)
        # the inputs by content: results are reused only for the same data and checkpoint
        self.inputs = {"data": data_key,
                       "checkpoint": fingerprint_file(config.checkpoint, "checkpoint") if config.checkpoint else None}
        if "anti_sample" in config.methods:  # anti-samples that cannot fit: refused before any training
            check_anti_sample_memory(self.train_data, self.anti_sample_params())

    def results_key(self) -> str:
        """A fingerprint of everything that changes a result: settings and inputs by content."""
        settings = {k: v for k, v in self.config.to_dict().items()
                    if k not in NOT_AFFECTING_RESULTS and not (k in ADDED_LATER and v == ADDED_LATER[k])}
        settings["device"] = torch.device(self.config.device).type  # cuda:1 and cuda:0 agree
        settings["data_root"] = settings["checkpoint"] = None  # counted by content (self.inputs), wherever they are
        return store.fingerprint({**settings, **self.inputs})

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

    @functools.cached_property
    def original(self) -> TrainedModel:
        """The original model: --checkpoint's weights, else trained on every class (or read from the cache)."""
        if self._given is not None:
            return TrainedModel(self._given, None, None)
        return self._trained("original", list(range(self.spec.num_classes)))

    def retrained(self, forget_classes: list[int]) -> TrainedModel:
        """The gold model: trained on the retain classes only (or read from the cache)."""
        retain = [c for c in range(self.spec.num_classes) if c not in forget_classes]
        return self._trained("retrained_without_" + "_".join(map(str, forget_classes)), retain)

    def _training_settings(self) -> dict[str, Any]:
        c, h = self.config, self.config.hparams
        return {"dataset": c.dataset, "data": self.inputs["data"], "max_per_class": c.max_per_class,
                "model": c.model, "architecture_version": get_model_entry(c.model).version,
                "pretrained": c.pretrained, "epochs": h.epochs, "lr": h.lr,
                "batch_size": h.batch_size, "seed": c.seed, "device": torch.device(c.device).type,
                "cache_format": store.CACHE_FORMAT,
                **({"speed": asdict(c.speed)} if c.speed != PLAIN else {})}

    def _trained(self, name: str, classes: list[int]) -> TrainedModel:
        """A model trained on the training samples of `classes`, from the cache when it is there, at
        the epoch --select keeps. One training run stores both the last and the best-test epoch, so
        either selection reuses it."""
        settings = {**self._training_settings(), "classes": classes}
        path = store.cached_model_path(self.config.cache_dir, self.config.dataset, self.config.model, name, settings)
        checkpoint = store.read_cached_model(path, self.new_scratch_model()) if path.exists() else None
        if checkpoint is None:
            checkpoint = self._train_and_cache(name, classes, settings, path)
        info = checkpoint["config"]
        if self.config.select == "last":
            return TrainedModel(checkpoint["state_dict"], info["train_seconds"], self.config.hparams.epochs)
        return TrainedModel(checkpoint["best_state_dict"], info["train_seconds"], info["best_epoch"])

    def _train_and_cache(self, name: str, classes: list[int], settings: dict[str, Any], path) -> dict:
        model = self.new_model()
        h = self.config.hparams
        best = BestEpoch(model, self.test_data.of_classes(classes), make_generator(self.config.seed, "select", name))
        with Stopwatch(self.config.device) as clock:
            train(model, self.train_data.of_classes(classes), TrainParams(h.epochs, h.lr, h.batch_size),
                  make_generator(self.config.seed, "train", name), phase=f"{name} model",
                  progress=self.config.progress, speed=self.config.speed, after_epoch=best)
        config = {"settings": settings, "train_seconds": clock.seconds, "best_epoch": best.epoch,
                  "selection_accuracies": best.accuracies, "run": self.config.to_dict()}
        store.save_checkpoint(path, model, config, extra={"best_state_dict": best.state})
        return {"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "best_state_dict": best.state, "config": config}

    def _read_checkpoint(self) -> dict[str, torch.Tensor]:
        """The weights of --checkpoint, after checking its data set and that they fit the model."""
        model = self.new_model()
        checkpoint = store.load_checkpoint(self.config.checkpoint)
        notice = store.check_checkpoint_dataset(checkpoint, self.config.checkpoint, self.config.dataset)
        store.load_weights(model, checkpoint["state_dict"], self.config.checkpoint)
        if notice:
            print(f"note: {notice}", file=sys.stderr)
        return model.state_dict()

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
            progress=c.progress, make_model=self.new_scratch_model, speed=c.speed,
            baseline_target=c.baseline_forget_target)

    def unlearn(self, forget_classes: list[int], method: str) -> tuple[torch.nn.Module, float, MethodRecord | None]:
        """A copy of the original model after `method`, the seconds it took (retain-subset draw
        included, model copy excluded) and the method's own record."""
        model = self.model_from(self.original.state)
        with Stopwatch(self.config.device) as clock:
            record = METHODS[method](model, self.unlearn_inputs(forget_classes))
        return model, clock.seconds, record

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
        original = evaluate(self.model_from(self.original.state), self.test_data, forget_classes)
        gold, retrained = None, TrainedModel(None, None, None)
        if self.config.retrain:
            retrained = self.retrained(forget_classes)
            gold = self.measure(self.model_from(retrained.state), forget_classes)
        rows = {}
        for method in methods:
            unlearned, seconds, record = self.unlearn(forget_classes, method)
            result = self.measure(unlearned, forget_classes)
            rows[method] = {**schema.summary_row(method, original, result, gold, seconds, retrained.seconds,
                                                     record.epochs if record else None),
                            "original_epoch": self.original.epoch, "retrained_epoch": retrained.epoch,
                            "forget_trace": record.forget_trace if record else None}
        return rows

    def run(self, units: list[list[int]], methods: list[str]) -> list[dict[str, Any]]:
        """Rows for every unit and method, unit by unit, each with its unit (`schema.UNIT_KEYS`); a
        unit already finished by an earlier run with the same settings is read back from --out
        instead of being computed again."""
        key = self.results_key()
        rows = []
        for forget_classes in tqdm(units, desc="forget sets", disable=not self.config.progress):
            paths = {m: store.unit_path(self.config.out, m, forget_classes) for m in methods}
            done = {m: store.read_unit(path, key, m) for m, path in paths.items()}
            for method, path in paths.items():
                if done[method] is None and path.exists():
                    print(f"note: {path} was computed from other data, checkpoint or settings (or is not a "
                          f"result file); computing it again", file=sys.stderr)
            todo = [m for m in methods if done[m] is None]
            if todo:
                _ = self.original  # trained (or read) here: a NaN loss in it is the original model's, not this unit's
                try:
                    new = self.run_unit(forget_classes, todo)
                except NonFiniteLossError as error:
                    raise UserError(f"stopped, forgetting classes {forget_classes}: {error}; "
                                    f"try a smaller --unlearn-scale-lr or --lr") from None
                for method, row in new.items():
                    store.write_unit(paths[method], key, row)
                done.update(new)
            unit = forget_classes if self.config.multi_class else forget_classes[0]
            rows += [{schema.UNIT_KEYS[self.config.multi_class]: unit, **done[m]} for m in methods]
        return rows
