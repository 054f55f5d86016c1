"""The paper's toy comparison and the UNSIR baseline."""
import pytest
import torch

import toy_example
import unsir
from datasets import Split


@pytest.mark.slow
def test_over_ten_seeds_unsir_loses_a_retain_class_at_most_seeds_and_anti_samples_at_none():
    """The paper's point (its one run: UNSIR 66.67 % retain, anti-samples 95.0 %), which one seed
    can hide: at seed 0 UNSIR keeps 93.33 %. Measured 2026-12-02 (seeds 0-9): UNSIR 70.17 % retain
    with a retain class under 50 % at 7 seeds; anti-samples 95.33 %, none lost, forget 0 % at 8 seeds."""
    table = toy_example.compare_over_seeds(toy_example.DEFAULT_SEEDS)
    print("\n" + toy_example.format_table(table, toy_example.DEFAULT_SEEDS))

    def mean(model, part):
        return sum(table[model][part]) / len(table[model][part])

    def lost(model):
        return sum(value < toy_example.LOST_BELOW for value in table[model]["lowest_retain_class"])
    assert len(toy_example.DEFAULT_SEEDS) >= 10
    assert mean("original", "forget") > 90 and lost("original") == 0
    assert mean("anti_sample", "retain") >= 90 and lost("anti_sample") == 0
    assert sum(value == 0 for value in table["anti_sample"]["forget"]) >= 7
    assert mean("unsir", "retain") <= 80 and lost("unsir") >= 5
    assert mean("anti_sample", "retain") >= mean("unsir", "retain") + 15


@pytest.mark.slow
def test_the_forget_target_forgets_where_the_papers_one_epoch_did_not():
    """Seed 6: one epoch leaves 60 % of class 0's test points (measured 2026-12-02); the target goes on."""
    import dataclasses
    one_epoch = toy_example.run_toy_comparison(6).accuracy["anti_sample"]["forget"]
    params = dataclasses.replace(toy_example.ANTI_SAMPLE, forget_target=0.5)
    with pytest.warns(UserWarning):  # measured: it stops at the 30-epoch cap with class 0 above 0.5 % on train
        target = toy_example.run_toy_comparison(6, anti_sample_params=params).accuracy["anti_sample"]["forget"]
    assert one_epoch >= 25 and target <= one_epoch - 25


def test_blobs_follow_the_paper():
    train, test = toy_example.make_blobs(0)
    assert len(train) == 320 and len(test) == 80
    offsets = []
    for label, centre in enumerate(toy_example.BLOB_MEANS):
        points = torch.cat([train.images[train.labels == label], test.images[test.labels == label]])
        assert torch.allclose(points.mean(0), torch.tensor(centre), atol=0.1)
        offsets.append(points - points.mean(0))
    # covariance 0.1 I, pooled over the 400 points (sampling error of a variance here: ~7%)
    assert torch.allclose(torch.cat(offsets).var(0), torch.full((2,), 0.1), rtol=0.2)


def test_error_maximising_noise_is_misclassified():
    torch.manual_seed(0)
    model = toy_example.toy_mlp()
    train, _ = toy_example.make_blobs(0)
    toy_example.train(model, train, toy_example.TRAIN, torch.Generator().manual_seed(0), progress=False)
    noise = unsir.error_maximising_noise(model, 2, (2,), unsir.PRESETS["toy"], torch.Generator().manual_seed(0),
                                         torch.device("cpu"))
    assert noise.shape == (256, 2)
    assert (model(noise).argmax(1) == 2).float().mean() < 0.1  # almost none predicted as class 2


def test_unsir_labels_each_class_noise_with_that_class(monkeypatch):
    """The public code labels every class's noise 0; ours labels it with the forget class."""
    seen = []
    monkeypatch.setattr(unsir, "train", lambda model, data, *a, **k: seen.append(data.labels.clone()))
    retain = Split(torch.randn(20, 2), torch.zeros(20, dtype=torch.long))
    params = unsir.UnsirParams(noise_batch=5, noise_steps=2, rounds=1)
    unsir.unsir_unlearn(toy_example.toy_mlp(), [1, 3], retain, params, torch.Generator().manual_seed(0))
    impair_labels = seen[0]
    assert impair_labels[:10].tolist() == [1] * 5 + [3] * 5
    assert torch.equal(seen[1], retain.labels)  # repair: retain data alone


def test_the_script_prints_both_methods_over_the_seeds_and_saves_the_figure(tmp_path, capsys):
    assert toy_example.main(["--seeds", "0,1", "--plot", str(tmp_path / "toy.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "over seeds [0, 1]" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    # retain "mean ± std", forget "mean ± std", worst forget, seeds that lost a retain class
    assert set(rows) == {"original", "unsir", "anti_sample"} and all(len(cells) == 8 for cells in rows.values())
    assert float(rows["anti_sample"][3]) == 0.0 and rows["anti_sample"][7] == "0/2"  # forgotten, nothing lost
    assert (tmp_path / "toy.png").read_bytes()[:4] == b"\x89PNG"
