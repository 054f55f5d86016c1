"""The API's inputs checked at the door: what `anti_sample.unlearn` takes (any float32 PyTorch
classifier with trainable parameters, data whose shapes and labels fit it and each other, forget
classes as one index or a list) and the one-line `UserError` naming the argument for anything else."""
from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from datasets import Split
from errors import UserError, first_line


def check_model(model: nn.Module) -> None:
    """A model `unlearn` can fine-tune: trainable float32 parameters."""
    if not isinstance(model, nn.Module):
        raise UserError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    parameters = list(model.parameters())
    if parameters and not any(p.requires_grad for p in parameters):
        raise UserError("model: every parameter is frozen (requires_grad=False); unfreeze the ones to unlearn with")
    other = next((p.dtype for p in parameters if p.is_floating_point() and p.dtype != torch.float32), None)
    if other is not None:
        raise UserError(f"model: its parameters are {other}; unlearn trains float32 models: give model.float() "
                        f"(for bf16 speed on CUDA, speed=Speed(bf16=True))")


def check_generators(generator: Any, noise_generator: Any, device: torch.device) -> None:
    """The shuffles' generator on the CPU, the anti-samples' on the data's device (either may be None)."""
    def on(given: Any, device_type: str) -> bool:
        return given is None or (isinstance(given, torch.Generator) and given.device.type == device_type)
    if not on(generator, "cpu"):
        raise UserError(f"generator: expected a torch.Generator on the CPU, got {generator!r}")
    if not on(noise_generator, device.type):
        raise UserError(f"noise_generator: expected a torch.Generator on {device} (the data's device), "
                        f"got {noise_generator!r}")


def as_class_list(forget_classes: Any) -> list[int] | None:
    """forget_classes as a list of ints: a class given alone, and numpy integers, are taken too."""
    if forget_classes is None:
        return None
    if isinstance(forget_classes, numbers.Integral) and not isinstance(forget_classes, bool):
        return [int(forget_classes)]
    if isinstance(forget_classes, torch.Tensor):
        forget_classes = forget_classes.flatten().tolist()
    try:
        values = list(forget_classes)
    except TypeError:
        values = [None]
    if not values or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in values):
        raise UserError(f"forget_classes: expected a class index or a list of them, got {forget_classes!r}")
    return [int(c) for c in values]


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    if parameter is None:
        raise UserError("model has no parameters to unlearn with")
    return parameter.device


@torch.no_grad()
def check_unlearn_inputs(model: nn.Module, forget: Split, retain: Split, pool: Split,
                         forget_classes: list[int] | None) -> list[int]:
    """The forget classes, after checking that the data fit each other and the model."""
    for name, data in [("forget", forget), ("retain", retain), ("pool", pool)]:
        if not len(data):
            raise UserError(f"{name} data are empty")
        if data.images.shape[1:] != retain.images.shape[1:]:
            raise UserError(f"{name} images are {tuple(data.images.shape[1:])} but retain images are "
                            f"{tuple(retain.images.shape[1:])}; all data must have one shape")
        if data.labels.min() < 0:
            raise UserError(f"{name} labels must be class indices >= 0, found {int(data.labels.min())}")
    present = forget.labels.unique().tolist()
    classes = present if forget_classes is None else sorted(forget_classes)
    missing = [c for c in classes if c not in present]
    if missing:
        raise UserError(f"forget class {missing[0]} has no samples in the forget data (its labels: {present})")
    extra = [c for c in present if c not in classes]
    if extra:
        raise UserError(f"forget data hold class {extra[0]}, which is not in forget_classes {classes}")
    overlap = [c for c in classes if (retain.labels == c).any() or (pool.labels == c).any()]
    if overlap:
        raise UserError(f"retain (or pool) data hold samples of forget class {overlap[0]}; give retain classes only")
    was_training = model.training
    model.eval()
    try:
        outputs = model(retain.images[:1])
    except RuntimeError as error:
        raise UserError(f"the model cannot take retain images of shape {tuple(retain.images.shape[1:])} "
                        f"({first_line(error)})") from None
    finally:
        model.train(was_training)
    if not isinstance(outputs, torch.Tensor):
        raise UserError(f"model: its forward returns a {type(outputs).__name__}, not a tensor of class scores; "
                        f"wrap it so that it returns the logits (e.g. output[0] or output['logits'])")
    largest = max(int(d.labels.max()) for d in (forget, retain, pool))
    if outputs.ndim != 2 or outputs.shape[1] <= largest:
        raise UserError(f"the model outputs shape {tuple(outputs.shape)} per batch, but labels go up to {largest}: "
                        f"it needs (batch, at least {largest + 1}) class scores")
    return classes
