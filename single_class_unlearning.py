#!/usr/bin/env python3
"""Single-class unlearning with anti-samples (Mondal & Samanta, 2025), one forget class at a time.

Trains (or loads) the original model, then for each forget class makes anti-samples, fine-tunes
the model to forget the class, and prints its retain/forget accuracy beside the model retrained
without that class. With no flags it runs on the embedded mnist5k digits (no download, a few
minutes on a laptop CPU); `--dataset cifar10 --model ResNet18` is the paper's experiment.
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
                                   description=__doc__, multi_class=False)
    flags.add_forget_classes_flag(parser.add_argument_group("forget classes"),
                                  "the classes to forget, one run each, e.g. 0,3 (default: all)")
    return parser


def forget_sets(args, spec: DatasetSpec) -> list[list[int]]:
    classes = args.forget_classes if args.forget_classes is not None else list(range(spec.num_classes))
    return [[c] for c in units.check_classes(classes, spec.num_classes, "--forget-classes")]


if __name__ == "__main__":
    sys.exit(cli.main(get_args_parser(), sys.argv[1:], multi_class=False,
                      choose_units=forget_sets))
