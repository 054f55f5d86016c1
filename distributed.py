"""Running an experiment's units: in one process, or shared out over torchrun's ranks (each rank
runs every world-th unit; rank 0 then reads all finished units back and makes the summary)."""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Iterator

import torch

import schema
from errors import UserError, first_line
from experiment import Experiment, RunConfig

# Under torchrun, how long a rank waits at a barrier (NCCL's own default, 10 minutes, would abort
# the ranks waiting while rank 0 trains the original model).
DIST_TIMEOUT_MINUTES = 360.0


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) when started by torchrun (its RANK and WORLD_SIZE), else (0, 1).

    RANK / WORLD_SIZE left in the environment without torchrun would wait for ranks that never
    come: they are refused (torchrun marks its workers with TORCHELASTIC_RUN_ID)."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} and RANK={os.environ.get('RANK')!r} must be "
                        f"whole numbers (torchrun sets them); unset them for a single process") from None
    if world > 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        raise UserError(f"WORLD_SIZE={world} is set, but this process was not started by torchrun; "
                        f"unset RANK and WORLD_SIZE, or launch with torchrun --nproc_per_node N")
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is not in 0..{world - 1} (WORLD_SIZE={world}); unset RANK and WORLD_SIZE, "
                        f"or launch with torchrun")
    return rank, world


def run(config: RunConfig, units: list[list[int]]) -> tuple[Experiment, dict[str, Any] | None]:
    """The experiment and its summary (`schema.make_summary`) over every unit and method; under
    torchrun the summary is rank 0's and the other ranks get None."""
    experiment, rows = run_units(config, units)
    return experiment, None if rows is None else schema.make_summary(config.to_dict(), rows)


def run_units(config: RunConfig, units: list[list[int]]) -> tuple[Experiment, list[dict[str, Any]] | None]:
    """Every unit's rows, in one process or shared out under torchrun: rank r runs units
    r, r + world, ...; then rank 0 reads all finished units back from --out (the same reuse
    as a rerun) and returns the rows, the other ranks return None."""
    with process_group(config) as (rank, world):
        experiment = Experiment(config)
        if world == 1:
            return experiment, experiment.run(units, config.methods)
        import torch.distributed as dist
        if rank == 0:
            _ = experiment.original  # trained and cached once, here; the other ranks read it from the cache
        dist.barrier()
        experiment.run(units[rank::world], config.methods)
        dist.barrier()
        return experiment, experiment.run(units, config.methods) if rank == 0 else None


@contextlib.contextmanager
def process_group(config: RunConfig) -> Iterator[tuple[int, int]]:
    """(rank, world size) for the block; under torchrun, the ranks' process group around it, joined
    once however many runs the block holds (`seeds.run_seeds` holds one per seed: a group destroyed
    and joined again on torchrun's store hung or refused to connect). On CUDA each rank takes its
    LOCAL_RANK's GPU (`config.device`)."""
    rank, world = distributed_rank()
    if world == 1:
        yield rank, world
        return
    import torch.distributed as dist

    cuda = torch.device(config.device).type == "cuda"
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        config.device = str(device)
        torch.cuda.set_device(device)  # before the process group, so NCCL binds each rank to its GPU
    if dist.is_initialized():  # an enclosing block's group
        yield rank, world
        return
    timeout = datetime.timedelta(minutes=config.dist_timeout_minutes)
    try:
        if cuda:
            dist.init_process_group("nccl", timeout=timeout, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    except (ValueError, RuntimeError) as error:  # e.g. a MASTER_PORT that is not a port, a peer that never came
        raise UserError(f"torchrun's rendezvous failed ({first_line(error)}); check MASTER_ADDR and MASTER_PORT, "
                        f"or run without torchrun") from None
    try:
        yield rank, world
    finally:
        dist.destroy_process_group()
