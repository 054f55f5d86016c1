"""Training, evaluation and checkpoints over in-memory tensors.

Batches are slices of a random permutation of a `Split` already on the device; there is no
per-sample data loader. `evaluate` returns accuracies in percent; printing is the caller's job.
Checkpoints hold the state dict and the resolved config, are written atomically and read with
`weights_only=True`, so a checkpoint can never run code.
"""
from __future__ import annotations

import errno
import math
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from datasets import Split
from errors import UserError, check_regular_file, first_line

EVAL_BATCH_SIZE = 1000
SELECT_FRACTION = 0.3  # PAPER.md "Model selection": a fresh random 30% of the test set each epoch
MIA_DRAWS = 5  # shadow-set draws averaged by mia_efficacy
_UMASK = os.umask(0)
os.umask(_UMASK)


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
        epoch_loss = torch.zeros((), device=device)
        for index in batches(n, params.batch_size, generator, device):
            epoch_loss += run_step(index).float()
        if not math.isfinite(epoch_loss.item()):
            raise NonFiniteLossError(f"{phase}: the loss became {epoch_loss.item()} in epoch {epoch + 1}")
        epochs.set_postfix(loss=epoch_loss.item())
        if after_epoch is not None and after_epoch(epoch + 1):
            return epoch + 1
    return params.epochs


def train(model: nn.Module, data: Split, params: TrainParams, generator: torch.Generator,
          phase: str = "training", progress: bool = True,
          grad_mask: dict[str, torch.Tensor] | None = None, speed: Speed = PLAIN,
          after_epoch: Callable[[int], bool | None] | None = None) -> int:
    """Adam + cross-entropy on `data` (PAPER.md protocol); see `optimise`. Returns the epochs run."""
    forward = speed.forward(model)

    def batch_loss(index):
        return nn.functional.cross_entropy(forward(data.images[index]), data.labels[index])
    return optimise(model, len(data), params, batch_loss, generator, data.images.device, phase, progress,
                    grad_mask, speed, after_epoch)


DEVICE_TYPES = ("cpu", "cuda", "mps")  # the ones the pipeline is written for (not meta, xpu, ...)


def resolve_device(name: str | torch.device, what: str = "--device") -> torch.device:
    """`name` as a device this machine has and the pipeline runs on, or a one-line UserError."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"{what} {name!r} is not a torch device; try cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what} {name} is not available here (no CUDA GPU); use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{what} {name} is not available here: this machine has {torch.cuda.device_count()} "
                        f"CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{what} {name} is not available here; use cpu")
    if device.type not in DEVICE_TYPES:
        raise UserError(f"{what} {name}: this tool runs on {', '.join(DEVICE_TYPES)} devices, not {device.type}; "
                        f"use cpu")
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for `device`'s queued work (CUDA only), so wall-clock timings are complete."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


class BestEpoch:
    """The authors' model selection (PAPER.md "Model selection"), as an `after_epoch` callback:
    after every epoch, the accuracy on a fresh seeded random `fraction` of `data` (their test
    set: this looks at test data); keeps a copy of the weights of the best epoch (the first on
    ties). `epoch` and `state` are the selection; `accuracies` has every epoch's value."""

    def __init__(self, model: nn.Module, data: Split, generator: torch.Generator,
                 fraction: float = SELECT_FRACTION):
        self.model, self.data, self.generator = model, data, generator
        self.count = max(1, round(len(data) * fraction))
        self.epoch, self.state, self.accuracies = 0, None, []

    def __call__(self, epoch: int) -> None:
        index = torch.randperm(len(self.data), generator=self.generator)[:self.count].to(self.data.labels.device)
        value = accuracy(predict(self.model, self.data.images[index]) == self.data.labels[index])
        self.accuracies.append(value)
        if value > max(self.accuracies[:-1], default=-1.0):
            self.epoch = epoch
            self.state = {name: t.detach().clone() for name, t in self.model.state_dict().items()}


@torch.no_grad()
def true_label_probability(model: nn.Module, data: Split) -> torch.Tensor:
    """softmax(model(x))[y] for every sample, on the CPU."""
    model.eval()
    return torch.cat([model(x).softmax(1).gather(1, y[:, None]).squeeze(1).cpu()
                      for x, y in zip(data.images.split(EVAL_BATCH_SIZE), data.labels.split(EVAL_BATCH_SIZE))])


def mia_efficacy(model: nn.Module, retain_train: Split, retain_test: Split, forget_train: Split,
                 generator: torch.Generator, draws: int = MIA_DRAWS) -> float:
    """Membership inference as in SalUn (Fan et al., ICLR 2024), in percent: an RBF SVC (C=3,
    gamma "auto") on the true-label softmax probability, fit on retain training samples
    (members; SalUn uses the unlearner's retain set) against as many retain-class test samples
    (non-members); efficacy is the share of forget-class training samples it calls
    non-members. 100: the model treats them as unseen.

    Averaged over `draws` seeded draws of the equal-count shadow sets (ours: SalUn fits once).
    When the model scores members and non-members alike, the fit is near a coin flip where the
    forget samples lie (true-label probability near 0), and one draw can swing it 0 <-> 100."""
    from sklearn.svm import SVC

    members, others = true_label_probability(model, retain_train), true_label_probability(model, retain_test)
    forget = true_label_probability(model, forget_train)[:, None].numpy()
    n = min(len(members), len(others))
    is_member = torch.cat([torch.ones(n), torch.zeros(n)]).numpy()
    non_member_share = 0.0
    for _ in range(draws):
        features = torch.cat([members[torch.randperm(len(members), generator=generator)[:n]],
                              others[torch.randperm(len(others), generator=generator)[:n]]])
        classifier = SVC(C=3, gamma="auto", kernel="rbf").fit(features[:, None].numpy(), is_member)
        non_member_share += float((classifier.predict(forget) == 0).mean()) / draws
    return 100.0 * non_member_share


# ----------------------------------------------------------------------------------------------
# Checkpoints


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temp file beside `path`, then rename it over `path`: a reader
    (or a rerun after a kill) sees the old file or the complete new one, never a torn one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _write_error(path, error, tmp) from None
        if isinstance(error, RuntimeError):  # torch.save reports failed writes this way
            raise UserError(f"could not write {path} ({first_line(error)}); is the disk full?") from None
        raise


def _write_error(path: Path, error: OSError, tmp: str | None = None) -> OSError | UserError:
    """A full disk stays an OSError naming the file (cli.report_failure words it); anything else,
    such as a folder where the file goes or a file where its folder goes, is a one-line UserError."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(error.errno, error.strerror, str(path))
    where = f": {error.filename}" if error.filename and str(error.filename) not in (str(path), tmp) else ""
    return UserError(f"could not write {path} ({error.strerror}{where}); move that away or choose another folder")


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any],
                    extra: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """State dict (on the CPU) + resolved config (+ `extra` named state dicts), written atomically."""
    def on_cpu(state):
        return {name: tensor.detach().cpu() for name, tensor in state.items()}
    saved = {"state_dict": on_cpu(model.state_dict()), "config": config,
             **{key: on_cpu(state) for key, state in (extra or {}).items()}}
    atomic_write(path, lambda file: torch.save(saved, file))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """{"state_dict", "config"} from `path`, refusing anything but tensors and plain data. A bare
    state dict (`torch.save(model.state_dict(), path)`) is taken as {"state_dict": it, "config": {}}."""
    check_regular_file(path, "checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message is a paragraph on weights_only
        raise UserError(f"checkpoint {path} is not a PyTorch checkpoint of tensors and plain data "
                        f"(anything else is refused without running it)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise UserError(f"checkpoint {path} is truncated or not a PyTorch checkpoint "
                        f"({first_line(error)})") from None
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        checkpoint = {"state_dict": checkpoint, "config": {}}  # a bare state dict
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"checkpoint {path} has no 'state_dict'; expected one written by this repository, "
                        f"a {{'state_dict': ..., 'config': ...}} dict or a bare state dict")
    return checkpoint


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load a checkpoint's weights (its "state_dict") into `model`, with a one-line error when they
    belong to another model."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"checkpoint {path}: its 'state_dict' is not a dict of parameter names to tensors "
                        f"(got {type(state).__name__})")
    if any(v.is_meta for v in state.values()):
        raise UserError(f"checkpoint {path} holds meta tensors (shapes without values); save the trained weights")
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise UserError(f"checkpoint {path} holds NaN or infinite weights; give a model trained to the end")
    if state and all(name.startswith("module.") for name in state):  # saved from a DistributedDataParallel
        state = {name.removeprefix("module."): tensor for name, tensor in state.items()}
    expected = model.state_dict()
    wrong = next((name for name, tensor in state.items() if name in expected
                  and expected[name].is_floating_point() and not tensor.is_floating_point()), None)
    if wrong is not None:  # load_state_dict would copy them in, whole numbers and all
        raise UserError(f"checkpoint {path}: {wrong} holds {state[wrong].dtype} values where the model has "
                        f"{expected[wrong].dtype} weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
        raise UserError(f"checkpoint {path} does not fit this model and class count: {first[:300]}") from None
