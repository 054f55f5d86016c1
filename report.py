"""Results as a user reads them: summary.csv, the printed table, comparison.md and the plots, from a
summary (`schema.make_summary`; `schema.METRICS` says what each column is). Functions here return
text or write files; the pipeline (`experiment.py`) makes the rows, the entry scripts print.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable

import torch

from errors import first_line
from metrics import SELECT_FRACTION
from schema import METRIC_NAMES, METRICS, STATISTICS, rows_of, unit_label
from store import write_json, write_text


def summary_csv(summary: dict[str, Any]) -> str:
    """One line per row, then the mean, std and worst lines of each method; every metric a column."""
    key, rows = rows_of(summary)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["row", "method", key, *METRIC_NAMES])
    lines = [("unit", r["method"], unit_label(r, key).replace(",", " "), r) for r in rows]
    for method, stats in summary["by_method"].items():
        lines += [(name, method, "", stats[name]) for name in STATISTICS]
    for label, method, unit, row in lines:
        writer.writerow([label, method, unit, *("" if row[m] is None else f"{row[m]:.4f}" for m in METRIC_NAMES)])
    return text.getvalue()


def format_table(summary: dict[str, Any], method: str) -> str:
    """One method's rows with mean, std and worst, the `METRICS` that have a table header."""
    key, rows = rows_of(summary)
    rows = [r for r in rows if r["method"] == method]
    stats = summary["by_method"][method]
    columns = [m for m in METRICS if m.header]
    width = max(len(key), *(len(unit_label(r, key)) for r in rows), 4)

    def cell(value, metric):
        if value is None:
            return "-"
        return f"{value:.0f}" if metric.unit == "epochs" and float(value).is_integer() else f"{value:.2f}"
    lines = [f"{key:>{width}} " + " ".join(f"{m.header:>11}" for m in columns)]
    for label, row in [*((unit_label(r, key), r) for r in rows), *((name, stats[name]) for name in STATISTICS)]:
        lines.append(f"{label:>{width}} " + " ".join(f"{cell(row[m.name], m):>11}" for m in columns))
    return "\n".join(lines)


SEED_COLUMNS = [("unl retain", "unlearned_retain_test_acc", "mean"), ("unl forget", "unlearned_forget_test_acc", "mean"),
                ("worst forget", "unlearned_forget_test_acc", "worst"), ("retr retain", "retrained_retain_test_acc", "mean"),
                ("retr forget", "retrained_forget_test_acc", "mean"), ("seconds", "unlearn_seconds", "mean"),
                ("epochs", "unlearn_epochs", "mean")]


def format_seed_table(top: dict[str, Any], method: str) -> str:
    """One method over several seeds (`seeds.over_seeds`): a line per seed (its mean over the forget
    sets, and its worst set's forget accuracy), then mean ± sample std over the seeds."""
    stats = top["over_seeds"][method]
    lines = [f"{'seed':>16} " + " ".join(f"{title:>15}" for title, *_ in SEED_COLUMNS)]
    for seed, by_method in top["per_seed"].items():
        row = by_method[method]
        lines.append(f"{seed:>16} " + " ".join(f"{_number(row[kind][name]):>15}" for _, name, kind in SEED_COLUMNS))

    def over(name: str, kind: str) -> str:
        if kind == "worst":
            return _number(stats["worst"][name])
        mean, std = stats["mean"][name], stats["std"][name]
        return _number(mean) + ("" if std is None or mean is None else f" ± {std:.2f}")
    label = f"mean ± std ({stats['n']})"
    lines.append(f"{label:>16} " + " ".join(f"{over(name, kind):>15}" for _, name, kind in SEED_COLUMNS))
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def protocol_line(summary: dict[str, Any]) -> str:
    """How the models were chosen and unlearned, and the epochs kept, for under the table."""
    config, (_, rows) = summary["config"], rows_of(summary)
    if config["select"] == "best-test":
        selection = (f"best-test: each original/retrained model is its epoch with the best accuracy on a "
                     f"random {SELECT_FRACTION:.0%} of the test set (the authors' selection; it looks at test data)")
    else:
        selection = "last: each original/retrained model is its final epoch"
    epochs = sorted({r["retrained_epoch"] for r in rows if r.get("retrained_epoch") is not None})
    original = rows[0].get("original_epoch") if rows else None
    return (f"--select {selection}; kept epochs: original {original if original is not None else '-'}, "
            f"retrained {','.join(map(str, epochs)) or '-'} of {config['hparams']['epochs']}. "
            f"anti_sample: --unlearn-mode {config['unlearn_mode']}, --neighbour-pool {config['neighbour_pool']}")


# ----------------------------------------------------------------------------------------------
# comparison.md and plots


def comparison_markdown(summary: dict[str, Any], spread: str | None = None) -> str:
    """One row per method, mean ± std of each compared metric over the forget sets (and, for a metric
    with a `worst_title`, the worst set's value beside it), the best of each column in bold; then the
    retrained model as the reference (not a contender). `spread` says what the mean and std are over
    (default: the forget sets; `seeds.seed_view`: the seeds)."""
    by_method = summary["by_method"]
    # (title, metric, statistic) per column
    columns = [column for m in METRICS if m.better for column in
               [(m.title, m, "mean"), *([(m.worst_title, m, "worst")] if m.worst_title else [])]]
    best = {}
    for _, metric, statistic in columns:
        values = [s[statistic][metric.name] for s in by_method.values() if s[statistic][metric.name] is not None]
        if values:
            best[metric.name, statistic] = (max if metric.better == "high" else min)(values)

    def cell(stats, name, statistic, bold):
        value = stats[statistic].get(name)
        std = stats["std"].get(name) if statistic == "mean" else None
        text = "-" if value is None else f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")
        return f"**{text}**" if bold and value is not None and value == best.get((name, statistic)) else text
    lines = ["| method | " + " | ".join(title for title, *_ in columns) + " |", "|---|" + "---|" * len(columns)]
    for method, stats in by_method.items():
        lines.append(f"| {method} | " + " | ".join(cell(stats, m.name, statistic, True)
                                                   for _, m, statistic in columns) + " |")
    reference = next(iter(by_method.values()))
    if reference["mean"]["retrained_retain_test_acc"] is not None:
        lines.append("| retrained (reference) | " + " | ".join(
            cell(reference, m.retrained, "mean", False) if m.retrained and statistic == "mean" else "-"
            for _, m, statistic in columns) + " |")
    config = summary["config"]
    header = (f"# Method comparison: {config['dataset']} / {config['model']}, "
              f"Unlearning-{config['retain_percent']:g}\n\nMean ± std over "
              f"{spread or f'the forget sets ({len(rows_of(summary)[1]) // len(by_method)})'}, and the worst "
              f"set's forget accuracy (the set forgotten least); best of each column in bold. Higher is better "
              f"for retain accuracy, MIA efficacy and speed-up; lower for forget accuracy, gap and seconds. "
              f"The last row is the model retrained without the forget classes, the gold standard.\n\n")
    return header + "\n".join(lines) + "\n"


MODELS_COMPARED = ("original", "unlearned", "retrained")  # the bars of each method


def new_figure(figsize: tuple[float, float]):
    """A matplotlib Figure without pyplot: files only, never a window. matplotlib is imported here,
    not with this module, since it takes about a second and a run that fails never plots."""
    from matplotlib.figure import Figure
    return Figure(figsize=figsize)


def plot_retain_forget(summary: dict[str, Any], path: Path) -> None:
    """Retain and forget test accuracy (mean ± std over the forget sets) of the original, the
    unlearned and the retrained model, side by side for each method; a marker at the unlearned
    model's worst forget set."""
    by_method = summary["by_method"]
    methods = list(by_method)
    fig = new_figure((max(8.0, 2.2 * len(methods)), 4))
    for ax, part in zip(fig.subplots(1, 2, sharey=True), ["retain", "forget"]):
        for offset, label in zip((-0.27, 0, 0.27), MODELS_COMPARED):
            metric = f"{label}_{part}_test_acc"
            means = [by_method[m]["mean"][metric] for m in methods]
            stds = [by_method[m]["std"][metric] for m in methods]
            ax.bar([i + offset for i in range(len(methods))], [float("nan") if v is None else v for v in means],
                   yerr=[0 if v is None else v for v in stds], width=0.27, label=label, capsize=3)
            if label == "unlearned" and part == "forget":
                worst = [by_method[m]["worst"][metric] for m in methods]
                ax.plot(range(len(methods)), [float("nan") if v is None else v for v in worst], "kv",
                        label="unlearned, worst set")
        ax.set(xticks=range(len(methods)), xticklabels=methods, ylim=(0, 105), title=f"{part} classes, test set")
        ax.tick_params(axis="x", rotation=30)
    fig.axes[0].set_ylabel("accuracy (%, mean ± std)")
    fig.axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_forget_heatmap(rows: list[dict[str, Any]], row_key: str, path: Path) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    units = list(dict.fromkeys(str(r[row_key]) for r in rows))
    grid = torch.full((len(methods), len(units)), float("nan"))
    for r in rows:
        value = r["unlearned_forget_test_acc"]  # None: the forget class has no test samples
        grid[methods.index(r["method"]), units.index(str(r[row_key]))] = float("nan") if value is None else value
    fig = new_figure((max(5.0, 0.7 * len(units) + 2), 0.5 * len(methods) + 1.5))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (i, j), value in zip(torch.cartesian_prod(torch.arange(len(methods)), torch.arange(len(units))).tolist(),
                             grid.flatten().tolist()):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    ax.set(xticks=range(len(units)), xticklabels=units, yticks=range(len(methods)), yticklabels=methods,
           xlabel=row_key.replace("_", " "), title="Forget-class test accuracy (%)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_anti_samples(forget: torch.Tensor, far_retain: torch.Tensor, anti: torch.Tensor,
                      mean: tuple[float, ...], std: tuple[float, ...], path: Path | None = None,
                      columns: int = 6):
    """Forget samples, their far retain partners and anti-samples, de-normalised; saved to
    `path` when given, else returned as a figure."""
    def show(image):
        m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        return (image.cpu() * s + m).clamp(0, 1).permute(1, 2, 0).squeeze(-1)

    fig = new_figure((1.5 * columns, 4.8))
    axes = fig.subplots(3, columns)
    for row_axes, images, name in zip(axes, [forget, far_retain, anti], ["forget", "far retain", "anti-sample"]):
        for ax, image in zip(row_axes, images[:columns]):
            ax.imshow(show(image), cmap="gray")
            ax.set(xticks=[], yticks=[])
        row_axes[0].set_ylabel(name)
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=120)


def write_results(out: Path, summary: dict[str, Any]) -> list[str]:
    """summary.json, summary.csv, comparison.md, retain_forget.png and forget_heatmap.png in `out`.
    A plot that fails is skipped, after the summary is written: returns a line for each."""
    write_json(out / "summary.json", summary)
    write_text(out / "summary.csv", summary_csv(summary))
    write_text(out / "comparison.md", comparison_markdown(summary))
    return write_plots(out, {"retain_forget.png": lambda path: plot_retain_forget(summary, path),
                             "forget_heatmap.png": lambda path: plot_forget_heatmap(*reversed(rows_of(summary)), path)})


def write_plots(out: Path, plots: dict[str, Callable[[Path], None]]) -> list[str]:
    """Each plot (file name -> drawing function) in `out`; one that fails is skipped, never costing the
    results written before it: a line for each."""
    skipped = []
    for name, plot in plots.items():
        try:
            plot(out / name)
        except Exception as error:  # noqa: BLE001 - a plot must never cost the results already written
            skipped.append(f"{name} skipped ({first_line(error)})")
    return skipped
