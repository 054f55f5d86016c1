#!/usr/bin/env python3
"""The tables of bench/forget_cpu.sh: one line per variant (and per method in it) that has
OUT/<variant>/summary.json, in the order given (default: every one found).

- A one-seed summary: the forget-test accuracy of each forget set, their mean and worst, the mean
  retain-test accuracy against the retrained models', the epochs each set ran and the mean seconds.
- A several-seeds summary (`--seeds`): mean ± sample std (n - 1) over the seeds of each seed's mean
  over its forget sets, the worst forget set of all seeds (which one, at which seed), the worst of
  each seed, and the epochs run (mean, and the most any set ran).

    bench/forget_table.py bench/measured/forget_cpu [paper target ...]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schema import rows_of, unit_label  # noqa: E402

UNIT_WORD = {"forget_class": "class", "forget_classes": "classes"}
FORGET, RETAIN, GOLD = "unlearned_forget_test_acc", "unlearned_retain_test_acc", "retrained_retain_test_acc"
ONE_SEED = ("| variant | forget sets | forget test % | mean | worst | retain test % | retrained retain % "
            "| epochs run | seconds |\n|---|---|---|---|---|---|---|---|---|")
SEEDS = ("| variant | method | seeds | forget test % | worst forget set | worst per seed | retain test % "
         "| retrained retain % | epochs run (mean, most) | seconds |\n|---|---|---|---|---|---|---|---|---|---|")


def one_seed_line(name: str, summary: dict) -> str:
    key, rows = rows_of(summary)
    mean, worst = summary["mean"], summary["worst"]
    units = " / ".join(unit_label(r, key) for r in rows)
    forget = " / ".join(f"{r[FORGET]:.2f}" for r in rows)
    epochs = " / ".join(str(r["unlearn_epochs"]) for r in rows)
    return (f"| {name} | {units} | {forget} | {mean[FORGET]:.2f} | **{worst[FORGET]:.2f}** | {mean[RETAIN]:.2f} | "
            f"{mean['retrained_retain_test_acc']:.2f} | {epochs} | {mean['unlearn_seconds']:.1f} |")


def spread(stats: dict, metric: str, digits: int = 2) -> str:
    mean, std = stats["mean"][metric], stats["std"][metric]
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def seeds_lines(name: str, folder: Path, top: dict) -> list[str]:
    """A line per method of a several-seeds summary; its per-seed rows are read from seed_<seed>/."""
    per_seed = {seed: json.loads((folder / f"seed_{seed}" / "summary.json").read_text()) for seed in top["seeds"]}
    lines = []
    for method, stats in top["over_seeds"].items():
        rows = [(seed, key, row) for seed, summary in per_seed.items()
                for key, rows in [rows_of(summary)] for row in rows if row["method"] == method]
        seed, key, worst = max(rows, key=lambda r: r[2][FORGET])
        epochs = [row["unlearn_epochs"] for _, _, row in rows if row["unlearn_epochs"] is not None]
        epochs_text = f"{sum(epochs) / len(epochs):.1f}, {max(epochs)}" if epochs else "-"
        seed_worsts = " / ".join(f"{top['per_seed'][str(s)][method]['worst'][FORGET]:.2f}" for s in top["seeds"])
        lines.append(f"| {name} | {method} | {stats['n']} | {spread(stats, FORGET)} | "
                     f"**{worst[FORGET]:.2f}** ({UNIT_WORD[key]} {unit_label(worst, key)}, seed {seed}) | {seed_worsts} | "
                     f"{spread(stats, RETAIN)} | {spread(stats, GOLD)} | {epochs_text} | "
                     f"{spread(stats, 'unlearn_seconds', 1)} |")
    return lines


def main(out: str, *variants: str) -> int:
    found = ([Path(out) / v / "summary.json" for v in variants] if variants
             else sorted(Path(out).glob("*/summary.json")))
    found = [path for path in found if path.is_file()]
    if not found:
        sys.exit(f"no */summary.json in {out}")
    summaries = [(path.parent, json.loads(path.read_text())) for path in found]
    several = [(folder, s) for folder, s in summaries if "over_seeds" in s]
    one = [(folder, s) for folder, s in summaries if "over_seeds" not in s]
    if one:
        print(ONE_SEED)
        print("\n".join(one_seed_line(folder.name, s) for folder, s in one))
    if several:
        print(SEEDS)
        print("\n".join(line for folder, s in several for line in seeds_lines(folder.name, folder, s)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
