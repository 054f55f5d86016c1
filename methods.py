"""Unlearning methods: each changes a copy of the original model in place, given the same inputs.

    METHODS["anti_sample"](model, inputs)   # ours (docs/METHOD.md): anti_sample.unlearn
    METHODS["unsir"](model, inputs)         # a baseline; see each function's docstring

A method returns None, or a `MethodRecord` of what it decided itself (with a forget target: the
epochs it ran and its forget-accuracy trace). The baselines that train for epochs (finetune, neggrad,
random_label, bad_teacher, salun) take one too, `inputs.baseline_target` (--baseline-forget-target,
ours, off by default): their reference epochs, then on until forgotten, as anti_sample's target does,
so that a comparison need not set adaptive compute against fixed compute.

Every method sees the same original model, the same retain subset, the forget classes'
training samples, the same seed and the same speed options, so their rows in a summary compare
like with like. The retrained model is not a method: every row carries its numbers
(`retrained_*`), and the comparison report shows it as the reference. Baseline
hyperparameters live in `BASELINES` (one place; README "Methods" lists them).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from anti_sample import AntiSampleParams, UntilForgotten, unlearn
from datasets import Split
from errors import UserError
from hparams import epoch_cap
from train_utils import PLAIN, Speed, TrainParams, optimise, train
from unsir import PRESETS, unsir_unlearn


@dataclass(frozen=True)
class BaselineParams:
    """A baseline's reference settings; each method reads the ones it has (None: not its knob)."""
    epochs: int = 0
    lr: float = 0.0  # Adam
    retain_weight: float | None = None  # neggrad's alpha: the retain loss's weight, 1 - alpha the forget loss's
    temperature: float | None = None  # bad_teacher's KL temperature
    selection_alpha: float | None = None  # ssd: a weight is dampened where I_f > alpha * I_D
    dampening_lambda: float | None = None  # ssd: ... by min(lambda * I_D / I_f, 1)
    mask_fraction: float | None = None  # salun: the share of weights updated (largest forget-loss gradients)


BASELINES: dict[str, BaselineParams] = {
    "finetune": BaselineParams(epochs=5, lr=1e-3),
    "neggrad": BaselineParams(epochs=10, lr=1e-3, retain_weight=0.95),  # SCRUB's alpha
    "random_label": BaselineParams(epochs=5, lr=1e-3),
    "bad_teacher": BaselineParams(epochs=1, lr=1e-4, temperature=1.0),
    "ssd": BaselineParams(selection_alpha=10.0, dampening_lambda=1.0),  # Foster et al.'s CIFAR settings
    "salun": BaselineParams(epochs=5, lr=1e-3, mask_fraction=0.5),
}


@dataclass
class UnlearnInputs:
    train: Split  # the full training data (forget samples are taken from it)
    retain: Split  # the retain subset the unlearner may use
    pool: Split  # where anti_sample searches far neighbours: all retain-class training data (the
    # authors') or the retain subset (--neighbour-pool)
    forget_classes: list[int]
    anti_sample: AntiSampleParams  # anti_sample's options (--unlearn-mode, --repair-epochs among them)
    batch_size: int  # minibatch of every baseline
    generator: torch.Generator  # CPU: shuffles and noise initialisation
    device_generator: torch.Generator  # on the data's device: anti-sample draws
    progress: bool
    make_model: Callable[[], nn.Module]  # a fresh, randomly initialised model of the same kind
    speed: Speed = PLAIN  # how training steps run (CUDA options), for every method
    # the epoch-based baselines' forget target (%): None, their reference epochs; else on from there
    # until every forget class is at most this on its forget samples, hparams.epoch_cap epochs at most
    baseline_target: float | None = None

    @property
    def forget(self) -> Split:
        return self.train.of_classes(self.forget_classes)

    def random_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Each label replaced by a uniformly drawn different class."""
        num_classes = int(self.train.labels.max()) + 1
        shift = torch.randint(1, num_classes, labels.shape, generator=self.generator).to(labels.device)
        return (labels + shift) % num_classes


@dataclass(frozen=True)
class MethodRecord:
    epochs: int  # epochs run on the forget objective (anti_sample: on retain data + anti-samples)
    forget_trace: list[float]  # after each epoch, the worst forget class's accuracy on its forget samples (%)


class BaselineEpochs:
    """An epoch-based baseline's schedule: its reference epochs, or with `inputs.baseline_target`
    the cap, stopped by `until` (an `UntilForgotten`, the training's `after_epoch`). `record(epochs_run)`
    is what the method returns (None without a target)."""

    def __init__(self, name: str, model: nn.Module, inputs: UnlearnInputs):
        self.name, p, target = name, BASELINES[name], inputs.baseline_target
        self.until = None if target is None else UntilForgotten(model, inputs.forget, inputs.forget_classes,
                                                                 p.epochs, target)
        self.epochs = p.epochs if target is None else epoch_cap(p.epochs, None)

    def record(self, epochs_run: int) -> MethodRecord | None:
        if self.until is None:
            return None
        self.until.warn_if_missed(cap=f"the cap, {self.epochs}", who=f"{self.name}: ")
        return MethodRecord(epochs_run, self.until.trace)


# the baselines that train for epochs, and so take --baseline-forget-target
TARGETED_BASELINES = [name for name, p in BASELINES.items() if p.epochs]

METHODS: dict[str, Callable[[nn.Module, UnlearnInputs], MethodRecord | None]] = {}


def register_method(name: str):
    def decorate(fn):
        METHODS[name] = fn
        return fn
    return decorate


def check_methods(names: list[str]) -> list[str]:
    if not names:
        raise UserError(f"--methods: no method given; known: {', '.join(METHODS)}")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise UserError(f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise UserError(f"--methods: give each method once, e.g. {','.join(METHODS)}")
    return names


@register_method("anti_sample")
def anti_sample(model: nn.Module, inputs: UnlearnInputs) -> MethodRecord:
    """Ours (docs/METHOD.md), through the library API: far neighbours from `inputs.pool`, fine-tuning
    on the retain subset + anti-samples (with a forget target, until the forget samples are forgotten)."""
    _, record = unlearn(model, inputs.forget, inputs.retain, inputs.pool, inputs.anti_sample,
                        generator=inputs.generator, noise_generator=inputs.device_generator,
                        progress=inputs.progress, speed=inputs.speed)
    return MethodRecord(record.epochs, record.forget_trace)


@register_method("unsir")
def unsir(model: nn.Module, inputs: UnlearnInputs) -> None:
    """UNSIR with the reference CIFAR-10 recipe (unsir.PRESETS["reference"])."""
    unsir_unlearn(model, inputs.forget_classes, inputs.retain, PRESETS["reference"], inputs.generator,
                  progress=inputs.progress, speed=inputs.speed)


@register_method("finetune")
def finetune(model: nn.Module, inputs: UnlearnInputs) -> MethodRecord | None:
    """Fine-tune on the retain subset alone: forgetting by catastrophic interference."""
    p, schedule = BASELINES["finetune"], BaselineEpochs("finetune", model, inputs)
    return schedule.record(train(model, inputs.retain, TrainParams(schedule.epochs, p.lr, inputs.batch_size),
                                 inputs.generator, phase="finetune", progress=inputs.progress, speed=inputs.speed,
                                 after_epoch=schedule.until))


@register_method("neggrad")
def neggrad(model: nn.Module, inputs: UnlearnInputs) -> MethodRecord | None:
    """NegGrad+ (Kurmanji et al., NeurIPS 2023, SCRUB's code): alpha * CE(retain) - (1 - alpha) *
    CE(forget), on a retain and a forget minibatch per step, model in eval mode, 10 epochs, alpha
    0.95. Ours: Adam at 1e-3 (SCRUB: SGD at 0.01) and no L2 penalty to the original weights (its
    weight is not given); README "Methods"."""
    p, retain, forget = BASELINES["neggrad"], inputs.retain, inputs.forget
    schedule = BaselineEpochs("neggrad", model, inputs)
    forget_index = torch.randint(0, len(forget), (len(retain),), generator=inputs.generator).to(retain.labels.device)

    forward = inputs.speed.forward(model)

    def batch_loss(index):
        f = forget_index[index]
        retain_loss = nn.functional.cross_entropy(forward(retain.images[index]), retain.labels[index])
        forget_loss = nn.functional.cross_entropy(forward(forget.images[f]), forget.labels[f])
        return p.retain_weight * retain_loss - (1 - p.retain_weight) * forget_loss
    return schedule.record(optimise(model, len(retain), TrainParams(schedule.epochs, p.lr, inputs.batch_size,
                                                                    eval_mode=True), batch_loss, inputs.generator,
                                    retain.images.device, "neggrad", inputs.progress, speed=inputs.speed,
                                    after_epoch=schedule.until))


@register_method("random_label")
def random_label(model: nn.Module, inputs: UnlearnInputs) -> MethodRecord | None:
    """Forget samples relabelled with random other classes, mixed with the retain subset
    (Golatkar et al., CVPR 2020; Fan et al.'s "RL")."""
    p, forget, schedule = BASELINES["random_label"], inputs.forget, BaselineEpochs("random_label", model, inputs)
    data = Split.join(inputs.retain, Split(forget.images, inputs.random_labels(forget.labels)))
    return schedule.record(train(model, data, TrainParams(schedule.epochs, p.lr, inputs.batch_size), inputs.generator,
                                 phase="random_label", progress=inputs.progress, speed=inputs.speed,
                                 after_epoch=schedule.until))


@register_method("bad_teacher")
def bad_teacher(model: nn.Module, inputs: UnlearnInputs) -> MethodRecord | None:
    """Chundawat et al., AAAI 2023: distil from the original model (competent teacher) on
    retain data and from a randomly initialised model (incompetent teacher) on forget data,
    KL divergence at temperature T."""
    p, retain, forget = BASELINES["bad_teacher"], inputs.retain, inputs.forget
    schedule = BaselineEpochs("bad_teacher", model, inputs)
    competent, incompetent = _frozen_copy(model), inputs.make_model().eval()
    data = Split.join(retain, forget)
    is_forget = torch.cat([torch.zeros(len(retain)), torch.ones(len(forget))]).bool().to(data.labels.device)
    temperature, forward = p.temperature, inputs.speed.forward(model)

    def batch_loss(index):
        x = data.images[index]
        with torch.no_grad():
            target = torch.where(is_forget[index, None], incompetent(x), competent(x))
        return nn.functional.kl_div((forward(x) / temperature).log_softmax(1),
                                    (target / temperature).log_softmax(1), log_target=True,
                                    reduction="batchmean")
    return schedule.record(optimise(model, len(data), TrainParams(schedule.epochs, p.lr, inputs.batch_size),
                                    batch_loss, inputs.generator, data.images.device, "bad_teacher",
                                    inputs.progress, speed=inputs.speed, after_epoch=schedule.until))


def _frozen_copy(model: nn.Module) -> nn.Module:
    frozen = copy.deepcopy(model).eval()
    frozen.requires_grad_(False)
    return frozen


def _fisher_diagonal(model: nn.Module, data: Split, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean over minibatches of the squared gradient of the cross-entropy, per parameter."""
    model.eval()
    fisher = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    chunks = torch.arange(len(data), device=data.labels.device).split(batch_size)
    for index in chunks:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(data.images[index]), data.labels[index]).backward()
        for name, p in model.named_parameters():
            fisher[name] += p.grad.square() / len(chunks)
    model.zero_grad(set_to_none=True)
    return fisher


@register_method("ssd")
def ssd(model: nn.Module, inputs: UnlearnInputs) -> None:
    """Selective Synaptic Dampening (Foster et al., AAAI 2024), no training: with diagonal
    Fisher importances I_D (retain subset + forget data) and I_f (forget data), every weight
    with I_f > alpha * I_D is multiplied by min(lambda * I_D / I_f, 1)."""
    p, batch = BASELINES["ssd"], inputs.batch_size
    # In order, as the reference computes it: retain data, then the forget set. Shuffled, retain
    # and forget gradients cancel inside mixed batches (README "Methods"). With alpha 10 a weight
    # can be selected only where the forget share of D is below 1/alpha.
    seen = Split.join(inputs.retain, inputs.forget)
    importance_all = _fisher_diagonal(model, seen, batch)
    importance_forget = _fisher_diagonal(model, inputs.forget, batch)
    with torch.no_grad():
        for name, param in model.named_parameters():
            i_d, i_f = importance_all[name], importance_forget[name]
            selected = i_f > p.selection_alpha * i_d
            factor = (p.dampening_lambda * i_d / i_f.clamp_min(1e-30)).clamp(max=1)
            param.mul_(torch.where(selected, factor, torch.ones_like(factor)))


@register_method("salun")
def salun(model: nn.Module, inputs: UnlearnInputs) -> MethodRecord | None:
    """SalUn (Fan et al., ICLR 2024): a mask of the weights with the largest forget-loss
    gradient magnitude (the top `mask_fraction`), then random-label unlearning that updates
    only those weights."""
    p, forget = BASELINES["salun"], inputs.forget
    model.zero_grad(set_to_none=True)
    model.eval()
    for index in torch.arange(len(forget), device=forget.labels.device).split(inputs.batch_size):
        nn.functional.cross_entropy(model(forget.images[index]), forget.labels[index], reduction="sum").backward()
    gradients = {name: param.grad.abs() for name, param in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    magnitudes = torch.cat([g.flatten() for g in gradients.values()])
    threshold = magnitudes.kthvalue(max(1, int((1 - p.mask_fraction) * len(magnitudes)))).values
    mask = {name: (g >= threshold).float() for name, g in gradients.items()}
    data = Split.join(inputs.retain, Split(forget.images, inputs.random_labels(forget.labels)))
    schedule = BaselineEpochs("salun", model, inputs)
    return schedule.record(train(model, data, TrainParams(schedule.epochs, p.lr, inputs.batch_size), inputs.generator,
                                 phase="salun", progress=inputs.progress, grad_mask=mask, speed=inputs.speed,
                                 after_epoch=schedule.until))
