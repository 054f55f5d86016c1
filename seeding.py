"""Seeds: every random draw of a run comes from one generator per purpose, derived from the run's
seed and the purpose's keys, so results do not depend on the order work is done in."""
from __future__ import annotations

import zlib
from typing import Any

import torch

DEFAULT_SEED = 100  # docs/METHOD.md: torch seed 100


def derived_seed(seed: int, *keys: Any) -> int:
    """A seed for one purpose (e.g. ("retain", 3)), independent of the order units are run in."""
    return zlib.crc32(repr((seed, *keys)).encode())


def make_generator(seed: int, *keys: Any, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(seed, *keys))
