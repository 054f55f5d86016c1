"""Hyperparameter search for anti-sample unlearning on a new model or data set, with Optuna, and
without the test set (`tune_unlearning.py` is its command line).

- **Data.** `VALIDATION_PERCENT` of each class's training samples is held out (seeded,
  stratified); the test split is dropped unread when the data are loaded. The rest trains the
  tuning original model (its last epoch: no selection on any held-out data) and supplies the
  retain subset and the far-neighbour pool, exactly as a run's training data would.
- **A trial.** For each tuning class, a copy of that model forgets the class with
  `anti_sample.unlearn` (the API every run goes through) at the trial's hyperparameters; after
  each unlearning epoch it is scored on the validation split and the score is reported to Optuna
  (`step`); after each class but the last, Optuna's median pruner stops a trial that falls behind.
- **The score** (maximised; `score`): a trial *forgets* when, for every tuning class, the
  accuracy on all of that class's samples the tuner may see (its training samples and its
  validation ones) is at most `FORGET_TOLERANCE_PERCENT` (a retrained model scores 0 there: it
  never learnt the class). A trial that forgets scores its mean retain accuracy on the validation
  split; one that does not scores minus its worst forget accuracy, so it ranks below every trial
  that forgets.
- **The first trial** is the paper's row for the model and data set, or the paper's ResNet18
  row for the data set's paper counterpart (`DatasetSpec.hparams_as`) when the model is not one
  of the paper's: never a row tuned by this project.
- **Storage.** The study lives in an Optuna storage URL (default: SQLite in --out), so a killed
  run resumes and several processes can share one study.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from torch import nn

import hparams
from anti_sample import AntiSampleParams, ForgetTargetWarning, UnlearnRecord, unlearn
from datasets import Split, get_dataset_spec, split_off_validation
from errors import UserError, first_line
from experiment import Experiment, RunConfig, RunData, load_run_data
from seeding import make_generator
from train_utils import NonFiniteLossError, evaluate

VALIDATION_PERCENT = 10  # of each class's training samples, held out to score trials
# Forget-class accuracy a trial may leave and still forget (2 of mnist5k's 400 digits per class).
# The class's training samples count too: on its 40 validation samples alone, a row that just
# forgot the tuning classes left 2-7 % on others (README "Tuning").
FORGET_TOLERANCE_PERCENT = hparams.FORGOTTEN_PERCENT
DEFAULT_TUNING_CLASSES = 3  # forget classes each trial unlearns, spread over the labels
HEARTBEAT_SECONDS = 10  # a trial whose process stops beating for 2x this is failed and retried
STORAGE_ATTEMPTS = 6  # tries to open a storage that other processes are creating at the same moment
PRUNER_STARTUP_TRIALS = 5  # trials that run to the end before the pruner compares
# The searched fields of hparams.RunHparams (their `search` in hparams.FIELDS): (kind, low, high, log
# scale). Each range holds every row of the paper's tables; no_generated_data only matters with the
# convex combination.
SEARCH_SPACE: dict[str, tuple] = {field.name: (field.check.kind, *field.search)
                                  for field in hparams.FIELDS if field.search is not None}


def default_classes(num_classes: int, count: int = DEFAULT_TUNING_CLASSES) -> list[int]:
    """`count` classes spread over the labels: the middle of each of `count` equal ranges."""
    return sorted({(2 * i + 1) * num_classes // (2 * count) for i in range(min(count, num_classes))})


def start_row(model: str, dataset: str, retain_percent: float) -> hparams.RunHparams:
    """The first trial: the paper's row for (model, data set), else its ResNet18 row for the
    data set's paper counterpart (mnist5k: MNIST). Never hparams.SMALL_CNN_ROW or another row of ours.
    The tuning original model trains as the model's own row says (epochs, lr, batch size)."""
    paper_dataset = get_dataset_spec(dataset).hparams_as
    paper_model = model if (model, paper_dataset) in hparams.CONFIG_TABLE else "ResNet18"
    training = hparams.resolve(model, paper_dataset, retain_percent)
    return dataclasses.replace(hparams.resolve(paper_model, paper_dataset, retain_percent), epochs=training.epochs,
                               lr=training.lr, batch_size=training.batch_size)


def searched(row: hparams.RunHparams) -> dict[str, Any]:
    """The searched fields of `row`, as Optuna parameters (g only with the convex combination)."""
    values = {name: getattr(row, name) for name in SEARCH_SPACE}
    if not row.convex_combination:
        del values["no_generated_data"]
    return values


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """The trial's values of SEARCH_SPACE."""
    values = {}
    for name, (kind, *bounds) in SEARCH_SPACE.items():
        if name == "no_generated_data" and not values["convex_combination"]:
            continue
        if kind == "bool":
            values[name] = trial.suggest_categorical(name, [True, False])
        else:
            low, high, log = bounds
            suggest_number = trial.suggest_int if kind == "int" else trial.suggest_float
            values[name] = suggest_number(name, low, high, log=log)
    return values


def score(retain_percent: list[float], forget_percent: list[float]) -> float:
    """The validation score of per-class accuracies (see the module docstring): the mean retain
    accuracy if the worst forget accuracy is within FORGET_TOLERANCE_PERCENT, else minus it."""
    worst = max(forget_percent)
    return sum(retain_percent) / len(retain_percent) if worst <= FORGET_TOLERANCE_PERCENT else -worst


def step(class_index: int, epoch: int, epochs: int, span: int = hparams.MAX_SEARCHED_UNLEARN_EPOCHS) -> int:
    """Where epoch `epoch` of `epochs` (at most `span`) on the `class_index`-th tuning class is
    reported: by its share of the schedule, so the end of each class is the same step, span x (index
    + 1), in every trial, and no two epochs share a step. The pruner looks only there: trials are
    compared on finished classes. (With a forget target the schedule is the cap and `span` at least
    the cap; a class that stops earlier reports its end too.)"""
    return class_index * span + math.ceil(epoch * span / epochs)


def tuning_data(config: RunConfig) -> RunData:
    """The run's training data, less the validation split held out of it, and the validation split as
    the 'test' split the experiment evaluates on; the real test split is dropped when loaded."""
    train, _, key = load_run_data(config)  # the test split: never read
    rest, validation = split_off_validation(train, VALIDATION_PERCENT, make_generator(config.seed, "validation"))
    return RunData(rest, validation, f"{key}:less-{VALIDATION_PERCENT}%-validation")


@dataclass
class Tuner:
    """The objective of a study: `tuner(trial)` unlearns each tuning class at the trial's values. The
    experiment's data are `tuning_data`; its original model trains on them (last epoch)."""
    experiment: Experiment
    classes: list[int]

    def row(self, values: dict[str, Any]) -> hparams.RunHparams:
        """The run's hyperparameters with the searched `values` (with a forget target, a cap given
        below the trial's unlearn_epochs is raised to them)."""
        base = self.experiment.config.hparams
        cap = base.max_unlearn_epochs
        if cap is not None:
            cap = max(cap, values.get("unlearn_epochs", base.unlearn_epochs))
        return dataclasses.replace(base, **values, max_unlearn_epochs=cap)

    @property
    def span(self) -> int:
        """Steps per tuning class (`step`): the longest schedule any trial of the study can run."""
        base = self.experiment.config.hparams
        if base.forget_target is None:
            return hparams.MAX_SEARCHED_UNLEARN_EPOCHS
        return max(hparams.MAX_SEARCHED_UNLEARN_EPOCHS,
                   hparams.epoch_cap(hparams.MAX_SEARCHED_UNLEARN_EPOCHS, base.max_unlearn_epochs))

    def unlearn_class(self, forget_class: int, params: AntiSampleParams,
                      after_epoch: Callable[[int, nn.Module], None] | None = None) -> tuple[nn.Module, UnlearnRecord]:
        """A copy of the tuning original after unlearning `forget_class` at `params`, and its record;
        `after_epoch(epoch, model)` is called after every epoch on retain data + anti-samples."""
        e = self.experiment
        inputs = e.unlearn_inputs([forget_class])
        model = e.model_from(e.original.state)
        with warnings.catch_warnings():  # a trial that misses the forget target scores so; no warning
            warnings.simplefilter("ignore", ForgetTargetWarning)
            _, record = unlearn(model, inputs.forget, inputs.retain, inputs.pool, params, generator=inputs.generator,
                                noise_generator=inputs.device_generator, progress=False, speed=inputs.speed,
                                after_epoch=None if after_epoch is None else lambda epoch: after_epoch(epoch, model))
        return model, record

    def scored(self, forget_class: int) -> Split:
        """What a trial is scored on: the validation split (the experiment's test data) and the forget
        class's training samples. Retain accuracy is over validation samples only (the retain subset
        was trained on), forget accuracy over every sample of the class the tuner may see (the
        retrained model's is 0 on both)."""
        return Split.join(self.experiment.test_data, self.experiment.train_data.of_classes([forget_class]))

    def __call__(self, trial: optuna.Trial) -> float:
        row = self.row(suggest(trial))
        params = AntiSampleParams.from_run(row, unlearn_mode=self.experiment.config.unlearn_mode)
        schedule = row.unlearn_epochs if row.forget_target is None else params.epoch_cap
        span = self.span
        retain, forget, reported = [], [], set()

        def report(value: float, at: int) -> None:
            trial.report(value, at)
            reported.add(at)
        for index, forget_class in enumerate(self.classes):
            scored = self.scored(forget_class)

            def after_epoch(epoch: int, model: nn.Module) -> None:
                accuracies = evaluate(model, scored, [forget_class])
                report(score(retain + [accuracies["retain"]], forget + [accuracies["forget"]]),
                       step(index, epoch, schedule, span))
            try:
                model, _ = self.unlearn_class(forget_class, params, after_epoch)
            except NonFiniteLossError as error:
                trial.set_user_attr("stopped", str(error))
                raise optuna.TrialPruned() from None
            accuracies = evaluate(model, scored, [forget_class])
            retain.append(accuracies["retain"])
            forget.append(accuracies["forget"])
            if step(index, schedule, schedule, span) not in reported:  # stopped at the forget target before the cap
                report(score(retain, forget), step(index, schedule, schedule, span))
            if index + 1 < len(self.classes) and trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("retain_validation_percent", retain)
        trial.set_user_attr("forget_seen_percent", forget)
        return score(retain, forget)


# ----------------------------------------------------------------------------------------------
# Studies


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _in_memory(storage_url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        url = make_url(storage_url)
    except ArgumentError:
        return False  # RDBStorage names what is wrong with it
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def open_storage(storage_url: str) -> optuna.storages.RDBStorage:
    """The Optuna storage at `storage_url` (opened before the tuning original trains, so a bad URL
    is refused at once), with heartbeats so a trial whose process died is retried once."""
    if _in_memory(storage_url):
        raise UserError(f"--storage {storage_url} is an in-memory database: the study would end with this process "
                        f"and could not be continued; give a file, e.g. sqlite:///study.db")
    # SQLAlchemy logs a traceback when Ctrl-C interrupts a query; the interruption is reported in one line
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    from sqlalchemy.exc import IntegrityError, OperationalError
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            _refuse_foreign_tables(storage_url)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats and their retry
                return optuna.storages.RDBStorage(
                    storage_url, heartbeat_interval=HEARTBEAT_SECONDS,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except UserError:
            raise
        except (OperationalError, IntegrityError) as error:
            # processes started together on a new storage race to create Optuna's tables ("table ...
            # already exists", "database is locked"): the losers wait and open what the winner made
            if attempt + 1 == STORAGE_ATTEMPTS:
                raise UserError(f"--storage {storage_url} cannot be opened ({first_line(error)})") from None
            time.sleep(0.2 * (attempt + 1) * (1 + random.random()))
        except Exception as error:  # SQLAlchemy's errors for bad URLs, missing drivers, unreachable servers
            raise UserError(f"--storage {storage_url} cannot be opened ({first_line(error)})") from None


def _refuse_foreign_tables(storage_url: str) -> None:
    """Refuse a database that holds tables Optuna did not make (another application's SQLite file,
    say): Optuna would add its own to it without a word."""
    import sqlalchemy
    from optuna.storages._rdb.models import BaseModel  # Optuna's schema: the tables it makes

    engine = sqlalchemy.create_engine(storage_url)
    try:
        foreign = sorted(set(sqlalchemy.inspect(engine).get_table_names()) - set(BaseModel.metadata.tables)
                         - {"alembic_version"})
    finally:
        engine.dispose()
    if foreign:
        raise UserError(f"--storage {storage_url} holds tables that are not Optuna's ({', '.join(foreign[:3])}); "
                        f"give a new file or an Optuna study database")


def open_study(storage: optuna.storages.RDBStorage, study_name: str, settings_key: str, seed: int) -> optuna.Study:
    """The study `study_name` in `storage`, created if new. A study made with other settings
    (data, model, seed, classes, ...) is refused rather than mixed with."""
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if study_name in existing and existing[study_name].user_attrs.get("settings") != settings_key:
        raise UserError(f"study {study_name!r} in {storage.url} was tuned with other settings (data, model, seed, "
                        f"classes or protocol); give another --study-name, or the flags it was started with")
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS))
    study.set_user_attr("settings", settings_key)
    # seeded by the trials already there, so a resumed or second process does not repeat the first's draws
    # (modulo 2^32: numpy's seed range, which --seed's largest values would leave after a few trials)
    study.sampler = optuna.samplers.TPESampler(seed=(seed + len(study.get_trials(deepcopy=False))) % 2 ** 32)
    return study


def enqueue_start(study: optuna.Study, values: dict[str, Any]) -> None:
    """Queue the start row as a trial unless the study has finished, queued or is running it."""
    states = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    if not any(t.params == values or t.system_attrs.get("fixed_params") == values
               for t in study.get_trials(deepcopy=False, states=states)):
        study.enqueue_trial(values)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class _QuietInterruption(logging.Filter):
    """Optuna logs a trial that Ctrl-C or SIGTERM stopped (failed, so a rerun retries it) with a
    traceback; the entry script reports the interruption in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def optimise(study: optuna.Study, tuner: Tuner, trials: int, timeout_seconds: float | None,
             after_trial: Callable[[optuna.Study], None] = lambda study: None) -> None:
    """Add trials until the study has `trials` finished ones (from any process), or the timeout."""
    remaining = trials - finished_count(study)
    if remaining <= 0:
        return
    trial_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietInterruption) for f in trial_log.filters):
        trial_log.addFilter(_QuietInterruption())
    stop = optuna.study.MaxTrialsCallback(trials, states=FINISHED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
        study.optimize(tuner, n_trials=remaining, timeout=timeout_seconds, gc_after_trial=False,
                       callbacks=[stop, lambda study, trial: after_trial(study)])


# ----------------------------------------------------------------------------------------------
# Results


def hparams_file(trial: optuna.trial.FrozenTrial, tuner: Tuner) -> dict[str, Any]:
    """best_hparams.json: the trial's searched values, and the forget target (with the cap the trial
    ran, `Tuner.row`) and repair epochs every trial ran with (also null and 0, so a model whose own
    row has them runs what the trials ran)."""
    row = tuner.row(trial.params)
    fixed = {"forget_target": row.forget_target, "repair_epochs": row.repair_epochs}
    if row.forget_target is not None and row.max_unlearn_epochs is not None:
        fixed["max_unlearn_epochs"] = row.max_unlearn_epochs
    return {**trial.params, **fixed}


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best completed trial, or None before one completes. Its params are a hyperparameter file
    (`hparams.read_file`; no_generated_data only where the convex combination uses it)."""
    try:
        return study.best_trial
    except ValueError:
        return None


def summary(study: optuna.Study, start: dict[str, Any], config: RunConfig, classes: list[int],
            seconds: float) -> dict[str, Any]:
    """What tuning.json holds: the settings, the start and the best trial with their accuracies
    (retain: validation; forget: the class's training and validation samples), the trial counts."""
    trials = study.get_trials(deepcopy=False)

    def describe(trial) -> dict[str, Any] | None:
        if trial is None:
            return None
        return {"number": trial.number, "state": trial.state.name, "score": trial.value, "params": trial.params,
                "retain_validation_percent": trial.user_attrs.get("retain_validation_percent"),
                "forget_seen_percent": trial.user_attrs.get("forget_seen_percent")}
    start_trial = next((t for t in trials if t.params == start and t.state in FINISHED), None)
    return {"study": study.study_name, "classes": classes, "validation_percent": VALIDATION_PERCENT,
            "forget_tolerance_percent": FORGET_TOLERANCE_PERCENT, "seconds_this_process": seconds,
            "trials": {state.name.lower(): sum(t.state == state for t in trials)
                       for state in optuna.trial.TrialState},
            "start": describe(start_trial), "best": describe(best_trial(study)),
            "config": config.to_dict()}


def write_plots(study: optuna.Study, out: Path) -> list[str]:
    """Optuna's matplotlib plots as PNG; a notice for each that cannot be drawn yet (too few trials)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    notices = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental API; few-trial caveats of importances and axis limits
        for name, plot in [("optimization_history", plots.plot_optimization_history),
                           ("param_importances", plots.plot_param_importances), ("slice", plots.plot_slice)]:
            try:
                axes = plot(study)
                figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
                figure.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(figure)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                notices.append(f"{name}.png skipped ({first_line(error)})")
    return notices
