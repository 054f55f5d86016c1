#!/usr/bin/env python3
"""Far-neighbour search and anti-sample generation: fast path vs the paper's reference.

Measures, on one input and in one process, the median seconds of --repeats calls (after one
warm-up call) of `farthest_retain_indices_reference` (full float64 distance matrix + full
argsort) and of `farthest_retain_indices` (chunked matmul + top-k), with --k neighbours; and of
the whole `make_anti_samples_reference` vs `make_anti_samples` with the paper's ResNet18 /
CIFAR-10 Unlearning-30 row (which asks for k = tail_randomized = 20). Checks that both
far-neighbour functions return the same indices (exit status 1 if not). Measures the extra peak
memory of one far-neighbour call of each: on the CPU ru_maxrss after minus before the call, in a
fresh subprocess; on CUDA torch.cuda.max_memory_allocated minus the memory allocated before.

    bench/anti_sample_bench.py --n-forget 5000 --n-retain 13500 --dim 3072 --json out.json
    bench/anti_sample_bench.py --n-forget 5000 --n-retain 13500 \
        --data-root ../shared/data/cifar10-jpeg.tar.gz --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anti_sample import AntiSampleParams, make_anti_samples, make_anti_samples_reference  # noqa: E402
from far_neighbours import farthest_retain_indices, farthest_retain_indices_reference  # noqa: E402
from datasets import load_dataset  # noqa: E402
from devices import Stopwatch, synchronize  # noqa: E402

# The paper's ResNet18 / CIFAR-10 Unlearning-30 row: lambda 5, m 1, p 0.95, k 20, g 500.
UNLEARNING_30 = AntiSampleParams.paper()
FORGET_CLASS = 0
MB = 2 ** 20


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n-forget", type=int, default=5000, help="forget rows")
    parser.add_argument("--n-retain", type=int, default=13500, help="retain rows")
    parser.add_argument("--dim", type=int, default=3072, help="features per row (random data only)")
    parser.add_argument("--k", type=int, default=30, help="far neighbours per forget row")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--data-root", default=None,
                        help="CIFAR-10 image folder or .tar.gz: real rows (forget: first n-forget "
                             "of class 0; retain: other classes, equal numbers each) instead of "
                             "random normal data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random data and generators")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up; the median is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch's own choice when left out)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--peak-child", nargs=2, metavar=("FUNCTION", "TENSORS"), help=argparse.SUPPRESS)
    parser.add_argument("--write-input", metavar="TENSORS", help=argparse.SUPPRESS)
    return parser


def make_input(args) -> tuple[torch.Tensor, torch.Tensor]:
    """(forget, retain) rows, flattened, float32 on the CPU."""
    if args.data_root is None:
        generator = torch.Generator().manual_seed(args.seed)
        return (torch.randn(args.n_forget, args.dim, generator=generator),
                torch.randn(args.n_retain, args.dim, generator=generator))
    retain_classes = [c for c in range(10) if c != FORGET_CLASS]
    retain_per_class = math.ceil(args.n_retain / len(retain_classes))
    train, _ = load_dataset("cifar10", args.data_root, max_per_class=max(args.n_forget, retain_per_class))
    forget = train.of_classes([FORGET_CLASS]).images[:args.n_forget]
    retain = torch.cat([train.of_classes([c]).images[:retain_per_class] for c in retain_classes])
    if len(forget) < args.n_forget:
        sys.exit(f"--data-root {args.data_root} has only {len(forget)} training images of class 0")
    return forget.flatten(1), retain[:args.n_retain].flatten(1)


def median_seconds(call, device: torch.device, repeats: int, warm_up: bool = True):
    """Median wall-clock seconds of `repeats` calls (after one warm-up call), all the times, and
    the last call's output."""
    if warm_up:
        call()
    times = []
    for _ in range(repeats):
        with Stopwatch(device) as clock:
            output = call()
        times.append(clock.seconds)
    return statistics.median(times), times, output


FAR_FUNCTIONS = {"reference": farthest_retain_indices_reference, "fast": farthest_retain_indices}


def rss_mb() -> tuple[float, float]:
    """(peak, current) resident set size of this process in MB (MiB)."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    current_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
    return peak_kib / 1024, current_kib / 1024


def peak_child(function: str, tensors_path: str, k: int) -> None:
    """Hidden mode: one call of FAR_FUNCTIONS[function] in this fresh process; prints its RSS."""
    forget, retain = torch.load(tensors_path, weights_only=True)
    baseline_mb, current_mb = rss_mb()
    FAR_FUNCTIONS[function](forget, retain, k)
    after_mb, _ = rss_mb()
    print(json.dumps({"baseline_mb": baseline_mb, "after_mb": after_mb, "peak_mb": after_mb - baseline_mb,
                      "rss_before_call_mb": current_mb}))


def run_self(*flags: str) -> str:
    return subprocess.run([sys.executable, __file__, *flags], check=True, capture_output=True, text=True).stdout


def cuda_peak_mb(function: str, forget: torch.Tensor, retain: torch.Tensor, k: int) -> dict[str, float]:
    """Extra peak CUDA memory of one call, after a warm-up call (so one-off library workspaces
    are not counted)."""
    FAR_FUNCTIONS[function](forget, retain, k)
    synchronize(forget.device)
    torch.cuda.reset_peak_memory_stats(forget.device)
    baseline = torch.cuda.memory_allocated(forget.device)
    FAR_FUNCTIONS[function](forget, retain, k)
    synchronize(forget.device)
    after = torch.cuda.max_memory_allocated(forget.device)
    return {"baseline_mb": baseline / MB, "after_mb": after / MB, "peak_mb": (after - baseline) / MB}


def input_and_peak_memory(args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The input rows on `device` and each far-neighbour function's extra peak memory (MB).

    On the CPU each function runs once in a fresh child. The kernel starts a child's ru_maxrss at
    its parent's peak, so the input is made in one child, written to a file, and measured in the
    others while this process is still small (only torch imported)."""
    if device.type == "cuda":
        forget, retain = (t.to(device) for t in make_input(args))
        return forget, retain, {name: cuda_peak_mb(name, forget, retain, args.k) for name in FAR_FUNCTIONS}
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "input.pt")
        run_self(*sys.argv[1:], "--write-input", path)
        memory = {name: json.loads(run_self("--peak-child", name, path, "--k", str(args.k),
                                             "--threads", str(torch.get_num_threads())).splitlines()[-1])
                  for name in FAR_FUNCTIONS}
        forget, retain = torch.load(path, weights_only=True)
    return forget.to(device), retain.to(device), memory


def run(args) -> dict:
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]  # the machine may be shared: record how busy it was
    forget, retain, memory = input_and_peak_memory(args, device)
    k = args.k

    reference_s, reference_times, reference_far = median_seconds(
        lambda: farthest_retain_indices_reference(forget, retain, k), device, args.repeats)
    fast_s, fast_times, fast_far = median_seconds(
        lambda: farthest_retain_indices(forget, retain, k), device, args.repeats)
    same_neighbours = torch.equal(reference_far, fast_far)

    # No separate warm-up: the far-neighbour calls above ran the same kernels.
    generator = torch.Generator(device=device).manual_seed(args.seed)
    make_reference_s, _, _ = median_seconds(
        lambda: make_anti_samples_reference(forget, retain, UNLEARNING_30, generator), device,
        args.repeats, warm_up=False)
    make_fast_s, _, _ = median_seconds(
        lambda: make_anti_samples(forget, retain, UNLEARNING_30, generator), device,
        args.repeats, warm_up=False)

    reference_peak, fast_peak = memory["reference"], memory["fast"]
    return {
        "n_forget": len(forget), "n_retain": len(retain), "dim": forget.shape[1], "k": k,
        "data": "cifar10 " + str(args.data_root) if args.data_root else "random normal",
        "device": str(device), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
        "repeats": args.repeats, "statistic": "median of repeats after one warm-up call",
        "same_neighbours": same_neighbours,
        "reference_s": reference_s, "fast_s": fast_s, "speedup": reference_s / fast_s,
        "reference_times_s": reference_times, "fast_times_s": fast_times,
        "make_anti_samples_reference_s": make_reference_s, "make_anti_samples_s": make_fast_s,
        "make_anti_samples_speedup": make_reference_s / make_fast_s,
        "reference_peak_mb": reference_peak["peak_mb"], "fast_peak_mb": fast_peak["peak_mb"],
        "memory_ratio": reference_peak["peak_mb"] / max(fast_peak["peak_mb"], 1e-9),
        "reference_memory": reference_peak, "fast_memory": fast_peak,
        "memory_method": ("torch.cuda.max_memory_allocated - memory_allocated before the call"
                          if device.type == "cuda" else
                          "ru_maxrss after - ru_maxrss before one call, in a fresh subprocess"),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def summary(r: dict) -> str:
    return "\n".join([
        f"{r['n_forget']} forget x {r['n_retain']} retain x {r['dim']} features, k={r['k']}, "
        f"{r['data']}, {r['device']}",
        f"far neighbours: reference {r['reference_s']:.2f} s, fast {r['fast_s']:.2f} s, "
        f"speedup {r['speedup']:.2f}x; same neighbours: {r['same_neighbours']}",
        f"peak memory:    reference {r['reference_peak_mb']:.0f} MB, fast {r['fast_peak_mb']:.0f} MB, "
        f"ratio {r['memory_ratio']:.2f}x",
        f"anti-samples (Unlearning-30 row): reference {r['make_anti_samples_reference_s']:.2f} s, "
        f"fast {r['make_anti_samples_s']:.2f} s, speedup {r['make_anti_samples_speedup']:.2f}x",
    ])


def main() -> int:
    args = get_args_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_child:
        peak_child(*args.peak_child, args.k)
        return 0
    if args.write_input:
        torch.save(make_input(args), args.write_input)
        return 0
    try:
        result = run(args)
    except Exception as error:  # noqa: BLE001 - recorded in the JSON, so a GPU session keeps the reason
        result = {"error": f"{type(error).__name__}: {error}", "device": args.device, "torch": torch.__version__}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if "error" in result:
        print(f"error: {result['error']}", file=sys.stderr)
        return 1
    print(summary(result))
    if not result["same_neighbours"]:
        print("error: the fast path's far neighbours differ from the reference's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
