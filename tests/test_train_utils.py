"""Training, evaluation and checkpoints."""

import pytest
import torch
from torch import nn

from conftest import CreatesFile
from datasets import Split
from errors import UserError
from models import get_model
from metrics import SELECT_FRACTION, BestEpoch
from store import load_checkpoint, load_weights, save_checkpoint
from train_utils import NonFiniteLossError, Speed, TrainParams, batches, evaluate, train


class ConstantModel(nn.Module):
    """Predicts `label` for every input."""
    def __init__(self, label, num_classes=4):
        super().__init__()
        self.logits = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(label), num_classes).float())

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_evaluate_splits_accuracy_into_retain_and_forget():
    data = Split(torch.zeros(10, 1), torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3, 3]))
    result = evaluate(ConstantModel(0), data, forget_classes=[0])
    assert result == {"all": 40.0, "retain": 0.0, "forget": 100.0}
    result = evaluate(ConstantModel(2), data, forget_classes=[1, 3])
    assert result == pytest.approx({"all": 20.0, "retain": 100 * 2 / 6, "forget": 0.0})


def test_batches_cover_every_index_once_with_a_short_last_batch():
    parts = batches(10, 4, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))


@pytest.mark.slow
def test_training_learns_the_embedded_digits(mnist5k):
    train_split, test = mnist5k
    torch.manual_seed(0)
    import models
    model = models.get_model("SmallCNN", 10, 1)
    train(model, train_split, TrainParams(epochs=3, lr=1e-3, batch_size=128), torch.Generator().manual_seed(0),
          progress=False)
    assert evaluate(model, test, [0])["all"] > 85


@pytest.mark.parametrize("masked", [False, True])
def test_static_batch_steps_match_the_plain_loop(mnist5k, masked):
    """--cuda-graph's step logic (indices copied into one static buffer, the short last batch
    run eagerly), without the capture that needs CUDA: the weights come out identical."""
    import models
    data = mnist5k[0].subset(torch.arange(300))  # 300 = 2 x 128 + a short batch of 44
    states = []
    for speed in [Speed(), Speed(cuda_graph=True)]:
        torch.manual_seed(0)
        model = models.get_model("SmallCNN", 10, 1)
        mask = {name: (torch.rand_like(p) < 0.5).float() for name, p in model.named_parameters()} if masked else None
        train(model, data, TrainParams(epochs=2, lr=1e-3, batch_size=128), torch.Generator().manual_seed(0),
              progress=False, grad_mask=mask, speed=speed)
        states.append(model.state_dict())
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_best_epoch_keeps_the_weights_of_the_epoch_with_the_best_sampled_accuracy():
    """Accuracies we control: a constant model right on every sample (100 %) or on none (0 %)."""
    data = Split(torch.zeros(50, 1), torch.full((50,), 2))
    model = ConstantModel(0)
    best = BestEpoch(model, data, torch.Generator().manual_seed(0))
    for epoch, label in enumerate([0, 2, 1, 2], start=1):  # 0 %, 100 %, 0 %, 100 % (a tie: the first wins)
        with torch.no_grad():
            model.logits.copy_(nn.functional.one_hot(torch.tensor(label), 4).float())
        best(epoch)
    assert best.accuracies == [0.0, 100.0, 0.0, 100.0]
    assert best.epoch == 2
    assert best.state["logits"].argmax().item() == 2
    assert best.count == round(50 * SELECT_FRACTION) == 15


def test_best_epoch_draws_a_fresh_sample_each_epoch():
    data = Split(torch.zeros(100, 1), torch.arange(100) % 4)
    best = BestEpoch(ConstantModel(0), data, torch.Generator().manual_seed(0))
    for epoch in range(1, 6):
        best(epoch)
    assert len(set(best.accuracies)) > 1  # 30 of 100 samples, a quarter of them class 0: shares vary


@pytest.mark.parametrize("eval_mode", [False, True])
def test_after_epoch_runs_every_epoch_and_the_mode_is_set_again(mnist5k, eval_mode):
    import models
    torch.manual_seed(0)
    model = models.get_model("SmallCNN", 10, 1)
    modes = []

    def after_epoch(epoch):
        modes.append((epoch, model.training))
        model.eval()  # as an evaluation would; training must switch back
    train(model, mnist5k[0].subset(torch.arange(256)), TrainParams(3, 1e-3, 128, eval_mode), torch.Generator(),
          progress=False, after_epoch=after_epoch)
    assert modes == [(1, not eval_mode), (2, not eval_mode), (3, not eval_mode)]


def test_non_finite_loss_names_the_phase():
    data = Split(torch.full((8, 3), float("nan")), torch.zeros(8, dtype=torch.long))
    with pytest.raises(NonFiniteLossError, match="unlearning 3"):
        train(nn.Linear(3, 2), data, TrainParams(1, 1e-3, 128), torch.Generator(), phase="unlearning 3",
              progress=False)


def test_checkpoint_round_trip_keeps_weights_and_config(tmp_path):
    model = nn.Linear(3, 2)
    save_checkpoint(tmp_path / "m.pt", model, {"model": "Linear", "epochs": 3})
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["config"] == {"model": "Linear", "epochs": 3}
    other = nn.Linear(3, 2)
    load_weights(other, checkpoint["state_dict"], "m.pt")
    assert torch.equal(other.weight, model.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "m.pt", nn.Linear(3, 2), {})
    with pytest.raises(UserError, match="does not fit this model"):
        load_weights(nn.Linear(3, 5), load_checkpoint(tmp_path / "m.pt")["state_dict"], "m.pt")


def test_checkpoint_with_pickled_objects_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "payload": CreatesFile(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_truncated_checkpoint_is_detected(tmp_path):
    save_checkpoint(tmp_path / "m.pt", nn.Linear(30, 20), {})
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated"):
        load_checkpoint(tmp_path / "m.pt")


def test_a_last_batch_of_one_joins_the_one_before_so_batchnorm_can_train(mnist5k):
    sizes = [len(b) for b in batches(257, 128, torch.Generator().manual_seed(0), torch.device("cpu"))]
    assert sizes == [128, 129]
    index = torch.cat(batches(257, 128, torch.Generator().manual_seed(0), torch.device("cpu")))
    assert sorted(index.tolist()) == list(range(257))
    # BatchNorm1d sees one value per feature in a batch of one sample, which raises in train mode
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model.train()(mnist5k[0].images[:1])
    train(model, mnist5k[0].subset(torch.arange(129)), TrainParams(1, 1e-3, 128), torch.Generator(), progress=False)
