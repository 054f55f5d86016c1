#!/usr/bin/env python3
"""The table of bench/forget_cpu.sh: one line per variant that has OUT/<variant>/summary.json, in
the order given (default: every one found), with the forget-test accuracy of each forget set,
their mean and worst, the mean retain-test accuracy against the retrained models', the epochs each
set ran and the mean seconds.

    bench/forget_table.py bench/measured/forget_cpu [paper target ...]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schema import rows_of, unit_label  # noqa: E402


def line(name: str, summary: dict) -> str:
    key, rows = rows_of(summary)
    mean, worst = summary["mean"], summary["worst"]
    units = " / ".join(unit_label(r, key) for r in rows)
    forget = " / ".join(f"{r['unlearned_forget_test_acc']:.2f}" for r in rows)
    epochs = " / ".join(str(r["unlearn_epochs"]) for r in rows)
    return (f"| {name} | {units} | {forget} | {mean['unlearned_forget_test_acc']:.2f} | "
            f"**{worst['unlearned_forget_test_acc']:.2f}** | {mean['unlearned_retain_test_acc']:.2f} | "
            f"{mean['retrained_retain_test_acc']:.2f} | {epochs} | {mean['unlearn_seconds']:.1f} |")


def main(out: str, *variants: str) -> int:
    found = ([Path(out) / v / "summary.json" for v in variants] if variants
             else sorted(Path(out).glob("*/summary.json")))
    found = [path for path in found if path.is_file()]
    if not found:
        sys.exit(f"no */summary.json in {out}")
    print("| variant | forget sets | forget test % | mean | worst | retain test % | retrained retain % "
          "| epochs run | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in found:
        print(line(path.parent.name, json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
