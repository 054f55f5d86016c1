"""The hyperparameter table and the environment files."""
import dataclasses
import json
import re

import pytest

import hparams
from conftest import NOTEBOOK_ROWS, PAPER_CONFIG_FILE, ROOT, SMALL_CNN_ROW, method_row
from datasets import DATASETS
from models import list_models


def test_resnet18_cifar10_uses_the_notebook_values():
    u30 = hparams.resolve("ResNet18", "cifar10", 30)
    assert (u30.unlearn_scale_lr, u30.local_variance, u30.p, u30.tail_randomized,
            u30.no_generated_data) == (2.2, 5, 0.95, 20, 500)
    u100 = hparams.resolve("ResNet18", "cifar10", 100)
    assert (u100.unlearn_scale_lr, u100.local_variance, u100.tail_randomized,
            u100.no_generated_data) == (2.5, 1, 50, 1500)
    assert (u30.epochs, u30.lr, u30.batch_size, u30.unlearn_epochs) == (30, 1e-3, 128, 5)


def test_other_pairs_use_the_config_table_and_multi_class_its_protocol():
    row = hparams.resolve("ResNet9", "mnist", 30)
    assert (row.unlearn_scale_lr, row.local_variance, row.tail_randomized) == (7, 10, 50)
    multi = hparams.resolve("ResNet9", "mnist", 30, multi_class=True)
    assert (multi.unlearn_epochs, multi.unlearn_scale_lr) == (2, 1.0)


@pytest.mark.parametrize("percent", [30, 100])
def test_multi_class_resnet18_cifar10_reads_the_config_row_not_the_notebook_row(percent):
    multi = hparams.resolve("ResNet18", "cifar10", percent, multi_class=True)
    assert (multi.local_variance, multi.size_multiplier, multi.p, multi.tail_randomized) == (5, 1, 0.95, 30)
    assert (multi.unlearn_epochs, multi.unlearn_scale_lr, multi.no_generated_data) == (
        2, 1.0, {30: 500, 100: 1500}[percent])


@pytest.mark.parametrize("model", list_models())
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("percent", [30, 100])
def test_every_model_and_data_set_reads_its_own_row(model, dataset, percent):
    """Each pair gets the method row of its model and data set (SmallCNN: ours), never another's."""
    paper_dataset = DATASETS[dataset].hparams_as
    resolved = hparams.resolve(model, paper_dataset, percent)
    if model == "SmallCNN":
        expected, epochs, convex = SMALL_CNN_ROW, 15, False
    elif (model, paper_dataset) == ("ResNet18", "cifar10"):
        expected, epochs, convex = NOTEBOOK_ROWS[percent], 30, True
    else:
        expected, epochs, convex = PAPER_CONFIG_FILE[(model, paper_dataset)], 30, True
    assert method_row(resolved) == expected
    assert (resolved.epochs, resolved.convex_combination, resolved.no_generated_data) == (
        epochs, convex, {30: 500, 100: 1500}[percent])
    multi = hparams.resolve(model, paper_dataset, percent, multi_class=True)
    if model != "SmallCNN":  # the multi-class script reads the config file, never the notebook rows
        assert method_row(multi)[1:] == PAPER_CONFIG_FILE[(model, paper_dataset)][1:]
        assert (multi.unlearn_epochs, multi.unlearn_scale_lr) == (2, 1.0)  # docs/METHOD.md: 2 epochs at scale 1


def test_the_api_defaults_are_the_paper_row_but_for_the_documented_forget_target_and_lr():
    from anti_sample import API_LR, AntiSampleParams
    paper = AntiSampleParams.paper()
    assert paper == AntiSampleParams.from_run(hparams.resolve("ResNet18", "cifar10", 30))
    assert paper.lr == pytest.approx(2.2e-3) and paper.epochs == 5 and paper.forget_target is None
    assert paper.repair_epochs == 0
    assert AntiSampleParams() == dataclasses.replace(paper, lr=API_LR, forget_target=hparams.FORGOTTEN_PERCENT,
                                                     repair_epochs=hparams.REPAIR_EPOCHS)


def test_generated_data_count_interpolates_the_two_published_points():
    assert [hparams.no_generated_data(p) for p in (30, 100, 65)] == [500, 1500, 1000]


def requirement_names(lines):
    return sorted(re.split(r"[<>=!~ ]", line.strip().lstrip("- "))[0].lower()
                  for line in lines if re.match(r"\s*-?\s*[A-Za-z]", line))


def test_conda_environment_lists_the_same_dependencies_as_requirements():
    requirements = [line.split("#")[0] for line in (ROOT / "requirements.txt").read_text().splitlines()]
    conda = (ROOT / "conda_environment.yml").read_text().split("- pip:")[1].splitlines()
    assert requirement_names(conda) == requirement_names(requirements)
    pins = {line.split("#")[0].strip() for line in requirements if line.strip()}
    assert pins <= {line.strip().lstrip("- ") for line in conda}  # same version ranges too


@pytest.mark.parametrize("written,read", [
    ({"unlearn_epochs": 4.0, "size_multiplier": 2}, {"unlearn_epochs": 4, "size_multiplier": 2}),
    ({"tail_randomized": 0}, {"tail_randomized": 1}),  # as --tail-randomized 0: the farthest, written 1
    ({"tail_randomized": None}, {"tail_randomized": 1}),
    ({"tail_randomized": 0.0, "local_variance": 0}, {"tail_randomized": 1, "local_variance": 0}),
    ({"convex_combination": False, "p": 1}, {"convex_combination": False, "p": 1}),
    ({"forget_target": 0.5, "max_unlearn_epochs": 40.0}, {"forget_target": 0.5, "max_unlearn_epochs": 40}),
    ({"forget_target": None}, {"forget_target": None}),  # null: the paper's fixed epochs
])
def test_a_hparams_file_is_read_as_the_flags_read_their_values(written, read, tmp_path):
    (tmp_path / "h.json").write_text(json.dumps(written))
    values = hparams.read_file(tmp_path / "h.json")
    assert values == read and all(type(values[k]) is type(v) for k, v in read.items())


def test_a_hparams_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors save UTF-8 with a BOM."""
    (tmp_path / "h.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"p": 0.9}).encode())
    assert hparams.read_file(tmp_path / "h.json") == {"p": 0.9}
