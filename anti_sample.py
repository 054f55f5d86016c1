"""Anti-samples (Mondal & Samanta, 2025; docs/METHOD.md) and unlearning with them.

    model, record = anti_sample.unlearn(model, forget, retain)   # your classifier, your data

For each forget sample, pick one of its k farthest retain samples N, perturb N with Gaussian
noise whose per-feature scale is lambda * (|F - N| + eps), keep each perturbed feature with
probability p, repeat m times, and optionally mix the n_f * m candidates into g anti-samples
with softmax(Gaussian) convex weights. The anti-samples, labelled with their forget class and
mixed with the retain data, are what the model is fine-tuned on to forget.

`unlearn` is the one implementation: the entry scripts, notebooks and benches call it too.
`make_anti_samples` is the fast generator (far neighbours from `far_neighbours.py`, all m rounds
drawn at once, on whatever device the tensors live); `make_anti_samples_reference` follows
docs/METHOD.md step by step and is the oracle in tests and the baseline in benchmarks.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from api_checks import as_class_list, check_generators, check_model, check_unlearn_inputs, model_device
from datasets import Split, as_split
from devices import Stopwatch, resolve_device
from errors import UserError
from far_neighbours import DEFAULT_CHUNK_ELEMENTS, farthest_retain_indices, farthest_retain_indices_reference
from hparams import (BASE_LR, BATCH_SIZE, EPS, FIELDS, FORGOTTEN_PERCENT, NO_GENERATED_DATA, NOTEBOOK_TABLE, POSITIVE,
                     REPAIR_EPOCHS, UNLEARN_EPOCHS_SINGLE, Check, check_epoch_cap, check_fields, epoch_cap, read_file,
                     resolve)
from train_utils import Speed, TrainParams, accuracy, predict, train

UNLEARN_MODES = ("eval", "train")  # the model's mode while it fine-tunes; eval is the authors'
_PAPER_RUN = ("ResNet18", "cifar10", 30)  # model, data set, retain percent of the defaults below
_PAPER_ROW = NOTEBOOK_TABLE[_PAPER_RUN]
# Ours, the API's defaults where they leave the paper's row (README "Use it on your own model"): the
# row's 2.2e-3 left a small MLP and our SmallCNN far from forgotten even after 30 epochs; 2e-2
# wrecked SmallCNN's retain accuracy.
API_LR = 1e-2


@dataclass(frozen=True)
class AntiSampleParams:
    """Every option of the method. Defaults, the API's (ours; the authors have no API): the paper's
    CIFAR-10 / ResNet18 Unlearning-30 notebook row (hparams.NOTEBOOK_TABLE) with its 5 epochs, but
    unlearning until forgotten (forget_target hparams.FORGOTTEN_PERCENT, at most max_epochs) at lr
    API_LR, then hparams.REPAIR_EPOCHS on the retain data alone. `AntiSampleParams.paper(...)` is a
    paper row as published (fixed epochs, no repair)."""
    # anti-samples (docs/METHOD.md steps 1-3)
    local_variance: float = _PAPER_ROW.local_variance  # lambda: noise scale, in units of |F - N| + eps
    size_multiplier: int = _PAPER_ROW.size_multiplier  # m: rounds, each giving one candidate per forget sample
    p: float = _PAPER_ROW.p  # probability of keeping a perturbed feature (else the neighbour's feature)
    tail_randomized: int = _PAPER_ROW.tail_randomized  # k: draw among the k farthest; 1 (or None or 0): the farthest
    no_generated_data: int = NO_GENERATED_DATA[30]  # g: anti-samples per forget class
    eps: float = EPS  # floor of the noise scale, in the data's (normalised) units
    convex_combination: bool = _PAPER_ROW.convex_combination  # False: the n_f * m candidates themselves
    # fine-tuning on retain data + anti-samples (step 4), Adam and cross-entropy
    epochs: int = UNLEARN_EPOCHS_SINGLE
    lr: float = API_LR
    batch_size: int = BATCH_SIZE
    unlearn_mode: str = "eval"  # eval: BatchNorm statistics frozen, dropout off (the authors'); train
    repair_epochs: int = REPAIR_EPOCHS  # ours: then this many epochs on the retain data alone, at repair_lr
    repair_lr: float = BASE_LR
    # ours, "unlearn until forgotten": after `epochs`, go on epoch by epoch until the model's accuracy
    # on the forget samples is at most forget_target (percent) for every forget class, or until
    # max_epochs in all (None: hparams.epoch_cap, 30 or `epochs` if more); forget_target None: exactly
    # `epochs` (the paper)
    forget_target: float | None = FORGOTTEN_PERCENT
    max_epochs: int | None = None

    def __post_init__(self):
        check_fields(self, _OPTION_CHECKS, what="anti-sample option ", normalise=_NORMALISE)
        check_epoch_cap(self.forget_target, self.epochs, self.max_epochs, "epochs", "max_epochs")

    @property
    def epoch_cap(self) -> int:
        """All epochs the forget target may run (`max_epochs`, by default max(30, `epochs`))."""
        return epoch_cap(self.epochs, self.max_epochs)

    @classmethod
    def from_run(cls, h, **options: Any) -> AntiSampleParams:
        """The options of an entry-script run from its `hparams.RunHparams` (unlearning lr =
        unlearn_scale_lr x lr; repair at lr), plus `options`."""
        same = {field.api: getattr(h, field.name) for field in FIELDS if field.api}
        return cls(**{**same, "lr": h.lr * h.unlearn_scale_lr, "repair_lr": h.lr, **options})

    @classmethod
    def paper(cls, model: str = _PAPER_RUN[0], dataset: str = _PAPER_RUN[1], retain_percent: float = _PAPER_RUN[2],
              **options: Any) -> AntiSampleParams:
        """The row the entry scripts resolve for a model and data set (`hparams.resolve`: for the
        paper's models the paper's row, fixed epochs and no forget target; for ours, our row),
        plus `options`. Default: the paper's CIFAR-10 / ResNet18 Unlearning-30 row."""
        return cls.from_run(resolve(model, dataset, retain_percent), **options)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> AntiSampleParams:
        """The paper's CIFAR-10 / ResNet18 Unlearning-30 row overridden by a hyperparameter file
        (`hparams.read_file`: `RunHparams` fields, e.g. tune_unlearning.py's best_hparams.json; its
        unlearning lr is unlearn_scale_lr x lr), then by `options` (any field of this class), as
        the entry scripts read --hparams."""
        return cls.from_run(dataclasses.replace(resolve(*_PAPER_RUN), **read_file(path)), **options)


# The checks of hparams.FIELDS (one table) under this class's names, and of its own options: the
# unlearning and repair learning rates (a run's are unlearn_scale_lr x lr and lr) and the mode.
_OPTION_CHECKS = {**{field.api: field.check for field in FIELDS if field.api}, "lr": POSITIVE, "repair_lr": POSITIVE,
                  "unlearn_mode": Check("str", lambda v: v in UNLEARN_MODES, f"one of {', '.join(UNLEARN_MODES)}")}
_NORMALISE = {field.api: field.normalise for field in FIELDS if field.api and field.normalise}


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
    far = farthest_retain_indices(f, r, params.tail_randomized, chunk_elements)  # (n_f, k)
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
    """docs/METHOD.md steps 1-3, one round at a time. Same distribution as `make_anti_samples`,
    different random stream."""
    shape, device = forget.shape[1:], forget.device
    f, r = forget.flatten(1), retain.flatten(1)
    far = farthest_retain_indices_reference(f, r, min(params.tail_randomized, len(r)))  # step 1
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


MEMORY_SHARE = 0.5  # anti-samples of one class may take at most this share of the device's free memory


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device, or the machine's available memory for the CPU; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:  # Linux: MemAvailable counts reclaimable caches too
            lines = Path("/proc/meminfo").read_text().splitlines()
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))
        except (OSError, StopIteration, ValueError):
            return None
    return None


def check_anti_sample_memory(forget: Split, params: AntiSampleParams) -> None:
    """Refuse, before allocating, anti-samples of one class that would not fit: float32 candidates
    (n_f * m rows), their neighbours, and with the convex combination g x n_f * m weights and g rows."""
    n_f, d = max(int((forget.labels == c).sum()) for c in forget.labels.unique().tolist()), forget.images[0].numel()
    rows = n_f * params.size_multiplier
    needed = 4 * (3 * rows * d + (params.no_generated_data * (rows + d) if params.convex_combination else 0))
    free = free_memory_bytes(forget.images.device)
    if free is not None and needed > MEMORY_SHARE * free:
        smaller = "size_multiplier (--size-multiplier)" + (
            " or no_generated_data (--no-generated-data)" if params.convex_combination else "")
        raise UserError(f"anti-samples need {needed / 2 ** 30:.1f} GiB per class (no_generated_data "
                        f"{params.no_generated_data}, size_multiplier {params.size_multiplier}), more than "
                        f"{MEMORY_SHARE:.0%} of the {free / 2 ** 30:.1f} GiB free on {forget.images.device}; "
                        f"give a smaller {smaller}")


def anti_sample_set(forget: Split, pool: Split, params: AntiSampleParams, generator: torch.Generator) -> Split:
    """Anti-samples for each class in `forget` (its samples against the retain samples in `pool`),
    labelled with that class (docs/METHOD.md step 4; several classes: one set per class, in label order)."""
    check_anti_sample_memory(forget, params)
    parts = []
    for c in forget.labels.unique().tolist():
        images = make_anti_samples(forget.of_classes([c]).images, pool.images, params, generator)
        parts.append(Split(images, torch.full((len(images),), c, device=images.device)))
    return Split.join(*parts)


# ----------------------------------------------------------------------------------------------
# Unlearning


class ForgetTargetWarning(UserWarning):
    """`unlearn` reached max_epochs with a forget class still above forget_target (the model is kept)."""


@dataclass
class UnlearnRecord:
    """What `unlearn` did."""
    forget_classes: list[int]
    anti_samples: int  # made, all forget classes together
    epochs: int  # run on retain data + anti-samples (with a forget target: where it stopped)
    repair_epochs: int  # then on retain data alone
    seconds: float  # wall time: anti-samples and fine-tuning (with the forget target's checks)
    # with a forget target: after each epoch, the highest accuracy (%) over the forget classes on
    # their forget samples, the number the target is checked against; empty without one
    forget_trace: list[float] = dataclasses.field(default_factory=list)


def forget_accuracies(model: nn.Module, forget: Split, classes: list[int]) -> dict[int, float]:
    """The model's accuracy (%, eval mode) on the forget samples of each class."""
    correct = predict(model, forget.images) == forget.labels
    return {c: accuracy(correct[forget.labels == c]) for c in classes}


class UntilForgotten:
    """A forget target as an `after_epoch` callback: after every epoch, each forget class's accuracy
    on its forget samples; says stop at the first epoch from `epochs` on where the worst class is
    at most `target` (%). Training's own epoch count is the cap. The baselines use it too
    (methods.py, --baseline-forget-target)."""

    def __init__(self, model: nn.Module, forget: Split, classes: list[int], epochs: int, target: float,
                 after_epoch: Callable[[int], None] | None = None):
        self.model, self.forget, self.classes, self.epochs, self.target = model, forget, classes, epochs, target
        self.after_epoch = after_epoch  # the caller's own, called first
        self.trace: list[float] = []
        self.last: dict[int, float] = {}

    def __call__(self, epoch: int) -> bool:
        if self.after_epoch is not None:
            self.after_epoch(epoch)
        self.last = forget_accuracies(self.model, self.forget, self.classes)
        self.trace.append(max(self.last.values()))
        return epoch >= self.epochs and self.trace[-1] <= self.target

    def warn_if_missed(self, cap: str = "max_epochs", who: str = "") -> None:
        """One ForgetTargetWarning if the last epoch left a class above the target (`cap`: the name
        of the epoch cap reached; `who`: a prefix naming the method)."""
        worst = max(self.last, key=self.last.get)
        if self.last[worst] > self.target:
            warnings.warn(f"{who}forget target {self.target:g}% not reached: class {worst} is at "
                          f"{self.last[worst]:.2f}% on its forget samples after {len(self.trace)} epochs "
                          f"({cap}); the unlearned model is kept", ForgetTargetWarning, stacklevel=3)


def unlearn(model: nn.Module, forget, retain, pool=None, params: AntiSampleParams | None = None, *,
            forget_classes: list[int] | None = None, device: torch.device | str | None = None,
            generator: torch.Generator | None = None, noise_generator: torch.Generator | None = None,
            progress: bool = True, speed: Speed | None = None, after_epoch: Callable[[int], None] | None = None,
            **options: Any) -> tuple[nn.Module, UnlearnRecord]:
    """Make `model` forget the classes of `forget`, with anti-samples. **The model is changed in
    place** (and returned); copy it first to keep the original.

    - `forget`, `retain`, `pool`: `(images, labels)` tensor pairs, `datasets.Split`s or map-style
      Datasets of `(image, label)`. `forget` holds the samples of the class(es) to forget; `retain`
      the retain data to fine-tune on; `pool` (default: `retain`) the retain data searched for far
      neighbours (the entry scripts pass all retain-class training data, as the authors do).
    - `params` and/or keyword `options` (any `AntiSampleParams` field, e.g. `epochs=3, lr=1e-3`;
      options win); defaults: `AntiSampleParams()`, the paper's CIFAR-10 ResNet18 Unlearning-30 row
      unlearning until forgotten at lr API_LR, then one repair epoch; `params=AntiSampleParams.paper()`
      is the row as published.
    - `forget_classes`: default, the labels in `forget`; given, each must have samples there.
    - `device`: default, the model's; the data are moved there.
    - `generator`: CPU generator of the minibatch shuffles (default: drawn from torch's global
      seed); `noise_generator`: on `device`, of the anti-sample draws (default: seeded from
      `generator`).
    - `speed`: `train_utils.Speed` (default: fused Adam and CUDA graphs on CUDA, plain elsewhere).
    - `after_epoch(epoch)`: called after each epoch on retain data + anti-samples (from 1), e.g. to
      evaluate; it may raise to stop (the tuner prunes this way).
    - With `forget_target`, the fine-tuning runs `epochs`, then on until every forget class's
      accuracy on its samples in `forget` (nothing else is measured) is at most the target, or
      `max_epochs` in all (then a `ForgetTargetWarning`); one run, as if `epochs` were larger.
    Returns `(model, UnlearnRecord)`. Bad input raises `errors.UserError` with a one-line message."""
    if params is not None and not isinstance(params, AntiSampleParams):
        raise UserError(f"params: expected an AntiSampleParams, got {type(params).__name__} (give options as "
                        f"keyword arguments instead, e.g. unlearn(model, forget, retain, lr=1e-3))")
    try:
        params = dataclasses.replace(params or AntiSampleParams(), **options)
    except TypeError:
        known = [f.name for f in dataclasses.fields(AntiSampleParams)]
        unknown = sorted(set(options) - set(known))
        raise UserError(f"unknown option {unknown[0] if unknown else options}; known: {', '.join(known)}") from None
    check_model(model)
    device = resolve_device(device, "device") if device is not None else resolve_device(model_device(model),
                                                                                        "the model's device")
    check_generators(generator, noise_generator, device)
    model.to(device)
    forget, retain = as_split(forget, "forget", device), as_split(retain, "retain", device)
    pool = retain if pool is None else as_split(pool, "pool", device)
    classes = check_unlearn_inputs(model, forget, retain, pool, as_class_list(forget_classes))
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,))))
    if noise_generator is None:
        noise_generator = torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
    speed = Speed.default_for(device) if speed is None else speed

    name = f"unlearning {','.join(map(str, classes))}"
    eval_mode = params.unlearn_mode == "eval"
    def each_epoch(epoch: int) -> None:  # the caller's callback never stops the fixed epochs
        if after_epoch is not None:
            after_epoch(epoch)
    if params.forget_target is None:  # the paper's fixed epochs
        until, epochs = None, params.epochs
    else:
        until = UntilForgotten(model, forget, classes, params.epochs, params.forget_target, after_epoch)
        epochs, each_epoch = params.epoch_cap, until
    with Stopwatch(device) as clock, torch.enable_grad():  # also when called under torch.no_grad()
        anti = anti_sample_set(forget, pool, params, noise_generator)
        unlearning = TrainParams(epochs, params.lr, params.batch_size, eval_mode)
        epochs_run = train(model, Split.join(retain, anti), unlearning, generator, phase=name, progress=progress,
                           speed=speed, after_epoch=each_epoch)
        if until is not None:
            until.warn_if_missed()
        if params.repair_epochs:
            train(model, retain, TrainParams(params.repair_epochs, params.repair_lr, params.batch_size, eval_mode),
                  generator, phase=f"repair {name}", progress=progress, speed=speed)
    return model, UnlearnRecord(classes, len(anti), epochs_run, params.repair_epochs, clock.seconds,
                                until.trace if until else [])
