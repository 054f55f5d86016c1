"""The row schema: `METRICS`, the one list of what a result row holds (summary.json, summary.csv,
the printed table, comparison.md and the tests all read it), one row from a method's
measurements (`summary_row`), and the statistics over a run's units (`make_summary`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str  # key in rows, summary.json and summary.csv
    title: str  # column title in comparison.md
    unit: str  # "%" (accuracy or MIA efficacy), "points" (of accuracy), "s", "x" (a ratio of seconds), "epochs"
    better: str | None = None  # "high" / "low": compared across methods in comparison.md, and its worst
    # value over the units is kept beside the mean ("worst": the lowest if high is better, else the highest)
    header: str | None = None  # column header in the printed table
    retrained: str | None = None  # the same quantity for the retrained model (comparison.md's reference row)
    worst_title: str | None = None  # comparison.md also shows the worst unit's value, under this title

    @property
    def is_timing(self) -> bool:
        """Differs between two runs of the same command."""
        return self.unit in ("s", "x")


METRICS = [
    Metric("original_retain_test_acc", "original retain test %", "%", header="orig retain"),
    Metric("original_forget_test_acc", "original forget test %", "%", header="orig forget"),
    Metric("unlearned_retain_test_acc", "retain test %", "%", "high", "unl retain", "retrained_retain_test_acc"),
    Metric("unlearned_forget_test_acc", "forget test %", "%", "low", "unl forget", "retrained_forget_test_acc",
           worst_title="worst forget test %"),
    Metric("unlearned_retain_train_acc", "retain train %", "%", "high", retrained="retrained_retain_train_acc"),
    Metric("unlearned_forget_train_acc", "forget train %", "%", "low", retrained="retrained_forget_train_acc"),
    Metric("retrained_retain_test_acc", "retrained retain test %", "%", header="retr retain"),
    Metric("retrained_forget_test_acc", "retrained forget test %", "%", header="retr forget"),
    # the method's wall time, retain-subset draw included (README "Methods")
    Metric("unlearn_seconds", "seconds", "s", "low", "seconds", retrained="retrain_seconds"),
    # epochs the method ran on its forget objective (anti_sample: retain data + anti-samples; with a
    # forget target, where it stopped); None for methods that do not decide it themselves
    Metric("unlearn_epochs", "epochs run", "epochs", header="epochs"),
    # membership inference (SalUn's) and the comparison with the retrained model (README "Methods")
    Metric("mia_efficacy", "MIA efficacy %", "%", "high", retrained="retrained_mia_efficacy"),
    Metric("retrained_retain_train_acc", "retrained retain train %", "%"),
    Metric("retrained_forget_train_acc", "retrained forget train %", "%"),
    Metric("retrained_mia_efficacy", "retrained MIA efficacy %", "%"),
    Metric("gap_to_retrain", "gap to retrain", "points", "low"),
    Metric("speedup_vs_retrain", "speed-up vs retrain", "x", "high"),
    Metric("retrain_seconds", "retraining seconds", "s"),
]
METRIC_NAMES = [m.name for m in METRICS]
UNIT_KEYS = {False: "forget_class", True: "forget_classes"}  # a row's unit, by multi_class
ROWS_NAME = {False: "per_class", True: "per_draw"}  # where summary.json keeps the rows


# ----------------------------------------------------------------------------------------------
# Rows and summaries


def summary_row(method: str, original: dict, result: dict, gold: dict | None, seconds: float,
                retrain_seconds: float | None, epochs: int | None = None) -> dict[str, Any]:
    """The `METRICS` of one method and unit: `original`, `result` and `gold` are `evaluate`-style
    accuracies (`result` and `gold` as {"test", "train", "mia"}); None where there is no
    retrained model. `epochs`: the epochs the method ran, if it records them."""
    row = {"original_retain_test_acc": original["retain"], "original_forget_test_acc": original["forget"]}
    for prefix, measured in [("unlearned", result), ("retrained", gold)]:
        for part in ("retain", "forget"):
            for split in ("test", "train"):
                row[f"{prefix}_{part}_{split}_acc"] = measured[split][part] if measured else None
    row["mia_efficacy"], row["retrained_mia_efficacy"] = result["mia"], gold["mia"] if gold else None
    row["unlearn_seconds"], row["retrain_seconds"] = seconds, retrain_seconds if gold else None
    row["unlearn_epochs"] = epochs
    row["gap_to_retrain"] = row["speedup_vs_retrain"] = None
    if gold:
        row["speedup_vs_retrain"] = retrain_seconds / seconds
        if result["mia"] is not None:  # SalUn's "average gap": forget-train, retain-train, retain-test, MIA
            row["gap_to_retrain"] = float(np.mean([abs(row[f"unlearned_{m}"] - row[f"retrained_{m}"]) for m in (
                "forget_train_acc", "retain_train_acc", "retain_test_acc")] + [abs(result["mia"] - gold["mia"])]))
    return {"method": method, **{name: row[name] for name in METRIC_NAMES}}


STATISTICS = ("mean", "std", "worst")  # over the units (forget classes or draws), per metric


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{"mean", "std", "worst"}, each a value per metric over the rows (None where no row has it):
    the mean, the population standard deviation, and for metrics with a `better` direction the
    worst row's value (e.g. the highest forget accuracy: the class forgotten least)."""
    stats = {name: {} for name in STATISTICS}
    for metric in METRICS:
        values = [row[metric.name] for row in rows if row[metric.name] is not None]
        stats["mean"][metric.name] = float(np.mean(values)) if values else None
        stats["std"][metric.name] = float(np.std(values)) if values else None
        worst = {"high": min, "low": max}.get(metric.better)
        stats["worst"][metric.name] = float(worst(values)) if values and worst else None
    return stats


def make_summary(config: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's content: the config, the rows, and per method the mean, std and worst of
    every metric (`summarise`). "mean", "std" and "worst" at the top are the first method's
    (anti_sample by default)."""
    by_method = {method: summarise([r for r in rows if r["method"] == method]) for method in config["methods"]}
    first = by_method[config["methods"][0]]
    return {"config": config, ROWS_NAME[config["multi_class"]]: rows, **first, "by_method": by_method}


def rows_of(summary: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(the rows' unit key, the rows) of a summary."""
    multi_class = summary["config"]["multi_class"]
    return UNIT_KEYS[multi_class], summary[ROWS_NAME[multi_class]]


def unit_label(row: dict[str, Any], key: str) -> str:
    value = row[key]
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
