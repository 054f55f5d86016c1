"""The units of a run, the forget sets: checking given classes, and multi-class draws saved in
<out>/draws.json so reruns and comparison runs forget the same sets."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from errors import UserError, check_regular_file
from seeding import make_generator
from store import write_json

PAPER_DRAWS = {2: 10, 4: 5, 7: 3}  # docs/METHOD.md "Multi-class runs": draws per K
DEFAULT_DRAWS = 3  # draws for any other K
DEFAULT_NUM_FORGET_CLASSES = 2  # K of a multi-class run, the paper's smallest


def check_classes(classes: list[int], num_classes: int, flag: str = "--classes") -> list[int]:
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UserError(f"{flag}: class {bad[0]} is out of range; classes are 0..{num_classes - 1}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise UserError(f"{flag}: class {repeated[0]} is given more than once")
    if not classes:
        raise UserError(f"{flag}: no class given")
    return classes


def check_forget_set(classes: list[int], num_classes: int, flag: str = "--forget-classes") -> list[int]:
    """A multi-class forget set: valid, distinct classes, at least one class left to retain."""
    check_classes(classes, num_classes, flag)
    if len(classes) >= num_classes:
        raise UserError(f"{flag}: forgetting {len(classes)} of {num_classes} classes leaves none to "
                        f"retain; forget at most {num_classes - 1}")
    return sorted(classes)


def draw_forget_sets(k: int, draws: int | None, num_classes: int, seed: int, out: str) -> list[list[int]]:
    """`draws` distinct random sets of k classes, saved to <out>/draws.json and reused from there.

    Draw i depends only on (seed, k, i) and the draws before it (a set drawn before is drawn
    again), so a run with fewer draws forgets a prefix of the sets of a run with more. A saved
    file (its sets may be written by hand) is never silently replaced: for the same seed and k
    its sets come first, extended by new draws if more are asked for; for another seed or k it
    is refused."""
    if not 1 <= k < num_classes:
        raise UserError(f"--num-forget-classes {k} is out of range; give 1..{num_classes - 1} "
                        f"so at least one class is retained")
    draws = draws or PAPER_DRAWS.get(k, DEFAULT_DRAWS)
    if draws > math.comb(num_classes, k):
        raise UserError(f"--draws {draws}: only {math.comb(num_classes, k)} distinct sets of {k} of "
                        f"{num_classes} classes exist")
    path = Path(out) / "draws.json"
    saved = read_draws(path)
    sets: list[list[int]] = []
    if saved is not None:
        if (saved["seed"], saved["num_forget_classes"]) != (seed, k):
            raise UserError(f"{path} holds the sets of seed {saved['seed']}, K = {saved['num_forget_classes']}, "
                            f"not of this run's seed {seed}, K = {k}; give another --out, or delete the file")
        sets = _check_saved_sets(saved["draws"][:draws], k, num_classes, path)
    for i in range(len(sets), draws):
        attempt = 0
        while (new := _draw(num_classes, k, seed, i, attempt)) in sets:
            attempt += 1
        sets.append(new)
    if saved is None or len(saved["draws"]) < draws:
        write_json(path, {"seed": seed, "num_forget_classes": k, "draws": sets})
    return sets


def _check_saved_sets(sets: list[list[int]], k: int, num_classes: int, path: Path) -> list[list[int]]:
    wrong = next((s for s in sets if len(s) != k), None)
    if wrong is not None:
        raise UserError(f"{path}: the set {wrong} has {len(wrong)} classes, not K = {k}; fix or delete the file")
    sets = [check_forget_set(s, num_classes, str(path)) for s in sets]
    repeated = next((s for i, s in enumerate(sets) if s in sets[:i]), None)
    if repeated is not None:  # it would weigh twice in the mean
        raise UserError(f"{path}: the set {repeated} is given twice; fix or delete the file")
    return sets


def _draw(num_classes: int, k: int, seed: int, i: int, attempt: int) -> list[int]:
    keys = (seed, "draw", k, i) + ((attempt,) if attempt else ())  # attempt 0: the sets drawn before repeats were redrawn
    return sorted(torch.randperm(num_classes, generator=make_generator(*keys))[:k].tolist())


def refuse_together(args: argparse.Namespace, flag: str, others: list[str]) -> None:
    """One line if any of `others` was given beside `flag` (they would be silently ignored)."""
    given = [o for o in others if getattr(args, o.lstrip("-").replace("-", "_")) is not None]
    if given:
        raise UserError(f"{flag} and {given[0]} do not go together: {flag} is one set, {given[0]} is for random draws")


def read_draws(path: Path) -> dict | None:
    """A draws.json written by `draw_forget_sets`, None if there is none; anything else is refused
    in one line (it may hold sets a user wrote by hand, so it is never silently replaced)."""
    if not path.exists():
        return None
    check_regular_file(path, "draws file")  # a FIFO would block the read
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error}); fix or delete it") from None
    valid = (isinstance(saved, dict) and type(saved.get("seed")) is int
             and type(saved.get("num_forget_classes")) is int and isinstance(saved.get("draws"), list)
             and all(isinstance(s, list) and all(type(c) is int for c in s) for s in saved["draws"]))
    if not valid:
        raise UserError(f"{path} is not a draws file ({{\"seed\": int, \"num_forget_classes\": int, "
                        f"\"draws\": [[class, ...], ...]}}); fix or delete it")
    return saved


def num_forget_classes(args: argparse.Namespace) -> int:
    return DEFAULT_NUM_FORGET_CLASSES if args.num_forget_classes is None else args.num_forget_classes
