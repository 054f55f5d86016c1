"""The fast far-neighbour search and anti-sample generator against the step-by-step reference of docs/METHOD.md."""
import pytest
import torch

from anti_sample import AntiSampleParams, anti_sample_set, make_anti_samples, make_anti_samples_reference
from far_neighbours import DistanceBounds, bound_basis, farthest_retain_indices, farthest_retain_indices_reference
from datasets import load_dataset

PARAMS = AntiSampleParams(local_variance=5, size_multiplier=2, p=0.9, tail_randomized=20,
                          no_generated_data=300, eps=0.01)


def random_rows(n_forget=200, n_retain=700, dim=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_forget, dim, generator=g), torch.randn(n_retain, dim, generator=g) + 0.5


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("k", [1, 20, 50])
def test_fast_path_picks_the_same_far_neighbours_as_the_reference(k):
    forget, retain = random_rows()
    assert torch.equal(farthest_retain_indices(forget, retain, k),
                       farthest_retain_indices_reference(forget, retain, k))


@pytest.fixture(scope="module")
def cifar10_rows(cifar10_archive):
    """Real CIFAR-10 rows: 300 training images of class 0 against 2,700 of the other classes."""
    train, _ = load_dataset("cifar10", cifar10_archive, max_per_class=300)
    return train.of_classes([0]).images.flatten(1), train.of_classes(list(range(1, 10))).images.flatten(1)


@pytest.mark.parametrize("k", [1, 30])
@pytest.mark.slow
def test_pruned_search_picks_the_reference_neighbours_on_real_images(cifar10_rows, k, monkeypatch):
    forget, retain = cifar10_rows
    kept = []
    rows_to_score = DistanceBounds.rows_to_score

    def spy(self, chunk, k):
        needed = rows_to_score(self, chunk, k)
        kept.append(None if needed is None else len(needed))
        return needed
    monkeypatch.setattr(DistanceBounds, "rows_to_score", spy)
    assert torch.equal(farthest_retain_indices(forget, retain, k), farthest_retain_indices_reference(forget, retain, k))
    print(f"\nretain rows scored per chunk of forget rows (of {len(retain)}): {kept}")
    assert kept and all(n is not None and n < len(retain) / 4 for n in kept)  # it really pruned


def test_embedded_digits_give_the_reference_neighbours(mnist5k):
    """mnist5k's 3,600 retain rows: bounds are tried, and pruning keeps too many to pay."""
    train, _ = mnist5k
    forget, retain = train.of_classes([0]).images, train.of_classes(list(range(1, 10))).images
    assert bound_basis(retain.flatten(1)) is not None
    assert torch.equal(farthest_retain_indices(forget, retain, 20), farthest_retain_indices_reference(forget, retain, 20))


def test_unstructured_rows_get_no_bound_basis():
    forget, retain = random_rows(n_retain=3000, dim=600)
    assert bound_basis(retain) is None


def test_far_neighbours_really_are_the_farthest():
    forget, retain = random_rows(n_forget=5, n_retain=50)
    far = farthest_retain_indices(forget, retain, 3)
    distances = torch.cdist(forget, retain)
    for i in range(5):
        assert torch.equal(far[i], distances[i].sort(descending=True).indices[:3])


@pytest.mark.parametrize("chunk_elements", [1, 700, 5 * 700 + 3])
def test_chunked_and_unchunked_agree(chunk_elements):
    forget, retain = random_rows()
    whole = farthest_retain_indices(forget, retain, 20, chunk_elements=len(forget) * len(retain))
    assert torch.equal(farthest_retain_indices(forget, retain, 20, chunk_elements), whole)
    assert torch.equal(make_anti_samples(forget, retain, PARAMS, gen(), chunk_elements),
                       make_anti_samples(forget, retain, PARAMS, gen()))


def test_same_seed_same_anti_samples_and_another_seed_others():
    forget, retain = random_rows()
    first = make_anti_samples(forget, retain, PARAMS, gen(1))
    assert torch.equal(first, make_anti_samples(forget, retain, PARAMS, gen(1)))
    assert not torch.equal(first, make_anti_samples(forget, retain, PARAMS, gen(2)))


@pytest.mark.parametrize("convex", [True, False])
def test_output_distribution_matches_the_reference(convex):
    forget, retain = random_rows(n_forget=500, n_retain=900, dim=16)
    params = AntiSampleParams(1, 10, 0.8, 10, 4000, 0.05, convex_combination=convex)
    fast = make_anti_samples(forget, retain, params, gen(3))
    reference = make_anti_samples_reference(forget, retain, params, gen(4))
    assert fast.shape == reference.shape == ((4000, 16) if convex else (5000, 16))
    # means and spreads per feature agree within sampling noise (a wrong scale, p or neighbour
    # choice moves them by far more: see the checks below on a wrong variant)
    assert (fast.mean(0) - reference.mean(0)).abs().max() < 0.1
    assert (fast.std(0) / reference.std(0) - 1).abs().max() < 0.1
    wrong = make_anti_samples(forget, retain, AntiSampleParams(
        1.5, 10, 0.8, 10, 4000, 0.05, convex_combination=convex), gen(3))
    assert (wrong.std(0) / reference.std(0) - 1).abs().max() > 0.1
    assert not torch.equal(fast, reference)  # different random streams, as documented


def test_without_noise_the_candidates_are_the_drawn_far_neighbours():
    forget, retain = random_rows()
    params = AntiSampleParams(0, 1, 1.0, None, 1, convex_combination=False)
    farthest = retain[farthest_retain_indices_reference(forget, retain, 1)[:, 0]]
    assert torch.equal(make_anti_samples(forget, retain, params, gen()), farthest)


def test_convex_combination_stays_inside_the_candidates_range():
    forget, retain = random_rows()
    candidates = make_anti_samples(forget, retain, PARAMS.__class__(
        **{**PARAMS.__dict__, "convex_combination": False}), gen(5))
    mixed = make_anti_samples(forget, retain, PARAMS, gen(5))  # same draws, then mixed
    assert mixed.shape == (PARAMS.no_generated_data, forget.shape[1])
    assert (mixed >= candidates.min(0).values - 1e-5).all()
    assert (mixed <= candidates.max(0).values + 1e-5).all()
    # a real mixture: strictly inside, not a copy of a candidate
    assert not any(torch.equal(row, c) for row in mixed[:5] for c in candidates)


def test_perturbed_features_follow_the_local_scale():
    """With p = 1 every feature is N(neighbour, lambda * (|F - N| + eps))."""
    forget, retain = torch.zeros(4000, 2), torch.tensor([[3.0, 1.0]])
    params = AntiSampleParams(2.0, 1, 1.0, None, 1, eps=0.5, convex_combination=False)
    out = make_anti_samples(forget, retain, params, gen())
    assert torch.allclose(out.mean(0), torch.tensor([3.0, 1.0]), atol=0.3)
    assert torch.allclose(out.std(0), torch.tensor([2 * 3.5, 2 * 1.5]), rtol=0.05)


def test_anti_sample_set_labels_each_class_set_with_its_class(mnist5k):
    train, _ = mnist5k
    retain = train.of_classes([2, 3, 4])
    anti = anti_sample_set(train.of_classes([1, 0]), retain, PARAMS, gen())
    assert anti.images.shape == (2 * PARAMS.no_generated_data, 1, 28, 28)
    assert torch.equal(anti.labels, torch.tensor([0] * 300 + [1] * 300))


def test_user_tf32_setting_is_overridden_inside_the_search_and_restored():
    """A user who enabled TF32 (torch.set_float32_matmul_precision("high")) still gets the
    reference's neighbours, and keeps the setting."""
    generator = torch.Generator().manual_seed(3)
    forget, retain = torch.randn(40, 64, generator=generator), torch.randn(500, 64, generator=generator)
    torch.set_float32_matmul_precision("high")
    try:
        seen = []
        real_addmm = torch.addmm
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "addmm", lambda *a, **k: seen.append(torch.get_float32_matmul_precision())
                          or real_addmm(*a, **k))
            fast = farthest_retain_indices(forget, retain, 5)
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.equal(fast, farthest_retain_indices_reference(forget, retain, 5))
    finally:
        torch.set_float32_matmul_precision("highest")
