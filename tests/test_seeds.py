"""--seeds: the whole run once per seed, one folder each, and the statistics over seeds."""
import json
import re
import statistics
import subprocess
import sys

import pytest

import seeds
from conftest import ROOT, numbers, run_main, run_script, run_torchrun, started
from errors import UserError
from schema import METRIC_NAMES, METRICS

TINY = ["--max-per-class", "30", "--epochs", "2", "--unlearn-epochs", "2", "--forget-target", "none",
        "--repair-epochs", "0", "--no-mia"]


def made_up_summary(seed, retain, forget):
    """A seed's summary with one method whose per-class means are `retain` and `forget`."""
    mean = {name: None for name in METRIC_NAMES}
    mean.update(unlearned_retain_test_acc=retain, unlearned_forget_test_acc=forget)
    worst = {name: None for name in METRIC_NAMES}
    worst.update(unlearned_retain_test_acc=retain - 1, unlearned_forget_test_acc=forget + 1)
    return {"config": {"seed": seed, "multi_class": False}, "by_method": {"anti_sample": {"mean": mean, "worst": worst}}}


def test_the_mean_and_sample_std_over_seeds_are_a_hand_computation():
    top = seeds.over_seeds({100: made_up_summary(100, 90.0, 0.0), 101: made_up_summary(101, 92.0, 3.0),
                            102: made_up_summary(102, 97.0, 0.0)})
    stats = top["over_seeds"]["anti_sample"]
    assert stats["n"] == 3 and top["seeds"] == [100, 101, 102]
    assert stats["mean"]["unlearned_retain_test_acc"] == pytest.approx(93.0)
    # sample std (n - 1): sqrt(((90-93)^2 + (92-93)^2 + (97-93)^2) / 2) = sqrt(13)
    assert stats["std"]["unlearned_retain_test_acc"] == pytest.approx(13 ** 0.5)
    assert stats["std"]["unlearned_forget_test_acc"] == pytest.approx(3 ** 0.5)  # values 0, 3, 0: mean 1
    assert stats["worst"]["unlearned_forget_test_acc"] == 4.0 and stats["worst"]["unlearned_retain_test_acc"] == 89.0
    assert stats["mean"]["unlearn_seconds"] is None and stats["std"]["unlearn_seconds"] is None
    assert top["per_seed"]["101"]["anti_sample"]["mean"]["unlearned_forget_test_acc"] == 3.0
    assert "n - 1" in top["std_over_seeds"]
    assert statistics.stdev([90.0, 92.0, 97.0]) == pytest.approx(13 ** 0.5)


@pytest.mark.parametrize("text,expected", [("3", [7, 8, 9]), ("100,101", [100, 101]), ("5", [7, 8, 9, 10, 11])])
def test_seeds_are_a_count_from_seed_or_a_list(text, expected):
    assert seeds.parse_seeds(text, 7) == expected


@pytest.mark.parametrize("text,message", [("0", "at least 1"), ("1,1", "each seed once"), ("a", "expected a count"),
                                          ("-1,2", "not in [0, 2^32)")])
def test_bad_seeds_are_one_line(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        seeds.parse_seeds(text, 100)


def test_seeds_with_a_checkpoint_are_refused(tmp_path, capsys):
    import models
    from store import save_checkpoint
    save_checkpoint(tmp_path / "m.pt", models.get_model("SmallCNN", 10, 1), {})
    status, err = run_main("single_class_unlearning", ["--seeds", "2", "--checkpoint", str(tmp_path / "m.pt"),
                                                       "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path)],
                           capsys)
    assert status == 2 and "--seeds and --checkpoint do not go together" in err


@pytest.mark.slow
def test_each_seed_is_a_whole_run_of_its_own_and_the_top_summary_is_over_them(tmp_path):
    out = tmp_path / "r"
    result = run_script("single_class_unlearning.py", *TINY, "--seeds", "2", "--forget-classes", "0,3", "--methods",
                        "anti_sample,finetune", "--out", out, "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    top = json.loads((out / "summary.json").read_text())
    per_seed = {seed: json.loads((out / f"seed_{seed}" / "summary.json").read_text()) for seed in (100, 101)}
    numbers_before = {seed: numbers(out / f"seed_{seed}" / "summary.json") for seed in (100, 101)}
    assert top["seeds"] == [100, 101] and set(top["over_seeds"]) == {"anti_sample", "finetune"}
    for seed, summary in per_seed.items():  # today's schema, per seed: its own seed and per-class rows
        assert summary["config"]["seed"] == seed and [r["forget_class"] for r in summary["per_class"]] == [0, 0, 3, 3]
        assert summary["by_method"]["anti_sample"]["mean"] == top["per_seed"][str(seed)]["anti_sample"]["mean"]
    originals = sorted((tmp_path / "c").rglob("original_*.pt"))
    assert len(originals) == 2 and originals[0].read_bytes() != originals[1].read_bytes()  # a model per seed
    rows = [[r["original_retain_test_acc"] for r in per_seed[s]["per_class"]] for s in (100, 101)]
    assert rows[0] != rows[1]  # other models, other numbers
    for metric in (m.name for m in METRICS):
        values = [per_seed[s]["by_method"]["finetune"]["mean"][metric] for s in (100, 101)]
        if None not in values:
            assert top["over_seeds"]["finetune"]["mean"][metric] == pytest.approx(sum(values) / 2)
            assert top["over_seeds"]["finetune"]["std"][metric] == pytest.approx(statistics.stdev(values))
    assert "Mean ± std over 2 seeds (sample standard deviation (n - 1)" in (out / "comparison.md").read_text()
    assert (out / "retain_forget.png").read_bytes()[:4] == b"\x89PNG"
    assert "mean ± std (2)" in result.stdout
    table = subprocess.run([sys.executable, "bench/forget_table.py", str(tmp_path), "r"], cwd=ROOT,
                           capture_output=True, text=True)  # bench/forget_cpu.sh's table of such a run
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith("| r | finetune | 2 |"))
    stats, forget = top["over_seeds"]["finetune"], "unlearned_forget_test_acc"
    rows = [(r[forget], r["forget_class"], seed) for seed in (100, 101) for r in per_seed[seed]["per_class"]
            if r["method"] == "finetune"]
    worst, worst_class, worst_seed = max(rows, key=lambda r: r[0])
    assert f"| {stats['mean'][forget]:.2f} ± {stats['std'][forget]:.2f} | **{worst:.2f}** (class {worst_class}, seed " \
           f"{worst_seed}) |" in line, line
    again = run_script("single_class_unlearning.py", *TINY, "--seeds", "2", "--forget-classes", "0,3", "--methods",
                       "anti_sample,finetune", "--out", out, "--cache-dir", tmp_path / "c")
    assert again.returncode == 0, again.stderr  # every seed's units read back: the same numbers
    assert all(numbers(out / f"seed_{seed}" / "summary.json") == numbers_before[seed] for seed in (100, 101))


@pytest.mark.slow
def test_multi_class_seeds_forget_the_first_seeds_draws(tmp_path):
    out = tmp_path / "r"
    result = run_script("multi_class_unlearning.py", *TINY, "--seeds", "101,102", "--draws", "2", "--out", out,
                        "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    drawn = json.loads((out / "draws.json").read_text())
    assert drawn["seed"] == 101
    for seed in (101, 102):
        summary = json.loads((out / f"seed_{seed}" / "summary.json").read_text())
        assert [r["forget_classes"] for r in summary["per_draw"]] == drawn["draws"]


@pytest.mark.slow
def test_a_killed_two_seed_run_resumes_and_ends_with_the_same_numbers(tmp_path):
    """Killed while the second seed runs: the first seed's folder is finished and kept, the rerun
    completes the second, and every number equals an uninterrupted run's."""
    import signal
    import time

    flags = [*TINY, "--seeds", "2", "--forget-classes", "0,3"]
    clean = run_script("single_class_unlearning.py", *flags, "--out", tmp_path / "clean", "--cache-dir", tmp_path / "c0")
    assert clean.returncode == 0, clean.stderr
    command = [sys.executable, str(ROOT / "single_class_unlearning.py"), "--no-progress", *flags,
               "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    second_started = tmp_path / "r" / "seed_101" / "units" / "anti_sample_forget_0.json"
    start = time.monotonic()
    with started(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        while not second_started.exists() and process.poll() is None and time.monotonic() - start < 300:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # seed 100 written, seed 101 under way
        process.wait(timeout=60)
    assert (tmp_path / "r" / "seed_100" / "summary.json").exists() and not (tmp_path / "r" / "summary.json").exists()
    first_seed_unit = tmp_path / "r" / "seed_100" / "units" / "anti_sample_forget_3.json"
    kept = first_seed_unit.stat().st_mtime_ns
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for seed in (100, 101):
        assert numbers(tmp_path / "r" / f"seed_{seed}" / "summary.json") == numbers(
            tmp_path / "clean" / f"seed_{seed}" / "summary.json")
    assert first_seed_unit.stat().st_mtime_ns == kept  # the finished seed's units were read back, not redone
    over = json.loads((tmp_path / "r" / "summary.json").read_text())["over_seeds"]
    clean_over = json.loads((tmp_path / "clean" / "summary.json").read_text())["over_seeds"]
    timing = {m.name for m in METRICS if m.is_timing}
    for method, stats in over.items():
        for statistic in ("mean", "worst"):
            assert {k: v for k, v in stats[statistic].items() if k not in timing} == {
                k: v for k, v in clean_over[method][statistic].items() if k not in timing}


@pytest.mark.slow
def test_torchrun_ranks_share_every_seeds_units_in_one_group_and_end_with_one_processs_numbers(tmp_path):
    """Two CPU processes (gloo), two seeds, two draws: the ranks share each seed's units and rank 0
    writes the same numbers as one process; the rerun reads everything back. A process group
    destroyed and joined again per seed hung at the second seed, and refused to connect on the
    rerun."""
    flags = [*TINY, "--seeds", "2", "--draws", "2"]
    clean = run_script("multi_class_unlearning.py", *flags, "--out", tmp_path / "clean", "--cache-dir", tmp_path / "c0")
    assert clean.returncode == 0, clean.stderr
    for port in (29533, 29534):  # the run, then its rerun
        result = run_torchrun("multi_class_unlearning.py", *flags, "--out", tmp_path / "r", "--cache-dir",
                              tmp_path / "c", port=port)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("wrote summary.json") == 1  # only rank 0 reports
        for seed in (100, 101):
            assert numbers(tmp_path / "r" / f"seed_{seed}" / "summary.json") == numbers(
                tmp_path / "clean" / f"seed_{seed}" / "summary.json")
