"""The entry scripts' command line: flags, their checking, and `main`, the edge that writes and
prints (`experiment.py` is the pipeline it runs, `units.py` chooses the forget sets).

`main` turns every mistake a user can fix into one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import tempfile
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

import hparams
import report
import units
from anti_sample import UNLEARN_MODES, ForgetTargetWarning
from datasets import ARCHIVE_FORMATS, DATASETS, DatasetSpec, get_dataset_spec
from errors import UserError
from devices import resolve_device
from distributed import DIST_TIMEOUT_MINUTES, run
from experiment import NEIGHBOUR_POOLS, SELECTIONS, RunConfig
from methods import METHODS, check_methods
from models import list_models, resolve_pretrained
from metrics import SELECT_FRACTION
from seeding import DEFAULT_SEED
from train_utils import NonFiniteLossError, Speed

# ----------------------------------------------------------------------------------------------
# Flags


def parse_classes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids like 0,3,7, got {text!r}")


def whole_number(text: str) -> int:
    """An integer, also when written as 1e3 or 5.0."""
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value.is_integer():
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        return int(value)


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def is_zero(text: str) -> bool:
    """Zero however it is written: 0, 0.0, 00, 0e0, -0 ..."""
    try:
        return float(text) == 0
    except ValueError:
        return False


def non_negative_int(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    if is_zero(text):
        return 0.0
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}") from None


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
    """k: none or 0 for the farthest, else a whole number >= 1."""
    if text.strip().lower() == "none":
        return 0
    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected none, 0 (both: the farthest) or a whole number >= 1, "
                                         f"got {text!r}") from None


def forget_target(text: str) -> float | str:
    """A percentage in [0, 100), or none (the fixed --unlearn-epochs; kept as "none" so that it
    overrides a table or file value, see `with_flags`)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 100:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected none or a percentage in [0, 100), got {text!r}")
    return value


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags end with one line naming the value and what is accepted, and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def get_args_parser(dataset: str, model: str, retain_percent: float, description: str,
                    multi_class: bool) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("run")
    add_data_flags(run, dataset, model, retain_percent)
    run.add_argument("--out", default=None,
                     help="results folder (default results/<dataset>/<model>/"
                          f"{'multi_class_k<K>' if multi_class else 'single_class'}_<percent>)")
    run.add_argument("--checkpoint", default=None,
                     help="use this trained original model (a checkpoint of this repository) "
                          "instead of training or loading one from the cache")
    run.add_argument("--no-retrain", action="store_true",
                     help="skip the retrained gold models (their columns are left empty)")
    run.add_argument("--methods", type=lambda text: [m for m in text.split(",") if m],
                     default=["anti_sample"],
                     help=f"comma-separated unlearning methods, run from the same original model "
                          f"and retain subset: {', '.join(METHODS)}")
    run.add_argument("--dist-timeout-minutes", type=positive_float, default=DIST_TIMEOUT_MINUTES,
                     help="under torchrun: how long a rank waits for the others (rank 0 trains the original "
                          "model while they wait; ranks that finish early wait for the slowest)")
    run.add_argument("--mia", action=argparse.BooleanOptionalAction, default=True,
                     help="measure membership-inference efficacy (SVC fits; slow on full CIFAR-10)")

    protocol = add_protocol_flags(parser)
    protocol.add_argument("--select", choices=SELECTIONS, default=None,
                          help=f"epoch kept of the original and retrained models: best-test is the "
                               f"authors' (best accuracy on a random {SELECT_FRACTION * 100:.0f}%% of the test set, "
                               f"drawn anew each epoch: it looks at test data), last is the final epoch (default: "
                               f"best-test for the paper's models, last for ours, {', '.join(hparams.OUR_MODELS)})")
    add_speed_flags(parser)

    hp = parser.add_argument_group(
        "hyperparameters", "default: the paper's table for the model and data set (hparams.py), then "
                           "--hparams FILE, then each flag below")
    hp.add_argument("--hparams", metavar="FILE", default=None,
                    help=f"a JSON object of hyperparameters, any of {', '.join(f.name for f in fields(hparams.RunHparams))} "
                         f"(e.g. tune_unlearning.py's best_hparams.json)")
    add_training_flags(hp)
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
    add_our_unlearning_flags(hp)
    return parser


def add_data_flags(group, dataset: str, model: str, retain_percent: float) -> None:
    """The data, model and run flags every entry script has (the unlearning scripts and the tuner)."""
    group.add_argument("--dataset", default=dataset, help=f"one of {', '.join(DATASETS)}")
    group.add_argument("--model", default=model, help=f"one of {', '.join(list_models())}")
    group.add_argument("--retain-percent", type=percent, default=retain_percent,
                       help="percentage of each retain class's training data the unlearner may use "
                            "(30: the paper's Unlearning-30, 100: Unlearning-100)")
    group.add_argument("--data-root", default=None,
                       help="where torchvision data sets live or are downloaded to (default ./data); "
                            f"for cifar10 also an image-folder tree or a {ARCHIVE_FORMATS} archive of one")
    group.add_argument("--max-per-class", type=positive_int, default=None,
                       help="use only the first N train and N test samples of each class (quick runs)")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="torch device for data and models")
    group.add_argument("--seed", type=whole_number, default=DEFAULT_SEED, help="seed of every random draw")
    group.add_argument("--cache-dir", default="checkpoints",
                       help="where trained original and retrained models are cached")
    group.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                       help="start ResNet18 / MobileNet_v2 from ImageNet weights (default: yes for "
                            "those two, as in the paper; the other models have none)")
    group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                       help="show progress bars")


def add_protocol_flags(parser: argparse.ArgumentParser):
    protocol = parser.add_argument_group(
        "protocol", "defaults follow the authors' code (PAPER.md); README \"Deviations\" measures the others")
    protocol.add_argument("--unlearn-mode", choices=UNLEARN_MODES, default="eval",
                          help="model mode while anti_sample fine-tunes: eval freezes BatchNorm's running "
                               "statistics (the authors'), train updates them; other methods keep their own")
    protocol.add_argument("--neighbour-pool", choices=NEIGHBOUR_POOLS, default="all",
                          help="where anti-samples' far neighbours are searched: all retain-class training "
                               "data (the authors', also at Unlearning-30) or only the retain subset")
    return protocol


def add_speed_flags(parser: argparse.ArgumentParser) -> None:
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


def add_our_unlearning_flags(group) -> None:
    """Unlearn until forgotten, and the repair epochs (ours): both unlearning scripts and the tuner."""
    group.add_argument("--forget-target", type=forget_target, metavar="PERCENT",
                       help=f"ours: after --unlearn-epochs, go on unlearning until the accuracy on every forget "
                            f"class's training samples is at most PERCENT (e.g. {hparams.FORGOTTEN_PERCENT:g}), or "
                            f"--max-unlearn-epochs in all; none: exactly --unlearn-epochs (the paper; the default "
                            f"for the paper's models)")
    group.add_argument("--max-unlearn-epochs", type=positive_int,
                       help=f"the forget target's cap, all unlearning epochs counted (default "
                            f"{hparams.MAX_UNLEARN_EPOCHS}, or --unlearn-epochs if more); a class still above "
                            f"the target then is a warning")
    group.add_argument("--repair-epochs", type=non_negative_int,
                       help="ours: after unlearning, fine-tune this many epochs on the retain subset alone at --lr "
                            "(default: the row's; 0, the paper's protocol, for the paper's models)")


def add_training_flags(group) -> None:
    """How the original (and retrained) models train; default: the model's row in hparams.py."""
    group.add_argument("--epochs", type=positive_int, help="epochs of the original and retrained models")
    group.add_argument("--lr", type=positive_float, help="Adam learning rate of the original and retrained models")
    group.add_argument("--batch-size", type=positive_int, help="minibatch size of every phase")


# ----------------------------------------------------------------------------------------------
# Resolving flags into a RunConfig


def resolve_config(args: argparse.Namespace, multi_class: bool) -> RunConfig:
    spec = check_dataset(args)
    pretrained = resolve_pretrained(args.model, args.pretrained)  # also validates the model name
    table = hparams.resolve(args.model, spec.hparams_as, args.retain_percent, multi_class)
    if args.hparams is not None:
        table = replace(table, **hparams.read_file(args.hparams))
    run_hparams = with_flags(table, args)
    device = resolve_device(args.device)
    speed = resolve_speed(args, device)
    out = resolve_out(args, multi_class)
    return RunConfig(
        dataset=args.dataset, model=args.model, retain_percent=float(args.retain_percent),  # 30 and 30.0: one key
        multi_class=multi_class, data_root=args.data_root, max_per_class=args.max_per_class,
        device=str(device), seed=args.seed, out=out, cache_dir=args.cache_dir,
        checkpoint=args.checkpoint, retrain=not args.no_retrain, pretrained=pretrained,
        progress=args.progress, dist_timeout_minutes=args.dist_timeout_minutes, mia=args.mia,
        methods=check_methods(args.methods), hparams=run_hparams,
        unlearn_mode=args.unlearn_mode, neighbour_pool=args.neighbour_pool,
        select=args.select or ("last" if args.model in hparams.OUR_MODELS else "best-test"), speed=speed)


def check_dataset(args: argparse.Namespace) -> DatasetSpec:
    """The --dataset's spec, after refusing a --data-root for the embedded data set."""
    spec = get_dataset_spec(args.dataset)
    if args.data_root is not None and not spec.needs_network:
        raise UserError(f"--data-root does not apply to {args.dataset}, which is embedded (no files to point at); "
                        f"leave it out or choose another --dataset")
    return spec


def with_flags(table: hparams.RunHparams, args: argparse.Namespace) -> hparams.RunHparams:
    """`table` with every hyperparameter flag that was given."""
    overrides = {field: getattr(args, field) for field in asdict(table) if getattr(args, field, None) is not None}
    if overrides.get("tail_randomized") == 0:  # --tail-randomized 0/none: always the farthest
        overrides["tail_randomized"] = None
    if overrides.get("forget_target") == "none":  # --forget-target none: the fixed epochs
        overrides["forget_target"] = None
    row = replace(table, **overrides)
    if not math.isfinite(row.lr * row.unlearn_scale_lr):
        raise UserError(f"--lr {row.lr:g} x --unlearn-scale-lr {row.unlearn_scale_lr:g} overflows; give smaller values")
    return row


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


def resolve_out(args: argparse.Namespace, multi_class: bool) -> str:
    """--out, or results/<dataset>/<model>/single_class_<percent> (multi_class_k<K>_<percent>)."""
    if args.out:
        return args.out
    kind = "single_class"
    if multi_class:
        k = len(args.forget_classes) if args.forget_classes is not None else units.num_forget_classes(args)
        kind = f"multi_class_k{k}"
    return f"results/{args.dataset}/{args.model}/{kind}_{args.retain_percent:g}"


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
    elif isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        message, status = (f"error: no space left to write {error.filename or 'results'} ({error.strerror}); free "
                           f"some space or choose another --out / --cache-dir, then run the same command again"), 1
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


def main(parser: argparse.ArgumentParser, argv: list[str], multi_class: bool, choose_units) -> int:
    """Parse flags, run every unit, write the results and print the table. `choose_units(args,
    spec)` gives the forget sets. Exit status 2 with a one-line message for anything the user
    can fix."""
    args = parser.parse_args(argv)
    show_warning = warnings.showwarning
    warnings.showwarning = one_line_warning(show_warning)
    try:
        config = resolve_config(args, multi_class)
        out = Path(config.out)
        check_writable_folder(out, "--out")
        check_writable_folder(Path(config.cache_dir), "--cache-dir")
        units = choose_units(args, get_dataset_spec(config.dataset))
        experiment, summary = run(config, units)
        if summary is None:  # a torchrun rank other than 0: its share is saved in --out
            return 0
        for notice in report.write_results(out, summary):
            print(f"note: {notice}", file=sys.stderr)
        if "anti_sample" in config.methods:
            report.plot_anti_samples(*experiment.anti_sample_examples(units[0][0]), experiment.spec.mean,
                                     experiment.spec.std, out / "anti_samples.png")
    except (UserError, NonFiniteLossError, OSError, KeyboardInterrupt) as error:
        status = report_failure(parser.prog, error, "finished models and classes are saved, so the same command "
                                                    "resumes from there")
        if status is None:
            raise
        return status
    finally:
        warnings.showwarning = show_warning
    for method in config.methods:
        print(f"{config.dataset} / {config.model}, Unlearning-{config.retain_percent:g}, {method} "
              f"(accuracy on the test set, %):")
        print(report.format_table(summary, method))
    print(report.protocol_line(summary))
    print(f"wrote summary.json, summary.csv, comparison.md and plots in {out}")
    return 0
