#!/usr/bin/env python3
"""Find anti-sample hyperparameters for a model and data set with Optuna, scored on a validation
split held out of the training data: the test set is never read (tuning.py says how).

Writes <out>/best_hparams.json (give it to either unlearning script with --hparams, or to
anti_sample.AntiSampleParams.from_file), trials.csv, tuning.json and Optuna's plots. The study
lives in --storage (default: SQLite in --out): the same command run again continues it, and
several processes given one --storage add trials to one study. With no flags it tunes SmallCNN
on the embedded mnist5k digits.
"""
import argparse
import sys
from pathlib import Path

import optuna
from tqdm.auto import tqdm

import cli
import flags
import tuning
import units
from devices import Stopwatch
from distributed import DIST_TIMEOUT_MINUTES
from experiment import Experiment, RunConfig
from store import fingerprint, write_json, write_text

dataset_name = "mnist5k"
model_name = "SmallCNN"
retain_data_percent = 30
DEFAULT_TRIALS = 100


def get_args_parser() -> argparse.ArgumentParser:
    parser = flags.OneLineErrorParser(description=__doc__)
    run = parser.add_argument_group("run")
    flags.add_data_flags(run, dataset_name, model_name, retain_data_percent)
    run.add_argument("--out", default=None, help="results folder (default: results/<dataset>/<model>/tuning_<percent>)")
    flags.add_forget_classes_flag(run, f"the classes each trial forgets, e.g. 0,3 (default: "
                                       f"{tuning.DEFAULT_TUNING_CLASSES} spread over the labels)")
    study = parser.add_argument_group("study")
    study.add_argument("--trials", type=flags.checked(flags.AT_LEAST_ONE), default=DEFAULT_TRIALS,
                       help="finished (completed or pruned) trials the study should hold, counting earlier runs "
                            "and other processes; a rerun adds only the missing ones")
    study.add_argument("--timeout", type=flags.checked(flags.POSITIVE), default=None, metavar="SECONDS",
                       help="start no new trial after this many seconds of this process (default: no limit)")
    study.add_argument("--storage", default=None, metavar="URL",
                       help="Optuna storage URL, e.g. sqlite:///study.db or postgresql://host/db "
                            "(default: sqlite:///<out>/study.db)")
    study.add_argument("--study-name", default=None, help="the study's name (default: <dataset>-<model>-<percent>)")
    flags.add_protocol_flags(parser)
    flags.add_speed_flags(parser)
    where = flags.default_row_note(dataset_name, model_name, retain_data_percent)
    default_row = tuning.start_row(model_name, dataset_name, retain_data_percent)
    training = parser.add_argument_group("the tuning original model", "default: the model's row in hparams.py")
    flags.add_hparam_flags(training, ("training",), default_row, where)
    ours = parser.add_argument_group("unlearn until forgotten, and repair", "every trial runs with these (not "
                                                                          "searched), and best_hparams.json keeps them")
    flags.add_hparam_flags(ours, ("ours",), default_row, where)
    return parser


def resolve(args: argparse.Namespace) -> tuple[RunConfig, list[int]]:
    """The tuning run's config (the start row as its hyperparameters) and tuning classes."""
    spec = cli.check_dataset(args)
    config = cli.resolve_config(args, kind="tuning", row=tuning.start_row(args.model, args.dataset, args.retain_percent),
                                checkpoint=None, retrain=False, mia=False, methods=["anti_sample"], select="last",
                                baseline_forget_target=None,
                                dist_timeout_minutes=DIST_TIMEOUT_MINUTES)
    classes = units.check_classes(args.forget_classes if args.forget_classes is not None
                                  else tuning.default_classes(spec.num_classes), spec.num_classes, "--forget-classes")
    return config, classes


def describe(trial: dict | None) -> str:
    if trial is None:
        return "no finished trial"
    if trial["retain_validation_percent"] is None:
        return f"trial {trial['number']} ({trial['state'].lower()})"
    retain, forget = trial["retain_validation_percent"], trial["forget_seen_percent"]
    params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial["params"].items())
    return (f"trial {trial['number']}: score {trial['score']:.2f}, retain {sum(retain) / len(retain):.2f}% "
            f"(validation, mean), forget {max(forget):.2f}% (training + validation, worst); {params}")


def main(argv: list[str]) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING if args.progress else optuna.logging.INFO)

    def work() -> int:
        config, classes = resolve(args)
        if args.print_config:
            cli.print_config(config, tuning_classes=classes)
            return 0
        cli.prepare_folders(config)
        out = Path(config.out)
        storage = tuning.open_storage(args.storage or f"sqlite:///{out / 'study.db'}")
        experiment = Experiment(config, tuning.tuning_data(config))
        _ = experiment.original  # trained (or read from the cache) before the first trial
        name = args.study_name or f"{config.dataset}-{config.model}-{config.retain_percent:g}"
        key = fingerprint({"results": experiment.results_key(), "classes": classes,
                           "objective": [tuning.VALIDATION_PERCENT, tuning.FORGET_TOLERANCE_PERCENT]})
        study = tuning.open_study(storage, name, key, config.seed)
        start = tuning.searched(config.hparams)
        tuning.enqueue_start(study, start)
        bar = tqdm(total=args.trials, initial=tuning.finished_count(study), desc="trials", disable=not args.progress)

        def after_trial(study: optuna.Study) -> None:
            bar.n = tuning.finished_count(study)
            best = tuning.best_trial(study)
            bar.set_postfix(best=f"{best.value:.2f}" if best is not None else "-")

        tuner = tuning.Tuner(experiment, classes)
        with Stopwatch() as clock:
            tuning.optimise(study, tuner, args.trials, args.timeout, after_trial)
        bar.close()
        summary = tuning.summary(study, start, config, classes, clock.seconds)
        best = tuning.best_trial(study)
        if best is not None:
            write_json(out / "best_hparams.json", tuning.hparams_file(best, tuner))
        write_json(out / "tuning.json", summary)
        write_text(out / "trials.csv", study.trials_dataframe().to_csv(index=False))
        for notice in tuning.write_plots(study, out):
            print(f"note: {notice}", file=sys.stderr)
        counts = summary["trials"]
        print(f"{config.dataset} / {config.model}, Unlearning-{config.retain_percent:g}, tuned on classes {classes} "
              f"({counts['complete']} complete, {counts['pruned']} pruned trials in study {name!r}):")
        print(f"  start (the paper's row): {describe(summary['start'])}")
        print(f"  best:                    {describe(summary['best'])}")
        if best is None:
            print("no trial completed; run more trials (--trials, --timeout)")
            return 1
        print(f"wrote best_hparams.json, tuning.json, trials.csv and plots in {out}; use them with "
              f"./single_class_unlearning.py --dataset {config.dataset} --model {config.model} "
              f"--hparams {out / 'best_hparams.json'}")
        return 0
    return cli.guarded(parser.prog, "finished trials are in the study, so the same command continues it", work)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
