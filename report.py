"""The comparison report written next to summary.json: comparison.md and PNG plots (files only).

`write_comparison(out, summary, row_key)` is called by the entry scripts when more than one
method ran; `plot_anti_samples` is shared with the notebooks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure  # figures without pyplot: files only, never a window

from train_utils import atomic_write

# (metric, column title, better: "high" / "low")
COMPARED = [
    ("unlearned_retain_test_acc", "retain test %", "high"),
    ("unlearned_forget_test_acc", "forget test %", "low"),
    ("unlearned_retain_train_acc", "retain train %", "high"),
    ("unlearned_forget_train_acc", "forget train %", "low"),
    ("mia_efficacy", "MIA efficacy %", "high"),
    ("gap_to_retrain", "gap to retrain", "low"),
    ("unlearn_seconds", "seconds", "low"),
    ("speedup_vs_retrain", "speed-up vs retrain", "high"),
]


def comparison_markdown(summary: dict[str, Any]) -> str:
    """One row per method, mean ± std of each metric over the forget sets; the best value of
    each column in bold (the retrain row is the reference, not a contender)."""
    by_method = summary["by_method"]
    contenders = [m for m in by_method if m != "retrain"]
    best = {}
    for metric, _, better in COMPARED:
        values = {m: by_method[m]["mean"][metric] for m in contenders if by_method[m]["mean"][metric] is not None}
        if values:
            best[metric] = (max if better == "high" else min)(values.values())
    lines = ["| method | " + " | ".join(title for _, title, _ in COMPARED) + " |",
             "|---|" + "---|" * len(COMPARED)]
    for method, stats in by_method.items():
        cells = []
        for metric, _, _ in COMPARED:
            mean, std = stats["mean"][metric], stats["std"][metric]
            cell = "-" if mean is None else f"{mean:.2f} ± {std:.2f}"
            cells.append(f"**{cell}**" if method != "retrain" and mean is not None and mean == best.get(metric) else cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    config = summary["config"]
    header = (f"# Method comparison: {config['dataset']} / {config['model']}, "
              f"Unlearning-{config['retain_percent']:g}\n\nMean ± std over the forget sets "
              f"({len(summary.get('per_class', summary.get('per_draw', []))) // len(by_method)}); "
              f"best of each column in bold (retrain is the reference). Higher is better for "
              f"retain accuracy, MIA efficacy and speed-up; lower for forget accuracy, gap and seconds.\n\n")
    return header + "\n".join(lines) + "\n"


MODELS_COMPARED = [("original", "original"), ("unlearned", "unlearned"), ("retrained", "retrained")]


def plot_retain_forget(summary: dict[str, Any], path: Path) -> None:
    """Retain and forget test accuracy (mean ± std over the forget sets) of the original, the
    unlearned and the retrained model, side by side for each method."""
    by_method = summary["by_method"]
    methods = list(by_method)
    fig = Figure(figsize=(max(8.0, 2.2 * len(methods)), 4))
    for ax, part in zip(fig.subplots(1, 2, sharey=True), ["retain", "forget"]):
        for offset, (prefix, label) in zip((-0.27, 0, 0.27), MODELS_COMPARED):
            metric = f"{prefix}_{part}_test_acc"
            means = [by_method[m]["mean"][metric] for m in methods]
            stds = [by_method[m]["std"][metric] for m in methods]
            ax.bar([i + offset for i in range(len(methods))], [float("nan") if v is None else v for v in means],
                   yerr=[0 if v is None else v for v in stds], width=0.27, label=label, capsize=3)
        ax.set(xticks=range(len(methods)), xticklabels=methods, ylim=(0, 105), title=f"{part} classes, test set")
        ax.tick_params(axis="x", rotation=30)
    fig.axes[0].set_ylabel("accuracy (%, mean ± std)")
    fig.axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_forget_heatmap(rows: list[dict[str, Any]], row_key: str, path: Path) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    units = list(dict.fromkeys(str(r[row_key]) for r in rows))
    grid = torch.full((len(methods), len(units)), float("nan"))
    for r in rows:
        grid[methods.index(r["method"]), units.index(str(r[row_key]))] = r["unlearned_forget_test_acc"]
    fig = Figure(figsize=(max(5.0, 0.7 * len(units) + 2), 0.5 * len(methods) + 1.5))
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

    fig = Figure(figsize=(1.5 * columns, 4.8))
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


def write_comparison(out: Path, summary: dict[str, Any], row_key: str) -> list[Path]:
    """comparison.md, retain_forget.png and forget_heatmap.png in `out`."""
    rows = summary.get("per_class", summary.get("per_draw"))
    text = comparison_markdown(summary)
    atomic_write(out / "comparison.md", lambda file: file.write(text.encode()))
    plot_retain_forget(summary, out / "retain_forget.png")
    plot_forget_heatmap(rows, row_key, out / "forget_heatmap.png")
    return [out / "comparison.md", out / "retain_forget.png", out / "forget_heatmap.png"]
