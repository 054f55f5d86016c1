"""tune_unlearning.py: the search never reads the test split, starts from the paper's row, resumes,
and writes a row both entry scripts and the API accept."""
import json
import signal
import subprocess
import sys

import optuna
import pytest
import torch

import anti_sample
import experiment
import hparams
import tune_unlearning
import tuning
from conftest import NOTEBOOK_ROWS, PAPER_CONFIG_FILE, ROOT, method_row, started
from datasets import DATASETS, split_off_validation
from models import list_models

TINY = ["--max-per-class", "20", "--epochs", "2", "--no-progress"]


def tune(tmp_path, *flags):
    """tune_unlearning's main in this process at tiny sizes; (exit status, the study)."""
    status = tune_unlearning.main([*TINY, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                                   *map(str, flags)])
    return status, optuna.load_study(study_name="mnist5k-SmallCNN-30", storage=f"sqlite:///{tmp_path / 'out/study.db'}")


class Unreadable:
    """Stands in for the test split: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the tuner read the test split ({name})")

    def __len__(self):
        raise AssertionError("the tuner read the test split (len)")


@pytest.mark.slow
def test_a_study_never_reads_the_test_split_and_resumes_without_losing_trials(tmp_path, monkeypatch):
    real = experiment.load_dataset
    monkeypatch.setattr(experiment, "load_dataset", lambda *args: (real(*args)[0], Unreadable()))
    status, study = tune(tmp_path, "--trials", 2)
    assert status == 0
    first = [(t.number, t.params, t.value) for t in study.trials]
    assert len(first) == 2
    assert first[0][1] == tuning.searched(tuning.start_row("SmallCNN", "mnist5k", 30))  # the paper's MNIST row

    status, study = tune(tmp_path, "--trials", 3)  # the same command, asking for one more trial
    assert status == 0
    assert [(t.number, t.params, t.value) for t in study.trials][:2] == first
    assert len(study.get_trials(states=tuning.FINISHED)) == 3
    out = tmp_path / "out"
    assert {"best_hparams.json", "tuning.json", "trials.csv", "optimization_history.png"} <= {p.name for p in out.iterdir()}
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 1 + 3
    best = json.loads((out / "best_hparams.json").read_text())
    assert best == hparams.read_file(out / "best_hparams.json")
    assert best["unlearn_epochs"] == study.best_params["unlearn_epochs"]
    assert (best["forget_target"], best["repair_epochs"]) == (None, 0)  # what the trials ran, even if a row differs


def test_the_validation_split_is_stratified_disjoint_and_seeded(mnist5k):
    train = mnist5k[0]
    rest, validation = split_off_validation(train, 10, torch.Generator().manual_seed(0))
    assert len(rest) + len(validation) == len(train)
    for c in range(10):
        assert (validation.labels == c).sum() == round(0.1 * (train.labels == c).sum().item())
    def images(split):
        return {x.numpy().tobytes() for x in split.images}
    assert len(images(train)) == len(train)  # the digits are distinct, so no image is on both sides:
    assert not images(rest) & images(validation)
    again = split_off_validation(train, 10, torch.Generator().manual_seed(0))[1]
    other = split_off_validation(train, 10, torch.Generator().manual_seed(1))[1]
    assert torch.equal(again.images, validation.images) and not torch.equal(other.images, validation.images)


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", list_models())
def test_the_first_trial_is_the_papers_row_never_ours(model, dataset):
    """The start row, written out from docs/METHOD.md: the model's row of the config file (the notebook row
    for ResNet18 / CIFAR-10), or ResNet18's for our own models; for mnist5k, MNIST's."""
    paper_dataset = {"mnist5k": "mnist"}.get(dataset, dataset)
    paper_model = "ResNet18" if model == "SmallCNN" else model
    expected = (NOTEBOOK_ROWS[30] if (paper_model, paper_dataset) == ("ResNet18", "cifar10")
                else PAPER_CONFIG_FILE[(paper_model, paper_dataset)])
    row = tuning.start_row(model, dataset, 30)
    assert method_row(row) == expected and row.convex_combination and row.no_generated_data == 500
    assert (row.unlearn_epochs, row.forget_target, row.repair_epochs) == (5, None, 0)


@pytest.mark.parametrize("model,dataset", hparams.CONFIG_TABLE)
@pytest.mark.parametrize("retain_percent", [30, 100])  # resolve also gives the notebook rows there
def test_every_paper_row_lies_in_the_search_space(model, dataset, retain_percent):
    for name, value in tuning.searched(hparams.resolve(model, dataset, retain_percent)).items():
        kind, *bounds = tuning.SEARCH_SPACE[name]
        assert kind == "bool" or bounds[0] <= value <= bounds[1], (name, value)


def test_a_trial_that_forgets_ranks_above_every_trial_that_does_not():
    forgets = tuning.score([20.0, 30.0], [0.0, tuning.FORGET_TOLERANCE_PERCENT])
    assert forgets == 25.0
    assert tuning.score([99.0, 99.0], [0.0, 2.0]) == -2.0 < 0 <= tuning.score([0.0], [0.0])
    assert tuning.score([90.0], [5.0]) > tuning.score([90.0], [50.0])


def test_steps_put_every_class_end_at_the_same_step():
    for epochs in range(1, hparams.MAX_SEARCHED_UNLEARN_EPOCHS + 1):
        steps = [tuning.step(1, e, epochs) for e in range(1, epochs + 1)]
        assert steps == sorted(set(steps)) and steps[-1] == 2 * hparams.MAX_SEARCHED_UNLEARN_EPOCHS


def test_steps_of_a_schedule_up_to_the_span_never_share_a_step():
    for epochs in (5, 21, 30):
        steps = [tuning.step(0, e, epochs, span=30) for e in range(1, epochs + 1)]
        assert steps == sorted(set(steps)) and steps[-1] == 30


@pytest.mark.slow
def test_with_a_forget_target_and_repair_trials_run_them_and_the_file_keeps_them(tmp_path, monkeypatch, recwarn):
    real = experiment.load_dataset
    monkeypatch.setattr(experiment, "load_dataset", lambda *args: (real(*args)[0], Unreadable()))
    phases, real_train = [], anti_sample.train

    def spy(model, data, params, *args, **kwargs):
        phases.append(kwargs["phase"].split()[0])
        return real_train(model, data, params, *args, **kwargs)
    monkeypatch.setattr(anti_sample, "train", spy)
    status, study = tune(tmp_path, "--trials", 2, "--forget-target", 0.5, "--max-unlearn-epochs", 6,
                         "--repair-epochs", 1)
    assert status == 0
    assert phases and phases == ["unlearning", "repair"] * (len(phases) // 2)  # each class: unlearn, then repair
    for trial in study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):  # every class end reported
        assert all((i + 1) * hparams.MAX_SEARCHED_UNLEARN_EPOCHS in trial.intermediate_values for i in range(3))
    assert not [w for w in recwarn if "already reported" in str(w.message)]  # no two epochs on one step
    best = json.loads((tmp_path / "out" / "best_hparams.json").read_text())
    # a trial's unlearn_epochs above the cap of 6 raise it
    assert best["forget_target"] == 0.5 and best["max_unlearn_epochs"] == max(6, best["unlearn_epochs"])
    assert best["repair_epochs"] == 1
    assert hparams.read_file(tmp_path / "out" / "best_hparams.json") == best


@pytest.mark.slow
def test_a_study_with_other_settings_is_refused(tmp_path, capsys):
    assert tune(tmp_path, "--trials", 1)[0] == 0
    capsys.readouterr()
    status = tune_unlearning.main([*TINY, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                                   "--trials", "2", "--seed", "7"])
    err = capsys.readouterr().err
    assert status == 2 and "was tuned with other settings" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags,message", [
    (["--trials", "0"], "argument --trials: expected a whole number >= 1, got '0'"),
    (["--storage", "nosuchdb://host/db"], "--storage nosuchdb://host/db cannot be opened"),
    (["--storage", "sqlite:///"], "--storage sqlite:/// is an in-memory database"),
    (["--storage", "sqlite:///:memory:"], "is an in-memory database"),
    (["--classes", "4,12"], "class 12 is out of range"),
    (["--timeout", "-5"], "argument --timeout: expected a finite number > 0"),
])
def test_bad_tuner_input_is_one_line_and_exit_2(flags, message, tmp_path, capsys):
    try:
        status = tune_unlearning.main([*TINY, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), *flags])
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_stops_the_tuner_with_exit_130_and_the_same_command_continues(tmp_path):
    def command(trials):
        return [sys.executable, str(ROOT / "tune_unlearning.py"), *TINY, "--trials", str(trials),
                "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]
    with started(command(200), cwd=tmp_path, stderr=subprocess.PIPE, text=True) as process:
        logged = []
        for line in process.stderr:  # optuna logs each finished trial without --progress
            logged.append(line)
            if sum(" finished with value" in line or " pruned." in line for line in logged) == 2:
                break
        process.send_signal(signal.SIGINT)
        err = "".join(logged) + process.communicate(timeout=60)[1]
    assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err
    storage = f"sqlite:///{tmp_path / 'out/study.db'}"

    def finished():
        study = optuna.load_study(study_name="mnist5k-SmallCNN-30", storage=storage)
        return {t.number: t.value for t in study.get_trials(states=tuning.FINISHED)}
    kept = finished()
    assert len(kept) >= 2
    done = subprocess.run(command(len(kept) + 1), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = finished()
    assert {n: v for n, v in after.items() if n in kept} == kept and len(after) == len(kept) + 1


def test_hparams_file_sits_between_the_table_and_the_flags(tmp_path, capsys):
    import cli
    import single_class_unlearning
    path = tmp_path / "best_hparams.json"
    path.write_text(json.dumps({"unlearn_scale_lr": 3.5, "unlearn_epochs": 4, "convex_combination": True}))
    parser = single_class_unlearning.get_args_parser()
    config = cli.resolve_config(parser.parse_args(["--hparams", str(path), "--unlearn-epochs", "6",
                                                   "--out", str(tmp_path)]), multi_class=False)
    table = hparams.resolve("SmallCNN", "mnist", 30)
    assert (config.hparams.unlearn_scale_lr, config.hparams.unlearn_epochs, config.hparams.convex_combination) == (3.5, 6, True)
    assert config.hparams.local_variance == table.local_variance  # not in the file: the table's


def test_the_api_takes_a_hparams_file_and_options_win(tmp_path):
    path = tmp_path / "best_hparams.json"
    path.write_text(json.dumps({"unlearn_scale_lr": 3.0, "unlearn_epochs": 2, "p": 0.5}))
    params = anti_sample.AntiSampleParams.from_file(path, p=0.7)
    assert (params.lr, params.epochs, params.p) == (3.0 * hparams.BASE_LR, 2, 0.7)
    assert params.local_variance == anti_sample.AntiSampleParams().local_variance
    path.write_text(json.dumps({"unlearn_scale_lr": 3.0, "momentum": 0.9}))
    with pytest.raises(anti_sample.UserError, match="unknown key 'momentum'"):
        anti_sample.AntiSampleParams.from_file(path)


@pytest.mark.slow
def test_sigterm_fails_the_running_trial_and_a_rerun_still_evaluates_the_papers_row(tmp_path):
    """SIGTERM (a scheduler, `timeout`, `kill`) during the first trial, the paper's row: the trial is
    failed, not left RUNNING, and the rerun evaluates that row."""
    import time
    storage = f"sqlite:///{tmp_path / 'out/study.db'}"
    command = [sys.executable, str(ROOT / "tune_unlearning.py"), *TINY, "--out", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "c")]

    def trials():
        try:
            return optuna.load_study(study_name="mnist5k-SmallCNN-30", storage=storage).get_trials()
        except (KeyError, ValueError, RuntimeError, Exception):  # the study is not created yet
            return []
    with started([*command, "--trials", "5"], cwd=tmp_path, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 120
        while not any(t.state == optuna.trial.TrialState.RUNNING for t in trials()):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=60)[1]
    assert process.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert [t.state for t in trials()] == [optuna.trial.TrialState.FAIL]
    done = subprocess.run([*command, "--trials", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    finished = [t for t in trials() if t.state in tuning.FINISHED]
    assert [t.params for t in finished] == [tuning.searched(tuning.start_row("SmallCNN", "mnist5k", 30))]


@pytest.mark.slow
def test_tuners_started_together_on_a_new_storage_all_open_it(tmp_path):
    """Three processes open one new SQLite storage at the same instant, three times over: each time
    all three get it (they race to create Optuna's tables; the losers used to be refused)."""
    import time
    opener = ("import sys, time; sys.path.insert(0, sys.argv[3]); import tuning\n"
              "while time.time() < float(sys.argv[2]): pass\n"
              "tuning.open_storage(sys.argv[1])")
    for round_ in range(3):
        url, start = f"sqlite:///{tmp_path / f'study{round_}.db'}", str(time.time() + 5)
        processes = [subprocess.Popen([sys.executable, "-c", opener, url, start, str(ROOT)], stderr=subprocess.PIPE,
                                      text=True) for _ in range(3)]
        errors = [process.communicate(timeout=120)[1] for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0], errors


def test_a_database_of_another_application_is_refused_not_written_to(tmp_path):
    import sqlite3
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table users (name text)")
    with pytest.raises(anti_sample.UserError, match=r"holds tables that are not Optuna's \(users\)"):
        tuning.open_storage(f"sqlite:///{database}")
    with sqlite3.connect(database) as connection:
        assert [row[0] for row in connection.execute("select name from sqlite_master where type='table'")] == ["users"]
    tuning.open_storage(f"sqlite:///{tmp_path / 'study.db'}")  # a new file, and then an Optuna one, are taken
    tuning.open_storage(f"sqlite:///{tmp_path / 'study.db'}")


def test_the_largest_seed_still_seeds_the_sampler_of_a_resumed_study(tmp_path):
    """The sampler's seed is the run's seed plus the trials already there; at --seed 2^32 - 1 that
    left numpy's range after one trial."""
    storage = tuning.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = tuning.open_study(storage, "s", "key", 2 ** 32 - 1)
    study.enqueue_trial({"p": 0.5})
    again = tuning.open_study(storage, "s", "key", 2 ** 32 - 1)  # one trial there: seed 2^32 without the modulo
    assert again.sampler.sample_independent(again, again.ask(), "x", optuna.distributions.FloatDistribution(0, 1)) >= 0
