#!/usr/bin/env python3
"""Unlearning one CIFAR-10 class from ResNet18: a published-code-style loop vs `train_utils.train`.

Trains a ResNet18 (torchvision, no pretrained weights) on the CIFAR-10 training split for
--original-epochs (seconds per epoch), then for each retain percentage builds the mixed set as
the pipeline does (retain subset + anti-samples, experiment.Experiment.unlearn) and fine-tunes
two copies of the same original model on it with the paper's notebook hyperparameters
(hparams.resolve("ResNet18", "cifar10", percent)) and the authors' protocol (far neighbours among
all retain-class training data, the model in eval mode while it fine-tunes):
  (a) published style: a DataLoader over a Python list of (image, label) tuples, batch 128,
      shuffled, eager fp32, Adam, model.eval() as in the authors' loop;
  (b) ours: train_utils.train over the in-memory Split, once per --speeds variant (train_utils.Speed:
      fused Adam, CUDA graph, bf16, torch.compile; only "plain" on the CPU).
Reports the seconds of each and the forget / retain test accuracy of each model, so a speed-up
never hides a change in the result, and the seconds of one original-model epoch per variant.

    bench/unlearn_bench.py --data-root ../shared/data/cifar10-jpeg.tar.gz --max-per-class 500 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hparams  # noqa: E402
from anti_sample import AntiSampleParams, anti_sample_set  # noqa: E402
from datasets import Split, draw_retain_subset, load_dataset  # noqa: E402
from devices import Stopwatch  # noqa: E402
from models import get_model  # noqa: E402
from seeding import derived_seed, make_generator  # noqa: E402
from train_utils import Speed, TrainParams, evaluate, train  # noqa: E402

MODEL = "ResNet18"
SPEEDS = {  # --speeds names; all but "plain" need CUDA
    "plain": Speed(),
    "fused": Speed(fused_adam=True),
    "graph": Speed(fused_adam=True, cuda_graph=True),
    "graph_bf16": Speed(fused_adam=True, cuda_graph=True, bf16=True),
    "compile": Speed(fused_adam=True, compile=True),
    "compile_bf16": Speed(fused_adam=True, compile=True, bf16=True),
}
DEFAULT_DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="CIFAR-10 image folder or .tar.gz")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--max-per-class", type=int, default=None,
                        help="first N train and N test images of each class (all when left out)")
    parser.add_argument("--original-epochs", type=int, default=1, help="epochs of the original model")
    parser.add_argument("--percents", default="30,100", help="retain percentages (Unlearning-30, -100)")
    parser.add_argument("--forget-class", type=int, default=0, help="class to forget")
    parser.add_argument("--seed", type=int, default=100, help="seed of every random draw")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch's own choice when left out)")
    parser.add_argument("--speeds", default=None,
                        help=f"comma-separated variants of our loop, from {', '.join(SPEEDS)} "
                             f"(default: plain,fused,graph,graph_bf16 on CUDA, plain on the CPU)")
    parser.add_argument("--json", default=None, help="write the results here")
    return parser


def timed(call, device: torch.device) -> float:
    with Stopwatch(device) as clock:
        call()
    return clock.seconds


def new_model(seed: int, device: torch.device, state: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(derived_seed(seed, "init"))
    model = get_model(MODEL, 10, 3, pretrained=False).to(device)
    if state is not None:
        model.load_state_dict(state)
    return model


def train_published_style(model: torch.nn.Module, data: Split, params: TrainParams, seed: int) -> None:
    """The published notebooks' loop: a per-sample DataLoader over a list of (image, label) tuples,
    each batch collated on the CPU and copied to the device."""
    device = data.images.device
    samples = [(image, int(label)) for image, label in zip(data.images.cpu(), data.labels.cpu())]
    loader = DataLoader(samples, batch_size=params.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    model.eval()  # the authors' unlearning loop never leaves the eval mode their evaluation set
    for _ in range(params.epochs):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def accuracies(model: torch.nn.Module, test: Split, forget_classes: list[int]) -> dict[str, float]:
    acc = evaluate(model, test, forget_classes)
    return {"forget_test_acc": acc["forget"], "retain_test_acc": acc["retain"]}


class Results:
    """The bench's JSON, written again after every step, so that a step that fails or a timeout
    keeps what was measured before it. A failed step is recorded under "errors" and the next one runs."""

    def __init__(self, path: str | None, **header):
        self.path = Path(path) if path else None
        self.data = {**header, "errors": {}}
        self.write()

    def write(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data, indent=2) + "\n")

    def step(self, name: str, call, into: dict | None = None, label: str | None = None):
        """Runs `call`, stores its value under `name` in `into` (the top level by default), prints
        it and writes the file; on an exception records its one-line message under `label` (default
        `name`; it must be unique across the bench) instead and returns None."""
        label = label or name
        try:
            value = call()
        except Exception as error:  # noqa: BLE001 - a bench step's failure is a result to keep
            self.record_error(label, error)
            return None
        (self.data if into is None else into)[name] = value
        print(f"{label}: {json.dumps(value)}", flush=True)
        self.write()
        return value

    def record_error(self, label: str, error: Exception) -> None:
        self.data["errors"][label] = f"{type(error).__name__}: {error}"
        print(f"step {label} failed: {self.data['errors'][label]}", file=sys.stderr, flush=True)
        self.write()

    @property
    def failed(self) -> bool:
        return bool(self.data["errors"])


def unlearn_both_ways(results: Results, train_data: Split, test: Split, original_state: dict, percent: float,
                      forget_class: int, seed: int, device: torch.device, speeds: list[str]) -> None:
    forget_classes = [forget_class]
    h = hparams.resolve(MODEL, "cifar10", percent)
    params = AntiSampleParams.from_run(h)
    retain = draw_retain_subset(train_data, forget_classes, percent, make_generator(seed, "retain", forget_classes))
    pool = train_data.of_classes([c for c in range(10) if c != forget_class])  # the authors' pool
    anti = []
    anti_seconds = timed(lambda: anti.append(anti_sample_set(
        train_data.of_classes(forget_classes), pool, params, make_generator(seed, "anti", forget_classes, device=device))),
        device)
    mixed = Split.join(retain, anti[0])
    unlearn_params = TrainParams(h.unlearn_epochs, h.lr * h.unlearn_scale_lr, h.batch_size, eval_mode=True)
    run = {"percent": percent, "forget_class": forget_class, "retain_subset_size": len(retain),
           "anti_samples": len(anti[0]), "unlearn_epochs": h.unlearn_epochs, "unlearn_lr": unlearn_params.lr,
           "batch_size": h.batch_size, "anti_sample_seconds": anti_seconds, "ours": {}}
    results.data["unlearning"].append(run)
    tag = f"unlearning_{percent:g}"

    def published_loop():
        published = new_model(seed, device, original_state)
        seconds = timed(lambda: train_published_style(
            published, mixed, unlearn_params, derived_seed(seed, "unlearn", forget_classes)), device)
        return {"train_seconds": seconds, **accuracies(published, test, forget_classes)}
    run["published_loop"] = None  # stays None if the step fails
    published = results.step("published_loop", published_loop, run, label=f"{tag}/published_loop")

    def ours(name: str):
        model = new_model(seed, device, original_state)
        seconds = timed(lambda: train(model, mixed, unlearn_params, make_generator(seed, "unlearn", forget_classes),
                                      progress=False, speed=SPEEDS[name]), device)
        speedup = published["train_seconds"] / seconds if published else None
        return {"train_seconds": seconds, "unlearning_seconds": anti_seconds + seconds,
                "speedup_vs_published": speedup, **accuracies(model, test, forget_classes)}
    for name in speeds:
        results.step(name, lambda: ours(name), run["ours"], label=f"{tag}/{name}")


def run(args, results: Results) -> None:
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]  # the machine may be shared: record how busy it was
    train_data, test = load_dataset("cifar10", args.data_root, device, args.max_per_class)
    h = hparams.resolve(MODEL, "cifar10", 100)
    model = new_model(args.seed, device)
    original_seconds = timed(lambda: train(
        model, train_data, TrainParams(args.original_epochs, h.lr, h.batch_size),
        make_generator(args.seed, "train", "original"), progress=False), device)
    original_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    results.data.update({"max_per_class": args.max_per_class, "train_images": len(train_data),
                         "test_images": len(test), "epoch_seconds": {}, "unlearning": []})
    results.step("original", lambda: {
        "epochs": args.original_epochs, "seconds": original_seconds,
        "seconds_per_epoch": original_seconds / args.original_epochs, "lr": h.lr,
        "batch_size": h.batch_size, **accuracies(model, test, [args.forget_class])})
    speeds = args.speeds.split(",") if args.speeds else (
        ["plain", "fused", "graph", "graph_bf16"] if device.type == "cuda" else ["plain"])
    unknown = [name for name in speeds if name not in SPEEDS]
    if unknown:
        sys.exit(f"--speeds: unknown variant {unknown[0]!r}; choose from {', '.join(SPEEDS)}")

    def two_epochs(name: str) -> dict:
        """Two original-model epochs from scratch, timed one by one."""
        fresh = new_model(args.seed, device)

        def one_epoch():
            train(fresh, train_data, TrainParams(1, h.lr, h.batch_size), make_generator(args.seed, "train", "epoch"),
                  progress=False, speed=SPEEDS[name])
        return {"first": timed(one_epoch, device), "second": timed(one_epoch, device)}
    for name in speeds:
        results.step(name, lambda: two_epochs(name), results.data["epoch_seconds"], label=f"epoch_seconds/{name}")
    for p in args.percents.split(","):
        try:
            unlearn_both_ways(results, train_data, test, original_state, float(p), args.forget_class, args.seed,
                              device, speeds)
        except Exception as error:  # noqa: BLE001 - recorded; the next percentage still runs
            results.record_error(f"unlearning_{p}", error)
    results.data.update({"load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
                         "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())})
    results.write()


def summary(r: dict) -> str:
    o = r.get("original")
    if o is None:
        return "original model: failed"
    lines = [f"{r['model']} on {r['train_images']} CIFAR-10 train images, {r['device']}: original model "
             f"{o['seconds_per_epoch']:.1f} s/epoch ({o['epochs']} epochs), test retain {o['retain_test_acc']:.2f}% "
             f"forget {o['forget_test_acc']:.2f}%"]
    for u in r["unlearning"]:
        lines.append(f"Unlearning-{u['percent']:g} ({u['retain_subset_size']} retain + {u['anti_samples']} anti-samples, "
                     f"{u['unlearn_epochs']} epochs; anti-samples {u['anti_sample_seconds']:.2f} s):")
        for name, m in [("published_loop", u["published_loop"]), *u["ours"].items()]:
            if m is None:
                continue
            speedup = f"  {m['speedup_vs_published']:.2f}x" if m.get("speedup_vs_published") else ""
            lines.append(f"  {name:15} {m['train_seconds']:7.1f} s  test retain {m['retain_test_acc']:.2f}% "
                         f"forget {m['forget_test_acc']:.2f}%{speedup}")
    lines.append("original-model epoch s (first, second): " + ", ".join(
        f"{name} {e['first']:.2f}, {e['second']:.2f}" for name, e in r["epoch_seconds"].items()))
    return "\n".join(lines)


def main() -> int:
    args = get_args_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = Results(args.json, model=MODEL, device=args.device, torch=torch.__version__,
                      cpu_threads=torch.get_num_threads())
    run(args, results)
    print(summary(results.data))
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
