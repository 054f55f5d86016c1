"""Seeds: every random draw of a run comes from one generator per purpose, derived from the run's
seed and the purpose's keys, so results do not depend on the order work is done in."""
from __future__ import annotations

import zlib
from typing import Any

import torch

from hparams import Check

DEFAULT_SEED = 100  # docs/METHOD.md: torch seed 100
# a seed every generator takes, Optuna's sampler (numpy) included
SEED = Check("int", lambda v: 0 <= v < 2 ** 32, "a whole number in [0, 2^32)")


def derived_seed(seed: int, *keys: Any) -> int:
    """A seed for one purpose (e.g. ("retain", 3)), independent of the order units are run in."""
    return zlib.crc32(repr((seed, *keys)).encode())


def make_generator(seed: int, *keys: Any, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(seed, *keys))
