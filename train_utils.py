"""Training and evaluation over in-memory tensors.

Batches are slices of a random permutation of a `Split` already on the device; there is no
per-sample data loader. `Speed` chooses how steps run on CUDA (fused Adam, CUDA graphs, bf16,
torch.compile). `evaluate` returns accuracies in percent; printing is the caller's job.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from datasets import Split

EVAL_BATCH_SIZE = 1000


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    lr: float  # Adam learning rate
    batch_size: int
    # True: train with the model in eval mode (BatchNorm running statistics frozen, dropout
    # off; weights and BatchNorm's affine parameters still learn), as the authors' unlearning runs
    eval_mode: bool = False


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: results would be garbage, so the run stops."""


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Index tensors of shuffled minibatches covering 0..n-1 once (the last one may be short). A
    last batch of one sample joins the one before: BatchNorm cannot train on a single sample."""
    perm = torch.randperm(n, generator=generator).to(device, non_blocking=True)
    chunks = list(perm.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [perm[-batch_size - 1:]]
    return chunks


@dataclass(frozen=True)
class Speed:
    """How `optimise` runs its steps (README "Speed"). The entry scripts enable these on CUDA
    devices only; the CPU keeps the plain loop (all False)."""
    fused_adam: bool = False  # torch's fused Adam kernel
    cuda_graph: bool = False  # capture one whole step (forward, backward, Adam) and replay it
    bf16: bool = False  # bf16 autocast of the forward pass and loss
    compile: bool = False  # torch.compile the model's forward

    @staticmethod
    def default_for(device: torch.device | str) -> "Speed":
        """What the entry scripts use unless told otherwise: fused Adam and CUDA graphs on a CUDA
        device (bench/RESULTS.md: 4.4x faster epochs on an H200), the plain loop elsewhere."""
        cuda = torch.device(device).type == "cuda"
        return Speed(fused_adam=cuda, cuda_graph=cuda)

    def forward(self, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model's forward as steps call it: compiled with `compile`."""
        return torch.compile(model) if self.compile else model


PLAIN = Speed()
GRAPH_WARMUP_STEPS = 3  # eager steps (real ones) before the capture, as torch's docs advise


class GraphedStep:
    """A training step on full batches replayed from a CUDA graph.

    `step(index)` must read its batch from device-resident data through `index` and never sync
    with the host. Full batches have their indices copied into one static buffer, so a replay
    moves no data; after `GRAPH_WARMUP_STEPS` eager steps the next full batch is captured and
    every later one replayed. The last, short batch of an epoch runs eagerly. With
    `capture=False` (a CPU device) the same buffer logic runs without a graph, which is how the
    tests check it against the plain loop."""

    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
                 device: torch.device, capture: bool):
        self.step, self.capture = step, capture
        self.index = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.graph, self.loss, self.eager_steps = None, None, 0
        # warm-up and capture share one side stream, so per-stream library handles (cuBLAS
        # workspaces) are created before the capture, not during it
        self.side = torch.cuda.Stream(device) if capture else None

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        if len(index) != len(self.index):
            return self.step(index)
        self.index.copy_(index)
        if not self.capture:
            return self.step(self.index)
        if self.graph is None and self.eager_steps < GRAPH_WARMUP_STEPS:
            self.eager_steps += 1
            self.side.wait_stream(torch.cuda.current_stream(self.index.device))
            with torch.cuda.stream(self.side):
                loss = self.step(self.index)
            torch.cuda.current_stream(self.index.device).wait_stream(self.side)
            return loss
        if self.graph is None:  # capture records the step without running it; replay runs it
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.side):
                self.loss = self.step(self.index)
        self.graph.replay()
        return self.loss


def optimise(model: nn.Module, n: int, params: TrainParams, batch_loss: Callable[[torch.Tensor], torch.Tensor],
             generator: torch.Generator, device: torch.device, phase: str = "training",
             progress: bool = True, grad_mask: dict[str, torch.Tensor] | None = None,
             speed: Speed = PLAIN, after_epoch: Callable[[int], bool | None] | None = None) -> int:
    """Adam over shuffled minibatches of indices 0..n-1, model in train mode (eval mode with
    `params.eval_mode`): each step minimises `batch_loss(index)`. `grad_mask` (parameter name ->
    0/1 tensor) freezes the zeroed weights. `after_epoch(epoch)` (epochs count from 1) runs after
    every epoch, e.g. to evaluate; the model's mode is set again before the next one. If it
    returns True, training stops there: fewer epochs of the same run (same optimiser state and
    shuffle stream). Returns the epochs run.

    `generator` is a CPU generator driving the shuffles. Raises NonFiniteLossError naming
    `phase` if the loss is ever NaN or infinite (checked once per epoch, not per step)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, fused=speed.fused_adam or None,
                                 capturable=speed.cuda_graph and device.type == "cuda")
    masked = [(p, grad_mask[name]) for name, p in model.named_parameters() if name in grad_mask] if grad_mask else []

    def step(index: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=speed.bf16, cache_enabled=False):
            loss = batch_loss(index)
        loss.backward()
        for param, mask in masked:
            param.grad.mul_(mask)
        optimizer.step()
        return loss.detach()

    run_step = GraphedStep(step, params.batch_size, device, device.type == "cuda") if speed.cuda_graph else step
    epochs = tqdm(range(params.epochs), desc=phase, leave=False, disable=not progress)
    for epoch in epochs:
        model.train(not params.eval_mode)
        epoch_loss = torch.zeros((), device=device)  # summed over samples: each batch's mean x its size
        for index in batches(n, params.batch_size, generator, device):
            epoch_loss += run_step(index).float() * len(index)
        mean_loss = epoch_loss.item() / n
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(f"{phase}: the loss became {mean_loss} in epoch {epoch + 1}")
        epochs.set_postfix({"mean loss per sample": f"{mean_loss:.4f}"})
        if after_epoch is not None and after_epoch(epoch + 1):
            return epoch + 1
    return params.epochs


def train(model: nn.Module, data: Split, params: TrainParams, generator: torch.Generator,
          phase: str = "training", progress: bool = True,
          grad_mask: dict[str, torch.Tensor] | None = None, speed: Speed = PLAIN,
          after_epoch: Callable[[int], bool | None] | None = None) -> int:
    """Adam + cross-entropy on `data` (docs/METHOD.md protocol); see `optimise`. Returns the epochs run."""
    forward = speed.forward(model)

    def batch_loss(index):
        return nn.functional.cross_entropy(forward(data.images[index]), data.labels[index])
    return optimise(model, len(data), params, batch_loss, generator, data.images.device, phase, progress,
                    grad_mask, speed, after_epoch)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(chunk).argmax(1) for chunk in images.split(EVAL_BATCH_SIZE)])


def accuracy(correct: torch.Tensor) -> float | None:
    """Percentage of True in a boolean tensor; None when it is empty."""
    return 100.0 * correct.sum().item() / len(correct) if len(correct) else None


def evaluate(model: nn.Module, data: Split, forget_classes: list[int]) -> dict[str, float | None]:
    """Accuracy in percent over all of `data`, over its retain-class and its forget-class samples."""
    correct = predict(model, data.images) == data.labels
    is_forget = torch.isin(data.labels, torch.tensor(forget_classes, device=data.labels.device))
    return {"all": accuracy(correct), "retain": accuracy(correct[~is_forget]),
            "forget": accuracy(correct[is_forget])}
