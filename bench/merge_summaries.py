#!/usr/bin/env python3
"""Merge the per-class rows of several single-class summary.json files into one, with the mean
of every metric over all rows (a metric's mean covers the rows that have it, e.g. the retrained
columns only the classes that were retrained), and print that mean.

    bench/merge_summaries.py merged.json run1/summary.json run2/summary.json
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schema import METRIC_NAMES, summarise  # noqa: E402


def main(out: str, *inputs: str) -> int:
    summaries = [json.loads(Path(path).read_text()) for path in inputs]
    rows = [row for s in summaries for row in s["per_class"] if row["method"] == "anti_sample"]
    stats = summarise(rows)
    mean = stats["mean"]
    merged = {"inputs": list(inputs), "configs": [s["config"] for s in summaries], "per_class": rows,
              "classes": [row["forget_class"] for row in rows], **stats,
              "counts": {m: sum(row[m] is not None for row in rows) for m in METRIC_NAMES}}
    Path(out).write_text(json.dumps(merged, indent=2) + "\n")
    print(f"anti_sample over classes {merged['classes']} (mean and worst class, %; retrained: classes that have one):")
    for metric in METRIC_NAMES:
        if mean[metric] is not None:
            worst = "" if stats["worst"][metric] is None else f"  worst {stats['worst'][metric]:8.2f}"
            print(f"  {metric:28} {mean[metric]:8.2f}{worst}  (n={merged['counts'][metric]})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
