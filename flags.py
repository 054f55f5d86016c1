"""Every flag of the three entry scripts: the value types and their checks (each hyperparameter's
from its declaration in `hparams.FIELDS`), the flag groups the scripts share, and the help
formatter, which shows the value each flag will use. `cli.py` resolves the parsed flags.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

import hparams
from anti_sample import UNLEARN_MODES
from datasets import ARCHIVE_FORMATS, DATASETS, get_dataset_spec
from distributed import DIST_TIMEOUT_MINUTES
from experiment import NEIGHBOUR_POOLS, SELECTIONS
from hparams import AT_LEAST_ONE, POSITIVE, Check, Field
from methods import METHODS, TARGETED_BASELINES
from metrics import SELECT_FRACTION
from models import list_models
from seeding import DEFAULT_SEED, SEED

PERCENT = Check("float", lambda v: 0 < v <= 100, "a percentage in (0, 100]")
TARGET_PERCENT = Check("float", lambda v: 0 <= v < 100, "a percentage in [0, 100)")


def whole_number(text: str) -> int | str:
    """An integer, also when written as 1e3 or 5.0; the text itself when it is none."""
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return text
        return int(value) if value.is_integer() else text


def checked(check: Check, takes_none: bool = False,
            normalise: Callable[[Any], Any] | None = None) -> Callable[[str], Any]:
    """An argparse type: the text read as `check.kind` (the word none as None if `takes_none`), in
    its one spelling (`normalise`), and refused in one line, naming the range, if `check` refuses it."""
    def parse(text: str) -> Any:
        if takes_none and text.strip().lower() == "none":
            value = None
        elif check.kind.startswith("int"):
            value = whole_number(text)
        else:
            try:
                value = float(text)
            except ValueError:
                value = text
        value = normalise(value) if normalise else value
        if not check.accepts(value):
            expected = check.refusal(value).replace("null", "none")  # a file's null is the flag's none
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


def parse_classes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids like 0,3,7, got {text!r}")


def comma_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where it has one: never None, a list as it is typed (a,b), an on/off
    flag as yes or no, nothing for a plain switch."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        if "%(default)" in text or default is None or default is argparse.SUPPRESS:
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            shown = "yes" if default else "no"
        elif action.nargs == 0:  # store_true / store_false: the flag's name says it
            return text
        elif isinstance(default, (list, tuple)):
            shown = ",".join(map(str, default))
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags end with one line naming the value and what is accepted, and exit status 2."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# ----------------------------------------------------------------------------------------------
# The unlearning scripts' parser, and the flag groups the tuner shares


def get_args_parser(dataset: str, model: str, retain_percent: float, description: str,
                    multi_class: bool) -> argparse.ArgumentParser:
    """The flags of single_class_unlearning.py (and, with `multi_class`, multi_class_unlearning.py),
    whose defaults are the script's three paper variables; the script adds its forget-set flags."""
    parser = OneLineErrorParser(description=description)
    run = parser.add_argument_group("run")
    add_data_flags(run, dataset, model, retain_percent)
    run.add_argument("--out", default=None,
                     help="results folder (default: results/<dataset>/<model>/"
                          f"{'multi_class_k<K>' if multi_class else 'single_class'}_<percent>)")
    run.add_argument("--checkpoint", default=None,
                     help="use this trained original model (a checkpoint of this repository or a state dict) "
                          "instead of training or loading one from the cache")
    run.add_argument("--no-retrain", dest="retrain", action="store_false",
                     help="skip the retrained gold models (their columns are left empty)")
    run.add_argument("--methods", type=comma_list, default=["anti_sample"], metavar="NAMES",
                     help=f"comma-separated unlearning methods, run from the same original model "
                          f"and retain subset: {', '.join(METHODS)}")
    run.add_argument("--baseline-forget-target", type=checked(TARGET_PERCENT), default=None, metavar="PERCENT",
                     help=f"ours, off unless given: {', '.join(TARGETED_BASELINES)} run their reference epochs, "
                          f"then on until every forget class's accuracy on its training samples is at most "
                          f"PERCENT, {hparams.MAX_UNLEARN_EPOCHS} epochs in all at most, as anti_sample's own forget "
                          f"target does (README \"Comparing methods\"); a comparison then need not set adaptive "
                          f"against fixed compute")
    run.add_argument("--dist-timeout-minutes", type=checked(POSITIVE), default=DIST_TIMEOUT_MINUTES,
                     help="under torchrun: how long a rank waits for the others (rank 0 trains the original "
                          "model while they wait; ranks that finish early wait for the slowest)")
    run.add_argument("--mia", action=argparse.BooleanOptionalAction, default=True,
                     help="measure membership-inference efficacy (SVC fits; slow on full CIFAR-10)")
    run.add_argument("--seeds", metavar="SEEDS", default=None,
                     help="run the whole experiment once per seed: 100,101,102, or a count (3: --seed and the next "
                          "two); each seed in <out>/seed_<seed> with its own files, and summary.json, comparison.md "
                          "and retain_forget.png in --out over the seeds (mean ± sample std, n - 1; multi-class: "
                          "the first seed's forget sets for all)")

    protocol = add_protocol_flags(parser)
    protocol.add_argument("--select", choices=SELECTIONS, default=None,
                          help=f"epoch kept of the original and retrained models: best-test is the "
                               f"authors' (best accuracy on a random {SELECT_FRACTION * 100:.0f}%% of the test set, "
                               f"drawn anew each epoch: it looks at test data), last is the final epoch (default: "
                               f"best-test for the paper's models, last for ours, {', '.join(hparams.OUR_MODELS)})")
    add_speed_flags(parser)

    hp = parser.add_argument_group(
        "hyperparameters", "default: the row of hparams.py for the model and data set, then --hparams FILE, then "
                           "each flag below; each flag's help shows the value the default model and data set use")
    hp.add_argument("--hparams", metavar="FILE", default=None,
                    help=f"a JSON object of hyperparameters, any of {', '.join(f.name for f in hparams.FIELDS)} "
                         f"(e.g. tune_unlearning.py's best_hparams.json)")
    add_hparam_flags(hp, ("training", "method", "ours"), default_row(dataset, model, retain_percent, multi_class),
                     default_row_note(dataset, model, retain_percent))
    return parser


# ----------------------------------------------------------------------------------------------
# Flag groups


def add_data_flags(group, dataset: str, model: str, retain_percent: float) -> None:
    """The data, model and run flags every entry script has (the unlearning scripts and the tuner)."""
    group.add_argument("--dataset", default=dataset, help=f"one of {', '.join(DATASETS)}")
    group.add_argument("--model", default=model, help=f"one of {', '.join(list_models())}")
    group.add_argument("--retain-percent", type=checked(PERCENT), default=retain_percent,
                       help="percentage of each retain class's training data the unlearner may use "
                            "(30: the paper's Unlearning-30, 100: Unlearning-100)")
    group.add_argument("--data-root", default=None,
                       help="where torchvision data sets live or are downloaded to (default ./data); "
                            f"for cifar10 also an image-folder tree or a {ARCHIVE_FORMATS} archive of one")
    group.add_argument("--max-per-class", type=checked(AT_LEAST_ONE), default=None,
                       help="use only the first N train and N test samples of each class (quick runs; "
                            "default: all)")
    group.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="torch device for data and models")
    group.add_argument("--seed", type=checked(SEED), default=DEFAULT_SEED, help="seed of every random draw")
    group.add_argument("--cache-dir", default="checkpoints",
                       help="where trained original and retrained models are cached")
    group.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                       help="start ResNet18 / MobileNet_v2 from ImageNet weights (default: yes for "
                            "those two, as in the paper; the other models have none)")
    group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                       help="show progress bars")
    group.add_argument("--print-config", action="store_true",
                       help="print the fully resolved configuration (the hyperparameter row after --hparams and "
                            "the flags) as JSON, and exit")


def add_protocol_flags(parser: argparse.ArgumentParser):
    protocol = parser.add_argument_group(
        "protocol", "defaults follow the authors' code (docs/METHOD.md); README \"Deviations\" measures the others")
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


def add_hparam_flags(group, groups: tuple[str, ...], row: hparams.RunHparams, where: str) -> None:
    """A flag for each hyperparameter of `hparams.FIELDS` in `groups`. Its help gives the meaning,
    the range and `row`'s value, the one a run of the default model and data set (`where`) uses.
    A flag left out is absent from the parsed flags (argparse.SUPPRESS), so a given value, none
    included, always overrides the row."""
    for field in hparams.FIELDS:
        if field.group in groups:
            _add_field_flag(group, field, getattr(row, field.name), where)


def _add_field_flag(group, field: Field, value: Any, where: str) -> None:
    shown = "none" if value is None else (("yes" if value else "no") if isinstance(value, bool) else f"{value:g}")
    text = f"{field.meaning}; {where}: {shown}"
    if field.check.kind == "bool":
        group.add_argument(*field.flags, dest=field.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        return
    accepted = field.check.expected.replace("null", "none")  # a file's null is the flag's none
    metavar = "N" if field.check.kind.startswith("int") else "PERCENT" if "percentage" in accepted else "X"
    group.add_argument(*field.flags, dest=field.name, default=argparse.SUPPRESS, metavar=metavar,
                       type=checked(field.check, field.takes_none, field.normalise),
                       help=f"{text} ({accepted})".replace("%", "%%"))


def default_row_note(dataset: str, model: str, retain_percent: float) -> str:
    """How a hyperparameter flag's help names the value shown: the default model and data set's."""
    return f"{model} on {dataset} at {retain_percent:g}% uses"


def default_row(dataset: str, model: str, retain_percent: float, multi_class: bool) -> hparams.RunHparams:
    return hparams.resolve(model, get_dataset_spec(dataset).hparams_as, retain_percent, multi_class)


def add_forget_classes_flag(group, help_text: str) -> None:
    """The classes to forget, under one name on every script (--classes: its older name)."""
    group.add_argument("--forget-classes", "--classes", dest="forget_classes", type=parse_classes, default=None,
                       metavar="CLASSES", help=help_text)
