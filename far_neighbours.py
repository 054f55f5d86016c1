"""Exact search for each forget sample's k farthest retain samples (docs/METHOD.md step 1), fast.

`farthest_retain_indices` ranks retain rows by float64 squared distance, as the reference
`farthest_retain_indices_reference` does (full distance matrix, full sort), but holds only a
chunk of the distance matrix at a time and, on structured rows such as images, scores only the
retain rows that distance bounds cannot rule out. Tests compare the two on random and real rows;
`bench/anti_sample_bench.py` times them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DEFAULT_CHUNK_ELEMENTS = 1 << 22  # distance-matrix entries held at once (16 MiB of float32)
CANDIDATE_MARGIN = 8  # float32 candidates beyond k, re-ranked in float64 (rounding only swaps near-ties)
# Pruning by distance bounds (farthest_retain_indices, step 1)
BOUND_RANK = 128  # principal directions in the bound basis
BOUND_SAMPLE = 512  # retain rows the directions are computed from
BOUND_MAX_RESIDUAL = 0.5  # prune only if the basis holds at least half of the rows' squared norm
BOUND_MIN_RETAIN = 2048  # fewer retain rows: score them all, pruning would not pay
BOUND_CHUNK_ROWS = 128  # forget rows sharing one set of retain rows to score
BOUND_ROUNDING = 1e-4  # relative room for float32 rounding in bounds and scores


def bound_basis(retain: torch.Tensor, rank: int = BOUND_RANK) -> torch.Tensor | None:
    """An orthonormal (d, <= rank + 1) float32 basis for distance bounds: the retain rows' mean
    and the top principal directions of `BOUND_SAMPLE` evenly spaced retain rows. None when it
    would not prune: the rows are few, or (unstructured data) the basis leaves more than
    `BOUND_MAX_RESIDUAL` of the squared norm of as many other retain rows outside it."""
    n, d = retain.shape
    if rank < 1 or n < BOUND_MIN_RETAIN or d <= 2 * rank:
        return None
    picks = torch.linspace(0, n - 1, 2 * BOUND_SAMPLE, device=retain.device).long()
    sample, held_out = retain[picks[0::2]], retain[picks[1::2]]
    mean = sample.mean(0)
    centred = sample - mean
    # PCA via the (small) Gram matrix; float64 where it is cheap, so the basis is orthonormal
    values, vectors = torch.linalg.eigh((centred @ centred.T).double())  # ascending
    values, vectors = values.flip(0)[:rank], vectors.flip(1)[:, :rank]
    directions = centred.T.double() @ (vectors / values.clamp_min(1e-12).sqrt())
    basis = torch.linalg.qr(torch.cat([mean[:, None].double(), directions], dim=1)).Q.float()
    residual = 1 - (held_out @ basis).square().sum() / held_out.square().sum()
    return basis if residual <= BOUND_MAX_RESIDUAL else None


@dataclass
class DistanceBounds:
    """Bounds on every score ||r||^2 - 2 f.r of a forget row f against the retain rows r.

    Split f.r over an orthonormal basis B and its complement Q: f.r = (Bf).(Br) + (Qf).(Qr),
    and |(Qf).(Qr)| <= ||Qf|| ||Qr||, so one rank-r matmul bounds every score from both sides,
    whatever the basis (a good one makes the bounds tight)."""
    basis: torch.Tensor  # (d, r)
    retain_proj: torch.Tensor  # (n_r, r): B r
    retain_rest: torch.Tensor  # (n_r,): ||Q r||
    retain_sq: torch.Tensor  # (n_r,): ||r||^2
    retain_norm: torch.Tensor  # (n_r,): ||r||

    @classmethod
    def of(cls, retain: torch.Tensor, retain_norm: torch.Tensor, rank: int) -> DistanceBounds | None:
        basis = bound_basis(retain, rank)
        if basis is None:
            return None
        proj, retain_sq = retain @ basis, retain_norm.square()
        return cls(basis, proj, (retain_sq - proj.square().sum(1)).clamp_min(0).sqrt(), retain_sq, retain_norm)

    def rows_to_score(self, chunk: torch.Tensor, k: int) -> torch.Tensor | None:
        """Indices of the retain rows that may be among the k farthest of some row of `chunk`:
        those whose upper bound reaches that row's k-th largest lower bound. None when that is
        over half of them (then scoring all is cheaper)."""
        proj = chunk @ self.basis
        rest = (torch.linalg.vector_norm(chunk, dim=1).square() - proj.square().sum(1)).clamp_min(0).sqrt()
        centre = torch.addmm(self.retain_sq, proj, self.retain_proj.T, alpha=-2)
        # 2 ||Qf|| ||Qr||, plus room for float32 rounding in these bounds
        slack = (torch.outer(2 * rest, self.retain_rest)
                 + BOUND_ROUNDING * (self.retain_sq + 2 * rest.max() * self.retain_norm))
        threshold = (centre - slack).topk(k, dim=1).values[:, -1:]
        needed = ((centre + slack) >= threshold).any(0).nonzero().squeeze(1)
        return needed if len(needed) <= len(self.retain_sq) // 2 else None


@contextlib.contextmanager
def full_float32_matmul():
    """Plain float32 matmuls inside, whatever the user set with
    `torch.set_float32_matmul_precision` ("high" allows TF32 on CUDA): the pruning bounds and the
    float32 candidates assume float32 rounding. The user's setting is restored afterwards."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)


@full_float32_matmul()
def farthest_retain_indices(forget: torch.Tensor, retain: torch.Tensor, k: int,
                            chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                            rank: int = BOUND_RANK) -> torch.Tensor:
    """(n_f, k) indices into `retain` of each forget row's k farthest retain rows, farthest first,
    ranked by float64 squared distances (as the reference ranks them).

    Rows are ranked by ||r||^2 - 2 f.r (the squared distance less ||f||^2, which a row shares),
    a chunk of forget rows at a time, in one of two ways:
    - Pruned (images and other structured rows; `DistanceBounds`, basis of rank `rank`): the
      `BOUND_CHUNK_ROWS` rows of a chunk score, exactly and in float64, only the retain rows one
      of them may still need (on CIFAR-10 about 6 %). Exact: the bounds always hold.
    - Dense (unstructured rows, or pruning would keep over half): one fused float32 matmul,
      top-(k + 8), and those candidates re-ranked by float64 distances, so float32 rounding
      cannot reorder the result.
    At most about `chunk_elements` scores (or candidate features) exist at once."""
    forget, retain = forget.flatten(1), retain.flatten(1)
    k = min(k, len(retain))
    retain_norm = torch.linalg.vector_norm(retain, dim=1)  # no (n_r, d) temporary
    retain_sq = retain_norm.square()
    retain_sq64 = torch.cat([torch.linalg.vector_norm(r.double(), dim=1).square() for r in retain.split(256)])
    bounds = DistanceBounds.of(retain, retain_norm, rank)
    rows = BOUND_CHUNK_ROWS if bounds is not None else max(1, chunk_elements // len(retain))
    out = torch.empty(len(forget), k, dtype=torch.long, device=forget.device)
    for start in range(0, len(forget), rows):
        chunk = forget[start:start + rows]
        needed = bounds.rows_to_score(chunk, k) if bounds is not None else None
        if needed is not None:
            scores = retain_sq64[needed] - 2 * chunk.double() @ retain[needed].double().T
            out[start:start + len(chunk)] = needed[scores.topk(k, dim=1).indices]
        else:
            out[start:start + len(chunk)] = _dense_farthest(chunk, retain, retain_sq, retain_sq64, k, chunk_elements)
    return out


def _dense_farthest(chunk: torch.Tensor, retain: torch.Tensor, retain_sq: torch.Tensor,
                    retain_sq64: torch.Tensor, k: int, chunk_elements: int) -> torch.Tensor:
    """`farthest_retain_indices` for one chunk without pruning: float32 scores of every retain
    row, top-(k + 8), re-ranked by float64 distances."""
    num_candidates = min(k + CANDIDATE_MARGIN, len(retain))
    # ||r||^2 - 2 f.r in one fused matmul
    candidates = torch.addmm(retain_sq, chunk, retain.T, alpha=-2).topk(num_candidates, dim=1).indices
    rescore_rows = max(1, chunk_elements // 8 // (num_candidates * retain.shape[1]))
    out = torch.empty(len(chunk), k, dtype=torch.long, device=chunk.device)
    for sub in range(0, len(chunk), rescore_rows):  # float64 distances to the few candidates
        f64 = chunk[sub:sub + rescore_rows].double()
        cand = candidates[sub:sub + rescore_rows]
        dots = torch.bmm(retain[cand].double(), f64[:, :, None]).squeeze(2)
        exact = retain_sq64[cand] - 2 * dots
        out[sub:sub + len(cand)] = cand.gather(1, exact.topk(k, dim=1).indices)
    return out


def farthest_retain_indices_reference(forget: torch.Tensor, retain: torch.Tensor, k: int) -> torch.Tensor:
    """docs/METHOD.md step 1 as written: the full distance matrix (float64, so the ranking is exact),
    every row fully sorted."""
    distances = torch.cdist(forget.flatten(1).double(), retain.flatten(1).double())
    return distances.argsort(dim=1, descending=True)[:, :k]
