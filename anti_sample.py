"""Anti-sample generation (Mondal & Samanta, 2025; ../shared/PAPER.md) and the unlearning step.

For each forget sample, pick one of its k farthest retain samples N, perturb N with Gaussian
noise whose per-feature scale is lambda * (|F - N| + eps), keep each perturbed feature with
probability p, repeat m times, and optionally mix the n_f * m candidates into g anti-samples
with softmax(Gaussian) convex weights. The anti-samples, labelled with the forget class and
mixed with the retain subset, are what the model is fine-tuned on to forget.

`make_anti_samples` is the fast path: far neighbours by chunked matmul distances and top-k,
all m rounds drawn at once, on whatever device the tensors live. `make_anti_samples_reference`
follows PAPER.md step by step (full distance matrix, full sort, a loop over rounds); it is the
oracle in tests and the baseline in benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from datasets import Split

DEFAULT_CHUNK_ELEMENTS = 1 << 22  # distance-matrix entries held at once (16 MiB of float32)
CANDIDATE_MARGIN = 8  # float32 candidates beyond k, re-ranked in float64 (rounding only swaps near-ties)


@dataclass(frozen=True)
class AntiSampleParams:
    local_variance: float  # lambda: noise scale, in units of |F - N| + eps
    size_multiplier: int  # m: rounds, each giving one candidate per forget sample
    p: float  # probability of keeping a perturbed feature (else the neighbour's feature)
    tail_randomized: int | None  # k: draw among the k farthest retain samples; None: the farthest
    no_generated_data: int  # g: anti-samples out of the convex combination
    eps: float = 0.01  # floor of the noise scale, in normalised pixel units
    convex_combination: bool = True  # False: output the n_f * m candidates themselves

    def __post_init__(self):
        if self.local_variance < 0 or self.size_multiplier < 1 or not 0 <= self.p <= 1:
            raise ValueError(f"invalid anti-sample parameters: {self}")
        if self.tail_randomized is not None and self.tail_randomized < 1:
            raise ValueError(f"tail_randomized must be >= 1 or None, got {self.tail_randomized}")
        if self.convex_combination and self.no_generated_data < 1:
            raise ValueError(f"no_generated_data must be >= 1, got {self.no_generated_data}")

    @property
    def num_far(self) -> int:
        return self.tail_randomized or 1


# ----------------------------------------------------------------------------------------------
# Far neighbours


def farthest_retain_indices(forget: torch.Tensor, retain: torch.Tensor, k: int,
                            chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """(n_f, k) indices into `retain` of each forget row's k farthest retain rows, farthest first.

    Per chunk of forget rows: squared distances ||f||^2 + ||r||^2 - 2 f.r (one matmul in the
    input dtype), top-(k + 8) candidates, then those few re-ranked by float64 distances, so
    the ranking is the float64 one, not one perturbed by float32 rounding. At most
    `chunk_elements` distances (or candidate features) exist at once."""
    forget, retain = forget.flatten(1), retain.flatten(1)
    k = min(k, len(retain))
    num_candidates = min(k + CANDIDATE_MARGIN, len(retain))
    retain_sq = retain.square().sum(1)
    retain_sq64 = torch.cat([r.double().square().sum(1) for r in retain.split(1024)])
    rows = max(1, chunk_elements // len(retain))
    rescore_rows = max(1, chunk_elements // 8 // (num_candidates * retain.shape[1]))
    out = torch.empty(len(forget), k, dtype=torch.long, device=forget.device)
    for start in range(0, len(forget), rows):
        chunk = forget[start:start + rows]
        # ||r||^2 - 2 f.r ranks a row's retain samples as the squared distance does (||f||^2 is
        # the same for the whole row), in one fused matmul
        candidates = torch.addmm(retain_sq, chunk, retain.T, alpha=-2).topk(num_candidates, dim=1).indices
        for sub in range(0, len(chunk), rescore_rows):  # float64 distances to the few candidates
            f64 = chunk[sub:sub + rescore_rows].double()
            cand = candidates[sub:sub + rescore_rows]
            dots = torch.bmm(retain[cand].double(), f64[:, :, None]).squeeze(2)
            exact = retain_sq64[cand] - 2 * dots
            out[start + sub:start + sub + len(cand)] = cand.gather(1, exact.topk(k, dim=1).indices)
    return out


def farthest_retain_indices_reference(forget: torch.Tensor, retain: torch.Tensor, k: int) -> torch.Tensor:
    """PAPER.md step 1 as written: the full distance matrix (float64, so the ranking is exact),
    every row fully sorted."""
    distances = torch.cdist(forget.flatten(1).double(), retain.flatten(1).double())
    return distances.argsort(dim=1, descending=True)[:, :k]


# ----------------------------------------------------------------------------------------------
# Anti-samples


def make_anti_samples(forget: torch.Tensor, retain: torch.Tensor, params: AntiSampleParams,
                      generator: torch.Generator,
                      chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Anti-samples shaped like `forget`'s rows: (g, ...) with convex combination, else (n_f*m, ...).

    `generator` must live on the tensors' device."""
    shape, device = forget.shape[1:], forget.device
    f = forget.flatten(1)
    r = retain.flatten(1)
    far = farthest_retain_indices(f, r, params.num_far, chunk_elements)  # (n_f, k)
    m, n_f = params.size_multiplier, len(f)
    t = torch.randint(0, far.shape[1], (m, n_f), generator=generator, device=device)
    neighbours = r[far.gather(1, t.T).T]  # (m, n_f, d): the t-th farthest of each forget row
    scale = ((f - neighbours).abs() + params.eps) * params.local_variance
    noisy = neighbours + scale * torch.randn(neighbours.shape, generator=generator, device=device)
    keep = torch.rand(neighbours.shape, generator=generator, device=device) < params.p
    candidates = torch.where(keep, noisy, neighbours).reshape(m * n_f, -1)
    if params.convex_combination:
        weights = torch.randn(params.no_generated_data, m * n_f, generator=generator, device=device)
        candidates = weights.softmax(dim=1) @ candidates
    return candidates.reshape(-1, *shape)


def make_anti_samples_reference(forget: torch.Tensor, retain: torch.Tensor, params: AntiSampleParams,
                                generator: torch.Generator) -> torch.Tensor:
    """PAPER.md steps 1-3, one round at a time. Same distribution as `make_anti_samples`,
    different random stream."""
    shape, device = forget.shape[1:], forget.device
    f, r = forget.flatten(1), retain.flatten(1)
    far = farthest_retain_indices_reference(f, r, min(params.num_far, len(r)))  # step 1
    candidates = []
    for _ in range(params.size_multiplier):  # step 2
        t = torch.randint(0, far.shape[1], (len(f),), generator=generator, device=device)
        n = r[far[torch.arange(len(f), device=device), t]]
        s = (torch.abs(f - n) + params.eps) * params.local_variance
        sample = torch.normal(n, s, generator=generator)
        keep = torch.rand(sample.shape, generator=generator, device=device) < params.p
        candidates.append(torch.where(keep, sample, n))
    a = torch.cat(candidates)
    if params.convex_combination:  # step 3
        w = torch.softmax(torch.randn(params.no_generated_data, len(a), generator=generator,
                                      device=device), dim=1)
        a = w @ a
    return a.reshape(-1, *shape)


def anti_sample_set(train: Split, forget_classes: list[int], retain: Split, params: AntiSampleParams,
                    generator: torch.Generator) -> Split:
    """Anti-samples for each forget class (its training samples against `retain`), labelled
    with that class (PAPER.md step 4; multi-class: one set per class)."""
    parts = []
    for c in forget_classes:
        images = make_anti_samples(train.of_classes([c]).images, retain.images, params, generator)
        parts.append(Split(images, torch.full((len(images),), c, device=images.device)))
    return Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
