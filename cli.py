"""The entry scripts' front door: one resolver from parsed flags (`flags.py`) to a `RunConfig` for all
three scripts, their default results folder, and `guarded`, the wrapper that turns every mistake
a user can fix into one line on stderr and exit status 2. `main` is the unlearning scripts' edge:
it runs the units (`distributed.run`), writes the results and prints the tables.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

import hparams
import report
import seeds
import units
from anti_sample import ForgetTargetWarning
from datasets import DatasetSpec, get_dataset_spec
from devices import resolve_device
from distributed import run
from errors import UserError
from experiment import RunConfig
from methods import TARGETED_BASELINES, check_methods
from models import resolve_pretrained
from train_utils import NonFiniteLossError, Speed

# ----------------------------------------------------------------------------------------------
# Flags to a RunConfig


def resolve_config(args: argparse.Namespace, multi_class: bool = False, kind: str | None = None,
                   row: hparams.RunHparams | None = None, **fixed: Any) -> RunConfig:
    """The run's configuration from its flags. Hyperparameters: `row` (default: the model's row in
    hparams.py, then --hparams FILE), then each hyperparameter flag given. `kind` names the default
    --out (`results_folder`). `fixed`: RunConfig fields a script sets itself, for the flags it does not
    have (the tuner's: no checkpoint, no retrained models, no MIA, ...)."""
    spec = check_dataset(args)
    pretrained = resolve_pretrained(args.model, args.pretrained)  # also validates the model name
    if row is None:
        row = hparams.resolve(args.model, spec.hparams_as, args.retain_percent, multi_class)
        if args.hparams is not None:
            row = replace(row, **hparams.read_file(args.hparams))
    device = resolve_device(args.device)

    def flag(name: str) -> Any:
        return fixed[name] if name in fixed else getattr(args, name)
    return RunConfig(
        dataset=args.dataset, model=args.model, retain_percent=float(args.retain_percent),  # 30 and 30.0: one key
        multi_class=multi_class, data_root=args.data_root, max_per_class=args.max_per_class,
        device=str(device), seed=args.seed, out=results_folder(args, multi_class, kind),
        cache_dir=args.cache_dir, checkpoint=flag("checkpoint"), retrain=flag("retrain"), pretrained=pretrained,
        progress=args.progress, dist_timeout_minutes=flag("dist_timeout_minutes"), mia=flag("mia"),
        methods=check_methods(flag("methods")), hparams=with_flags(row, args),
        unlearn_mode=args.unlearn_mode, neighbour_pool=args.neighbour_pool,
        select=flag("select") or ("last" if args.model in hparams.OUR_MODELS else "best-test"),
        speed=resolve_speed(args, device), baseline_forget_target=check_baseline_target(flag("baseline_forget_target"),
                                                                                        flag("methods")))


def check_baseline_target(target: float | None, methods: list[str]) -> float | None:
    """--baseline-forget-target, refused when --methods has no baseline it applies to."""
    if target is not None and not set(methods) & set(TARGETED_BASELINES):
        raise UserError(f"--baseline-forget-target applies to {', '.join(TARGETED_BASELINES)}; --methods has none "
                        f"of them (anti_sample's own target is --forget-target)")
    return target


def run_kind(args: argparse.Namespace, multi_class: bool) -> str:
    """single_class, or multi_class_k<K> with K the classes of --forget-classes or --num-forget-classes."""
    if not multi_class:
        return "single_class"
    k = len(args.forget_classes) if args.forget_classes is not None else units.num_forget_classes(args)
    return f"multi_class_k{k}"


def results_folder(args: argparse.Namespace, multi_class: bool = False, kind: str | None = None) -> str:
    """--out, or results/<dataset>/<model>/<kind>_<percent>, the kind by default `run_kind`'s."""
    kind = kind or run_kind(args, multi_class)
    return args.out or f"results/{args.dataset}/{args.model}/{kind}_{args.retain_percent:g}"


def with_flags(row: hparams.RunHparams, args: argparse.Namespace) -> hparams.RunHparams:
    """`row` with every hyperparameter flag that was given (a flag left out is not in `args`)."""
    row = replace(row, **{field.name: getattr(args, field.name) for field in hparams.FIELDS
                          if hasattr(args, field.name)})
    if not row.lr * row.unlearn_scale_lr <= hparams.FLOAT32_MAX:  # the unlearning lr, a float32 in fused Adam
        raise UserError(f"--lr {row.lr:g} x --unlearn-scale-lr {row.unlearn_scale_lr:g}, the unlearning learning rate, "
                        f"is beyond float32's range; give smaller values")
    return row


def check_dataset(args: argparse.Namespace) -> DatasetSpec:
    """The --dataset's spec, after refusing a --data-root for the embedded data set."""
    spec = get_dataset_spec(args.dataset)
    if args.data_root is not None and not spec.needs_network:
        raise UserError(f"--data-root does not apply to {args.dataset}, which is embedded (no files to point at); "
                        f"leave it out or choose another --dataset")
    return spec


def resolve_speed(args: argparse.Namespace, device: torch.device) -> Speed:
    """The speed flags, checked: CUDA only, and --compile not with --cuda-graph."""
    cuda = device.type == "cuda"
    chosen = [flag for flag, on in [("--fused-adam", args.fused_adam), ("--cuda-graph", args.cuda_graph),
                                    ("--bf16", args.bf16), ("--compile", args.compile)] if on]
    if chosen and not cuda:
        raise UserError(f"{chosen[0]} needs a CUDA device (--device cuda); the CPU runs the plain loop")
    if args.cuda_graph and args.compile:
        raise UserError("--compile and --cuda-graph do not combine; choose one")
    default = Speed.default_for(device)
    cuda_graph = default.cuda_graph and not args.compile if args.cuda_graph is None else args.cuda_graph
    return Speed(fused_adam=default.fused_adam if args.fused_adam is None else args.fused_adam,
                 cuda_graph=cuda_graph, bf16=args.bf16, compile=args.compile)


def check_writable_folder(path: Path, flag: str) -> None:
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {path} is a link to {os.readlink(path)}, which does not exist; give a folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"{flag} {path} is not writable ({error.strerror}); give another folder") from None


def report_failure(prog: str, error: BaseException, resumes: str) -> int | None:
    """For a failure the user can act on, print it as one line on stderr and return the exit status;
    None for any other error (the caller re-raises it). `resumes` says what a rerun of the same
    command keeps after Ctrl-C."""
    if isinstance(error, UserError):
        message, status = f"error: {error}", 2
    elif isinstance(error, NonFiniteLossError):  # while training an original or retrained model
        message, status = f"error: stopped: {error}; try a smaller --lr", 2
    elif isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:  # any path flag
        message, status = (f"error: a path is too long for the file system ({error.strerror}): "
                           f"{str(error.filename)[:80]}...; give a shorter one"), 2
    elif isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        message, status = (f"error: no space left to write {error.filename or 'results'} ({error.strerror}); free "
                           f"some space or choose another --out / --cache-dir, then run the same command again"), 1
    elif isinstance(error, Terminated):
        message, status = f"terminated (SIGTERM); {resumes}", 128 + signal.SIGTERM
    elif isinstance(error, KeyboardInterrupt):
        message, status = f"interrupted; {resumes}", 130
    else:
        return None
    lead = "\n" if status == 130 else ""  # Ctrl-C: below the ^C the terminal echoed
    print(f"{lead}{prog}: {message}", file=sys.stderr)
    return status


def one_line_warning(show_warning):
    """`warnings.showwarning` that prints a `ForgetTargetWarning` as one line on stderr (a missed
    forget target is a result, not a fault in the code) and leaves others to `show_warning`."""
    def show(message, category, *args, **kwargs):
        if issubclass(category, ForgetTargetWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            show_warning(message, category, *args, **kwargs)
    return show


def prepare_folders(config: RunConfig) -> None:
    check_writable_folder(Path(config.out), "--out")
    check_writable_folder(Path(config.cache_dir), "--cache-dir")


def print_config(config: RunConfig, **extra: Any) -> None:
    """--print-config: the resolved configuration (and `extra` settings of the script) as JSON."""
    print(json.dumps({**config.to_dict(), **extra}, indent=2))


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill`, `timeout` and schedulers send), raised where the process is, as Ctrl-C's
    KeyboardInterrupt is: the same clean stop (Optuna fails the running trial, so a rerun retries it)."""


def _terminate(signum, frame):
    raise Terminated()


def guarded(prog: str, resumes: str, work: Callable[[], int]) -> int:
    """`work()`'s exit status. A failure the user can act on is one line on stderr with its status
    (`report_failure`; `resumes` says what a rerun keeps after Ctrl-C or SIGTERM); a missed forget
    target is a one-line warning. Anything else is raised."""
    show_warning = warnings.showwarning
    warnings.showwarning = one_line_warning(show_warning)
    on_sigterm = signal.signal(signal.SIGTERM, _terminate)
    try:
        return work()
    except (UserError, NonFiniteLossError, OSError, KeyboardInterrupt) as error:
        status = report_failure(prog, error, resumes)
        if status is None:
            raise
        return status
    finally:
        warnings.showwarning = show_warning
        signal.signal(signal.SIGTERM, on_sigterm)


# ----------------------------------------------------------------------------------------------
# The unlearning scripts' main


def title(config: RunConfig) -> str:
    return f"{config.dataset} / {config.model}, Unlearning-{config.retain_percent:g}"


def write_run(config: RunConfig, experiment, summary: dict[str, Any], forget_sets: list[list[int]]) -> None:
    """A run's files in its --out: summary.json, summary.csv, comparison.md, plots, anti_samples.png."""
    out = Path(config.out)
    for notice in report.write_results(out, summary):
        print(f"note: {notice}", file=sys.stderr)
    if "anti_sample" in config.methods:
        report.plot_anti_samples(*experiment.anti_sample_examples(forget_sets[0][0]), experiment.spec.mean,
                                 experiment.spec.std, out / "anti_samples.png")


def main(parser: argparse.ArgumentParser, argv: list[str], multi_class: bool, choose_units) -> int:
    """Parse flags, run every unit, write the results and print the table. `choose_units(args,
    spec)` gives the forget sets. Exit status 2 with a one-line message for anything the user
    can fix."""
    args = parser.parse_args(argv)

    def work() -> int:
        config = resolve_config(args, multi_class)
        seed_list = seeds.parse_seeds(args.seeds, config.seed) if args.seeds is not None else None
        if seed_list is not None:  # the first seed draws the forget sets every seed forgets
            args.seed, config = seed_list[0], replace(config, seed=seed_list[0])
        if args.print_config:
            print_config(config, **({"seeds": seed_list} if seed_list else {}))
            return 0
        prepare_folders(config)
        forget_sets = choose_units(args, get_dataset_spec(config.dataset))
        if seed_list is None:
            experiment, summary = run(config, forget_sets)
            if summary is None:  # a torchrun rank other than 0: its share is saved in --out
                return 0
            write_run(config, experiment, summary, forget_sets)
            for method in config.methods:
                print(f"{title(config)}, {method} (accuracy on the test set, %):")
                print(report.format_table(summary, method))
            print(report.protocol_line(summary))
            print(f"wrote summary.json, summary.csv, comparison.md and plots in {config.out}")
            return 0
        summaries = seeds.run_seeds(config, forget_sets, seed_list,
                                    lambda seed_config, experiment, summary: write_run(seed_config, experiment,
                                                                                       summary, forget_sets))
        if summaries is None:
            return 0
        top = seeds.over_seeds(summaries)
        for notice in seeds.write_seed_results(Path(config.out), top):
            print(f"note: {notice}", file=sys.stderr)
        for method in config.methods:
            print(f"{title(config)}, {method} over seeds {','.join(map(str, seed_list))} (accuracy on the test set, "
                  f"%; each seed's mean over its forget sets, then mean ± sample std over the seeds):")
            print(report.format_seed_table(top, method))
        print(report.protocol_line(summaries[seed_list[0]]))
        print(f"wrote summary.json, comparison.md and retain_forget.png over the seeds in {config.out}, and each "
              f"seed's files in {config.out}/seed_<seed>")
        return 0
    return guarded(parser.prog, "finished models and classes are saved, so the same command resumes from there", work)
