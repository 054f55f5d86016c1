"""Several seeds: the whole run again for each (original and retrained models, retain-subset draw,
anti-samples, shuffles), one folder per seed, and the statistics over seeds.

Two standard deviations are reported, and they are different things:
- each seed's own summary.json keeps today's "std": over its forget classes (or draws);
- the top-level summary.json's "over_seeds" holds, per method and metric, the mean and the sample
  standard deviation (n - 1) of the seeds' means: how much the result moves from run to run.
"""
from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from distributed import process_group, run
from errors import UserError
from experiment import Experiment, RunConfig
from report import comparison_markdown, plot_retain_forget, write_plots
from schema import METRICS, ROWS_NAME
from seeding import SEED
from store import write_json, write_text

STD_OVER_SEEDS = "sample standard deviation (n - 1) over the seeds of each seed's mean over its forget sets"


def parse_seeds(text: str, first: int) -> list[int]:
    """--seeds: "100,101,102" (those seeds) or "3" (that many, from --seed on)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected a count (e.g. 3) or comma-separated seeds (e.g. 100,101,102)") \
            from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise UserError(f"--seeds {values[0]}: give at least 1 seed")
        values = list(range(first, first + values[0]))
    if not values or len(set(values)) != len(values):
        raise UserError(f"--seeds {text!r}: give each seed once")
    bad = next((s for s in values if not SEED.accepts(s)), None)
    if bad is not None:
        raise UserError(f"--seeds: seed {bad} is not in [0, 2^32)")
    return values


def seed_config(config: RunConfig, seed: int) -> RunConfig:
    """The run of one seed: its own seed, and its own folder under --out."""
    return replace(config, seed=seed, out=str(Path(config.out) / f"seed_{seed}"))


def run_seeds(config: RunConfig, units: list[list[int]], seeds: list[int],
              after_seed: Callable[[RunConfig, Experiment, dict[str, Any]], None]) -> dict[int, dict[str, Any]] | None:
    """Each seed's summary (`distributed.run`, on the same units; each seed resumes from its own
    folder); `after_seed(config, experiment, summary)` as soon as a seed is done (its files). Under
    torchrun the summaries are rank 0's and the other ranks get None."""
    if config.checkpoint is not None:
        raise UserError("--seeds and --checkpoint do not go together: one given model has one seed; "
                        "run the seeds without --checkpoint, or one --seed with it")
    summaries = {}
    with process_group(config):  # under torchrun, one group for all the seeds
        for seed in seeds:
            one = seed_config(config, seed)
            experiment, summaries[seed] = run(one, units)
            if summaries[seed] is not None:
                after_seed(one, experiment, summaries[seed])
    return None if any(s is None for s in summaries.values()) else summaries


def over_seeds(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The top-level summary.json: the config (its seed: the first), the seeds, each seed's mean and
    worst per method ("per_seed"), and per method and metric the mean, the sample std (n - 1) and
    the worst over the seeds of those means ("over_seeds"; worst: of the seeds' worst values)."""
    seeds = list(summaries)
    first = summaries[seeds[0]]
    methods = list(first["by_method"])
    per_seed = {str(seed): {m: {"mean": s["by_method"][m]["mean"], "worst": s["by_method"][m]["worst"]}
                            for m in methods} for seed, s in summaries.items()}
    stats = {}
    for method in methods:
        means = [summaries[seed]["by_method"][method]["mean"] for seed in seeds]
        worsts = [summaries[seed]["by_method"][method]["worst"] for seed in seeds]
        stats[method] = {"n": len(seeds), "mean": {}, "std": {}, "worst": {}}
        for metric in METRICS:
            values = [m[metric.name] for m in means if m[metric.name] is not None]
            stats[method]["mean"][metric.name] = statistics.mean(values) if values else None
            stats[method]["std"][metric.name] = statistics.stdev(values) if len(values) > 1 else None
            worst = [w[metric.name] for w in worsts if w[metric.name] is not None]
            pick = {"high": min, "low": max}.get(metric.better)
            stats[method]["worst"][metric.name] = pick(worst) if worst and pick else None
    return {"config": first["config"], "seeds": seeds, "std_over_seeds": STD_OVER_SEEDS, "per_seed": per_seed,
            "over_seeds": stats}


def seed_view(top: dict[str, Any]) -> dict[str, Any]:
    """`over_seeds(...)` shaped as a summary whose statistics are over the seeds, for comparison.md and
    retain_forget.png (`report.comparison_markdown`, `report.plot_retain_forget`)."""
    multi_class = top["config"]["multi_class"]
    return {"config": top["config"], ROWS_NAME[multi_class]: [],
            "by_method": {method: {name: stats[name] for name in ("mean", "std", "worst")}
                          for method, stats in top["over_seeds"].items()}}


def write_seed_results(out: Path, top: dict[str, Any]) -> list[str]:
    """The top-level summary.json, comparison.md and retain_forget.png (error bars over the seeds) in
    `out`; a line for each plot that fails (after the summary is written)."""
    view = seed_view(top)
    write_json(out / "summary.json", top)
    write_text(out / "comparison.md", comparison_markdown(view, spread=f"{len(top['seeds'])} seeds ({STD_OVER_SEEDS})"))
    return write_plots(out, {"retain_forget.png": lambda path: plot_retain_forget(view, path)})
