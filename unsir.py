"""UNSIR, the baseline the paper compares with (Tarun et al., "Fast Yet Effective Machine
Unlearning", IEEE TNNLS 2023).

1. Learn error-maximising noise per forget class: `noise_batch` learnable inputs shaped like
   the data, Adam at `noise_lr` for `noise_steps` steps on
   loss = -cross_entropy(model(noise), forget class) + noise_lambda * mean squared norm of noise,
   with the model's weights frozen (in train mode by default, as the public notebook leaves it:
   BatchNorm's running statistics follow the noise batches).
2. `rounds` x (impair: `impair_epochs` on noise, labelled with its forget class, + retain data,
   Adam at `impair_lr`; repair: `repair_epochs` on retain data alone, Adam at `repair_lr`).

The noise of each class is labelled with that class, and all of it goes into the impair set
(the public notebook labels every class's noise 0 and, counting channels instead of samples,
repeats its first few noise samples: two bugs we do not copy, README "Methods"). The impair set's
retain part is the retain subset every method receives (the notebook: the first 1,000 training
samples of each retain class).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datasets import Split
from hparams import BATCH_SIZE
from train_utils import PLAIN, Speed, TrainParams, train


@dataclass(frozen=True)
class UnsirParams:
    noise_batch: int = 256  # learnable noise samples per forget class
    noise_lr: float = 0.1  # Adam on the noise
    noise_steps: int = 40  # the reference code: 5 epochs x 8 steps
    noise_lambda: float = 0.1  # weight of the noise's mean squared norm
    impair_lr: float = 0.02
    repair_lr: float = 0.01
    impair_epochs: int = 1
    repair_epochs: int = 1
    rounds: int = 1
    batch_size: int = 256  # the public notebook's impair/repair batch
    noise_in_train_mode: bool = True  # the model's mode while the noise is optimised (the notebook: train)


# The reference CIFAR-10 recipe (the UNSIR paper's code) and the paper's toy example (docs/METHOD.md).
PRESETS = {
    "reference": UnsirParams(),
    "toy": UnsirParams(noise_batch=256, noise_lr=0.1, noise_steps=50 * 8, noise_lambda=0.1,
                       impair_lr=0.3, repair_lr=0.15, rounds=3, batch_size=BATCH_SIZE),
}


def error_maximising_noise(model: nn.Module, forget_class: int, shape: tuple[int, ...],
                           params: UnsirParams, generator: torch.Generator,
                           device: torch.device) -> torch.Tensor:
    """`params.noise_batch` inputs of `shape` that the model (weights frozen) misclassifies most."""
    model.train(params.noise_in_train_mode)
    noise = torch.randn(params.noise_batch, *shape, generator=generator).to(device).requires_grad_()
    optimizer = torch.optim.Adam([noise], lr=params.noise_lr)
    labels = torch.full((params.noise_batch,), forget_class, device=device)
    for _ in range(params.noise_steps):
        loss = (-nn.functional.cross_entropy(model(noise), labels)
                + params.noise_lambda * noise.square().flatten(1).sum(1).mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return noise.detach()


def unsir_unlearn(model: nn.Module, forget_classes: list[int], retain: Split, params: UnsirParams,
                  generator: torch.Generator, progress: bool = False, speed: Speed = PLAIN) -> list[torch.Tensor]:
    """Unlearn `forget_classes` in place: noise per class, then impair/repair rounds. Returns
    the noise of each forget class (for plots)."""
    device = retain.images.device
    shape = tuple(retain.images.shape[1:])
    noise = [error_maximising_noise(model, c, shape, params, generator, device) for c in forget_classes]
    impair = Split(torch.cat([*noise, retain.images]), torch.cat(
        [*(torch.full((len(n),), c, device=device) for n, c in zip(noise, forget_classes)), retain.labels]))
    for round_ in range(params.rounds):
        train(model, impair, TrainParams(params.impair_epochs, params.impair_lr, params.batch_size),
              generator, phase=f"UNSIR impair {round_ + 1}", progress=progress, speed=speed)
        train(model, retain, TrainParams(params.repair_epochs, params.repair_lr, params.batch_size),
              generator, phase=f"UNSIR repair {round_ + 1}", progress=progress, speed=speed)
    return noise
