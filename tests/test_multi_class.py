"""./multi_class_unlearning.py: drawing forget sets, their validation, and one end-to-end draw."""
import json
import math
import os
import re
import signal

import pytest

from errors import UserError
from conftest import METRIC_NAMES, run_main, run_script
from units import draw_forget_sets


def test_draws_are_reproducible_and_saved(tmp_path):
    first = draw_forget_sets(4, 5, 10, seed=100, out=str(tmp_path / "a"))
    assert first == draw_forget_sets(4, 5, 10, seed=100, out=str(tmp_path / "b"))
    assert all(len(s) == 4 == len(set(s)) and s == sorted(s) for s in first)
    assert len({tuple(s) for s in first}) > 1  # really random sets
    assert json.loads((tmp_path / "a" / "draws.json").read_text())["draws"] == first
    assert draw_forget_sets(4, 3, 10, seed=100, out=str(tmp_path / "c")) == first[:3]
    assert draw_forget_sets(4, 5, 10, seed=7, out=str(tmp_path / "d")) != first


@pytest.mark.parametrize("k", [1, 2, 8, 9])
def test_drawn_sets_are_distinct_and_all_can_be_drawn(k, tmp_path):
    every = math.comb(10, k)
    sets = draw_forget_sets(k, every, 10, seed=100, out=str(tmp_path / "all"))
    assert len({tuple(s) for s in sets}) == every
    assert draw_forget_sets(k, min(every, 10), 10, seed=100, out=str(tmp_path / "some")) == sets[:10]
    with pytest.raises(UserError, match=f"only {every} distinct sets"):
        draw_forget_sets(k, every + 1, 10, seed=100, out=str(tmp_path / "more"))


def test_saved_draws_are_reused_on_rerun(tmp_path):
    draw_forget_sets(2, 2, 10, seed=100, out=str(tmp_path))
    saved = json.loads((tmp_path / "draws.json").read_text())
    saved["draws"] = [[3, 8], [0, 9]]  # e.g. the sets of an earlier comparison run
    (tmp_path / "draws.json").write_text(json.dumps(saved))
    assert draw_forget_sets(2, 2, 10, seed=100, out=str(tmp_path)) == [[3, 8], [0, 9]]


def test_saved_sets_are_kept_and_extended_when_more_draws_are_asked_for(tmp_path):
    (tmp_path / "draws.json").write_text(json.dumps({"seed": 100, "num_forget_classes": 2, "draws": [[2, 3]]}))
    sets = draw_forget_sets(2, 4, 10, seed=100, out=str(tmp_path))
    assert sets[0] == [2, 3] and len({tuple(s) for s in sets}) == 4
    assert json.loads((tmp_path / "draws.json").read_text())["draws"] == sets
    fresh = draw_forget_sets(2, 4, 10, seed=100, out=str(tmp_path / "fresh"))
    assert all(s in fresh or s == [2, 3] for s in sets[1:])  # the rest: the usual draws


def test_a_draws_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    def blocked(*_):
        raise TimeoutError("draws.json was read")
    os.mkfifo(tmp_path / "draws.json")
    signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)  # a blocked read fails the test instead of hanging it
    try:
        with pytest.raises(UserError, match="draws file .*draws.json is not a regular file"):
            draw_forget_sets(2, 2, 10, 100, str(tmp_path))
    finally:
        signal.alarm(0)


def test_default_draws_follow_the_paper(tmp_path):
    assert [len(draw_forget_sets(k, None, 10, 100, str(tmp_path / str(k)))) for k in (2, 4, 7)] == [10, 5, 3]


@pytest.mark.parametrize("k", [0, 10, 11])
def test_k_out_of_range_is_refused(k, tmp_path):
    with pytest.raises(UserError, match="--num-forget-classes"):
        draw_forget_sets(k, 1, 10, 100, str(tmp_path))


@pytest.mark.parametrize("args,message", [
    (["--num-forget-classes", "10"], "--num-forget-classes 10 is out of range"),
    (["--num-forget-classes", "0"], "expected a whole number >= 1, got '0'"),
    (["--forget-classes", "1,10"], "class 10 is out of range"),
    (["--forget-classes", "4,4"], "class 4 is given more than once"),
    (["--forget-classes", "0,1,2,3,4,5,6,7,8,9"], "leaves none to retain"),
    (["--forget-classes", "1,2", "--num-forget-classes", "3"], "--forget-classes and --num-forget-classes do not go together"),
    (["--forget-classes", "1,2", "--draws", "4"], "--forget-classes and --draws do not go together"),
])
def test_bad_forget_sets_are_one_line_errors(args, message, tmp_path, capsys):
    status, err = run_main("multi_class_unlearning", [*args, "--out", str(tmp_path), "--cache-dir", str(tmp_path)],
                           capsys)
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_one_draw_end_to_end_writes_the_schema(tmp_path):
    result = run_script("multi_class_unlearning.py", "--forget-classes", "4,1", "--epochs", "5",
                        "--out", tmp_path / "r", "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert set(summary) == {"config", "per_draw", "mean", "std", "worst", "by_method"}
    (row,) = summary["per_draw"]
    assert row["forget_classes"] == [1, 4]
    assert set(row) >= METRIC_NAMES | {"forget_classes", "method"}
    assert summary["config"]["multi_class"] is True
    assert row["original_forget_test_acc"] > 90 and row["unlearned_forget_test_acc"] < 10
    assert row["retrained_forget_test_acc"] == 0


@pytest.mark.parametrize("content,message", [
    ('{"seed": 100, "num_forget_classes": 2, "draws": [[3, 8], [0, 1, 9]]}', "the set [0, 1, 9] has 3 classes, not K = 2"),
    ('{"seed": 100, "num_forget_classes": 2, "draws": [[3, 12], [0, 1]]}', "class 12 is out of range"),
    ('{"seed": 100, "num_forget_classes": 2, "draws": [[3, 3], [0, 1]]}', "class 3 is given more than once"),
    ('{"seed": 100, "num_forget_classes": 2, "draws": [[1, 8], [8, 1]]}', "the set [1, 8] is given twice"),
    ('{"seed": true, "num_forget_classes": 2, "draws": [[1, 8], [0, 1]]}', "is not a draws file"),
    ('{"seed": 100, "draws": {"0": [3, 8]}}', "is not a draws file"),
    ('{"seed": 7, "num_forget_classes": 2, "draws": [[3, 8], [0, 1]]}',
     "holds the sets of seed 7, K = 2, not of this run's seed 100, K = 2; give another --out"),
    ('[[3, 8]', "is not readable JSON"),
])
def test_a_draws_file_that_is_not_one_is_refused_not_overwritten(content, message, tmp_path):
    (tmp_path / "draws.json").write_text(content)
    with pytest.raises(UserError, match=re.escape(message)):
        draw_forget_sets(2, 2, 10, seed=100, out=str(tmp_path))
    assert (tmp_path / "draws.json").read_text() == content
