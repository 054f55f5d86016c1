"""Unlearn until forgotten (`forget_target`): at least `epochs`, then stop at the first epoch where
every forget class is at most the target on its forget samples, or warn at the cap; and the worst
forget set beside the mean in every report."""
import json
import warnings

import pytest
import torch
from torch import nn

import anti_sample
import report
import schema
from conftest import run_main

PER_CLASS = 1000  # forget samples per class: accuracies are multiples of 0.1 %


class Scripted(nn.Module):
    """A classifier whose forget accuracy the test sets: in eval mode it gets the first
    `accuracy[c][epoch - 1]` % of class c's forget samples right (each sample carries its rank in
    its class and its class), whatever it has learnt; in train mode it is a plain linear model, so
    fine-tuning runs as usual. `epoch` is set by the `after_epoch` hook."""

    def __init__(self, accuracy: dict[int, list[float]], num_classes: int = 10):
        super().__init__()
        self.linear, self.accuracy, self.epoch, self.num_classes = nn.Linear(2, num_classes), accuracy, 0, num_classes

    def forward(self, x):
        x = x.flatten(1)
        if self.training:
            return self.linear(x)
        rank, label = x[:, 0], x[:, 1].long()
        scripted = [self.accuracy.get(int(c), [100.0]) for c in label.tolist()]  # the last value repeats
        wanted = torch.tensor([values[min(max(self.epoch, 1), len(values)) - 1] for values in scripted])
        predicted = torch.where(rank < wanted / 100, label, (label + 1) % self.num_classes)
        return nn.functional.one_hot(predicted, self.num_classes).float() + 0 * self.linear(x)


def data(forget_classes):
    rank = torch.arange(PER_CLASS) / PER_CLASS
    forget = torch.cat([torch.stack([rank, torch.full_like(rank, c)], 1) for c in forget_classes]).view(-1, 1, 1, 2)
    forget_labels = torch.tensor(forget_classes).repeat_interleave(PER_CLASS)
    retain_labels = torch.tensor([c for c in range(10) if c not in forget_classes]).repeat(20)
    retain = torch.randn(len(retain_labels), 1, 1, 2, generator=torch.Generator().manual_seed(1))
    return (forget, forget_labels), (retain, retain_labels)


def run(accuracy, **options):
    """unlearn the Scripted model; (model, record, warnings caught)."""
    torch.manual_seed(0)
    model = Scripted(accuracy)
    forget, retain = data(sorted(accuracy))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, record = anti_sample.unlearn(
            model, forget, retain, generator=torch.Generator().manual_seed(2), progress=False, unlearn_mode="train",
            no_generated_data=50, after_epoch=lambda epoch: setattr(model, "epoch", epoch), **options)
    return model, record, [w for w in caught if issubclass(w.category, anti_sample.ForgetTargetWarning)]


def test_it_runs_epochs_then_stops_at_the_first_epoch_at_or_under_the_target():
    # epoch 2 is under the target, but before `epochs` (3); epoch 4 is the first after it
    _, record, caught = run({3: [50, 0, 20, 0.4, 0, 0, 0, 0]}, epochs=3, forget_target=0.5, max_epochs=8)
    assert record.epochs == 4 and record.forget_trace == pytest.approx([50, 0, 20, 0.4])
    assert not caught


def test_the_repair_epochs_come_after_the_stop():
    until, record, _ = run({3: [9, 9, 0, 0, 0]}, epochs=1, forget_target=0.5, max_epochs=5, repair_epochs=2)
    fixed, _, _ = run({3: [9, 9, 0, 0, 0]}, epochs=3, forget_target=None, repair_epochs=2)
    assert (record.epochs, record.repair_epochs) == (3, 2)
    for name, weights in until.state_dict().items():
        assert torch.equal(weights, fixed.state_dict()[name]), name


def test_stopping_at_the_target_is_the_same_run_as_that_many_fixed_epochs():
    """One continuous run: the same optimiser state and shuffle stream as if `epochs` were larger."""
    until, record, _ = run({3: [9, 9, 9, 0, 0, 0]}, epochs=2, forget_target=0.5, max_epochs=6)
    fixed, fixed_record, _ = run({3: [9, 9, 9, 0, 0, 0]}, epochs=4, forget_target=None)
    assert record.epochs == fixed_record.epochs == 4 and fixed_record.forget_trace == []
    for name, weights in until.state_dict().items():
        assert torch.equal(weights, fixed.state_dict()[name]), name


def test_with_several_classes_the_worst_one_decides():
    _, record, _ = run({2: [0] * 6, 5: [30, 10, 2, 0.5, 0, 0]}, epochs=1, forget_target=0.5, max_epochs=6)
    assert record.epochs == 4 and record.forget_trace == pytest.approx([30, 10, 2, 0.5])


def test_a_missed_target_warns_once_naming_the_class_and_keeps_the_model():
    model, record, caught = run({2: [0] * 5, 7: [5, 4, 3, 3, 3]}, epochs=2, forget_target=0.5, max_epochs=5)
    fixed, _, _ = run({2: [0] * 5, 7: [5, 4, 3, 3, 3]}, epochs=5, forget_target=None)
    assert record.epochs == 5 and len(record.forget_trace) == 5
    for name, weights in model.state_dict().items():  # the model after all 5 epochs, as it is
        assert torch.equal(weights, fixed.state_dict()[name]), name
    assert [str(w.message) for w in caught] == [
        "forget target 0.5% not reached: class 7 is at 3.00% on its forget samples after 5 epochs (max_epochs); "
        "the unlearned model is kept"]


def test_only_the_forget_samples_are_measured(monkeypatch):
    """The target is checked on the forget data given, nothing else (no test split, no retain data)."""
    seen = []
    real = anti_sample.predict
    monkeypatch.setattr(anti_sample, "predict", lambda model, images: seen.append(images) or real(model, images))
    forget, _ = data([4])
    run({4: [1, 0, 0]}, epochs=1, forget_target=0.5, max_epochs=3)
    assert len(seen) == 2 and all(torch.equal(images, forget[0]) for images in seen)


def test_without_a_target_it_runs_exactly_the_epochs_and_measures_nothing(monkeypatch):
    monkeypatch.setattr(anti_sample, "predict", lambda *args: pytest.fail("measured without a forget target"))
    _, record, _ = run({4: [50] * 3}, epochs=3, forget_target=None)
    assert record.epochs == 3 and record.forget_trace == []


def test_the_default_cap_is_30_or_the_fixed_epochs_if_more():
    assert anti_sample.AntiSampleParams().epoch_cap == 30
    assert anti_sample.AntiSampleParams(epochs=40).epoch_cap == 40  # no error for many fixed epochs
    _, record, _ = run({4: [50] * 7}, epochs=6, forget_target=0.5)
    assert record.epochs == 30 and len(record.forget_trace) == 30


def test_forget_target_none_on_the_command_line_overrides_a_file(tmp_path):
    import cli
    import single_class_unlearning
    (tmp_path / "h.json").write_text(json.dumps({"forget_target": 1.0, "max_unlearn_epochs": 20}))
    parser = single_class_unlearning.get_args_parser()
    resolved = [cli.resolve_config(parser.parse_args(["--hparams", str(tmp_path / "h.json"), *flags, "--out",
                                                      str(tmp_path)]), multi_class=False).hparams
                for flags in ([], ["--forget-target", "none"], ["--forget-target", "0.25"])]
    assert [(h.forget_target, h.max_unlearn_epochs) for h in resolved] == [(1.0, 20), (None, 20), (0.25, 20)]


@pytest.mark.parametrize("options,message", [
    ({"forget_target": 100}, "forget_target=100: expected a percentage in [0, 100), or null: the fixed unlearning "
                             "epochs"),
    ({"forget_target": 0.5, "epochs": 8, "max_epochs": 4}, "max_epochs=4 is below epochs=8"),
    ({"max_epochs": 0}, "max_epochs=0: expected a whole number >= 1, or null"),
    ({"forget_target": True}, "forget_target=True: expected a percentage"),
])
def test_bad_target_options_are_one_line_errors(options, message):
    from errors import UserError
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        anti_sample.AntiSampleParams(**options)


@pytest.mark.slow
def test_the_script_warns_at_the_cap_and_still_writes_the_row(tmp_path, capsys):
    """A target of 0 that a barely moving model cannot reach in 2 epochs: a warning, exit 0, the row."""
    out = tmp_path / "out"
    status, err = run_main("single_class_unlearning", [
        "--max-per-class", "30", "--epochs", "2", "--classes", "1", "--no-mia", "--unlearn-scale-lr", "1e-6",
        "--unlearn-epochs", "1", "--forget-target", "0", "--max-unlearn-epochs", "2", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache")], capsys)
    assert status == 0, err
    assert "warning: forget target 0% not reached: class 1 is at " in err and "after 2 epochs" in err
    row = json.loads((out / "summary.json").read_text())["per_class"][0]
    assert row["unlearn_epochs"] == 2 and len(row["forget_trace"]) == 2 and row["forget_trace"][-1] > 0


HAND_MADE_ROWS = [  # forget test accuracy 0, 22 and 5: the worst is 22, the mean 9
    {"forget_class": c, "method": m, **{name: None for name in schema.METRIC_NAMES},
     "unlearned_forget_test_acc": forget, "unlearned_retain_test_acc": retain}
    for m, values in [("anti_sample", [(1, 0.0, 70.0), (6, 22.0, 60.0), (8, 5.0, 65.0)]),
                      ("finetune", [(1, 3.0, 71.0), (6, 4.0, 72.0), (8, 2.0, 73.0)])]
    for c, forget, retain in values]


def test_worst_columns_on_a_hand_made_summary():
    summary = schema.make_summary({"methods": ["anti_sample", "finetune"], "multi_class": False,
                                   "dataset": "cifar10", "model": "SmallCNN", "retain_percent": 30}, HAND_MADE_ROWS)
    assert summary["worst"]["unlearned_forget_test_acc"] == 22.0  # the highest forget accuracy
    assert summary["worst"]["unlearned_retain_test_acc"] == 60.0  # the lowest retain accuracy
    assert summary["mean"]["unlearned_forget_test_acc"] == pytest.approx(9.0)
    assert summary["by_method"]["finetune"]["worst"]["unlearned_forget_test_acc"] == 4.0
    assert summary["worst"]["original_retain_test_acc"] is None  # no direction, no worst

    label, *cells = report.format_table(summary, "anti_sample").splitlines()[-1].split()
    columns = [m.name for m in schema.METRICS if m.header]
    assert label == "worst" and cells[columns.index("unlearned_forget_test_acc")] == "22.00"
    assert cells[columns.index("unlearned_retain_test_acc")] == "60.00"
    assert cells[columns.index("original_forget_test_acc")] == "-"

    comparison = report.comparison_markdown(summary)
    head, _, anti, finetune = comparison.splitlines()[-4:]
    titles = [t.strip() for t in head.strip("|").split("|")]
    assert titles[titles.index("forget test %") + 1] == "worst forget test %"
    cells = {name: [c.strip() for c in line.strip("|").split("|")] for name, line in [("a", anti), ("f", finetune)]}
    column = titles.index("worst forget test %")
    assert cells["a"][column] == "22.00" and cells["f"][column] == "**4.00**"  # the lower worst is the best

    lines = report.summary_csv(summary).splitlines()
    worst_line = next(line for line in lines if line.startswith("worst,anti_sample"))
    header_csv = lines[0].split(",")
    assert float(worst_line.split(",")[header_csv.index("unlearned_forget_test_acc")]) == 22.0
