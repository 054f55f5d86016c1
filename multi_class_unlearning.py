#!/usr/bin/env python3
"""Multi-class unlearning with anti-samples (Mondal & Samanta, 2025): forget K classes at once.

Draws `--draws` random sets of `--num-forget-classes` classes (or takes `--forget-classes`),
saves them next to the results so reruns and comparison runs forget the same sets, and for
each set makes anti-samples per forget class, fine-tunes the original model (2 epochs, as the
paper; 5 at scale 5 for our SmallCNN) and compares with the model retrained without those classes.
"""
import sys

import cli
import flags
import units
from datasets import DatasetSpec

# The paper's three variables; each is also a flag (--dataset, --model, --retain-percent).
dataset_name = "mnist5k"
model_name = "SmallCNN"
retain_data_percent = 30


def get_args_parser():
    parser = flags.get_args_parser(dataset_name, model_name, retain_data_percent,
                                   description=__doc__, multi_class=True)
    group = parser.add_argument_group("forget sets")
    group.add_argument("--num-forget-classes", type=flags.checked(flags.AT_LEAST_ONE), default=None,
                       help=f"K, classes forgotten together (the paper: 2, 4, 7; default: "
                            f"{units.DEFAULT_NUM_FORGET_CLASSES})")
    paper_draws = ", ".join(f"{draws} for K = {k}" for k, draws in units.PAPER_DRAWS.items())
    group.add_argument("--draws", type=flags.checked(flags.AT_LEAST_ONE), default=None,
                       help=f"random sets of K classes to run (default: the paper's {paper_draws}; otherwise "
                            f"{units.DEFAULT_DRAWS})")
    flags.add_forget_classes_flag(group, "the classes to forget together: this one set instead of random draws, "
                                         "e.g. 1,4,7")
    return parser


def forget_sets(args, spec: DatasetSpec) -> list[list[int]]:
    if args.forget_classes is not None:
        units.refuse_together(args, "--forget-classes", ["--num-forget-classes", "--draws"])
        return [units.check_forget_set(args.forget_classes, spec.num_classes)]
    return units.draw_forget_sets(units.num_forget_classes(args), args.draws, spec.num_classes, args.seed,
                                  cli.results_folder(args, multi_class=True))


if __name__ == "__main__":
    sys.exit(cli.main(get_args_parser(), sys.argv[1:], multi_class=True,
                      choose_units=forget_sets))
