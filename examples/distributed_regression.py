r"""The regression flow with its nodes sharded across processes (torch.distributed), checked against one process.

Launched by torchrun, each process takes its block of the nodes and runs the same flow:

    torchrun --nproc_per_node=2 examples/distributed_regression.py

Run plainly, it runs the flow on one process, then starts 2 gloo processes on this machine, and
prints the largest difference of the parameters after every MMS step (equal up to the order of
floating-point sums, about 1e-15):

    python examples/distributed_regression.py

On GPUs: one process per GPU, ``torch.cuda.set_device(local_rank)``, the network and nodes on that
device, and ``init_process_group("nccl")``; across machines add ``--nnodes``, ``--node_rank`` and
``--rdzv_endpoint`` to torchrun. Nothing else changes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mms_manifolds import GaussNewton, L2Metric, L2Regression, MinimizingMovement, TorchParametrization
from mms_manifolds.distributed import ShardedMetric, ShardedParametrization, shard_slice
from mms_manifolds.linalg import ConjugateGradientSolve

NODES, STEPS = 256, 4
INITIAL_DAMPING = 1e-1  # relative LM damping: keeps each CG solve well conditioned (see docs/performance.md)


def problem(rank: int | None = None, world_size: int | None = None):
    """The flow's parametrisation, energy and metric on all nodes, or on one process's shard."""
    torch.manual_seed(0)
    double = {"dtype": torch.float64}  # explicit, so the draw does not depend on the default dtype
    network = torch.nn.Sequential(torch.nn.Linear(1, 12, **double), torch.nn.Tanh(), torch.nn.Linear(12, 1, **double))
    x = torch.linspace(-1, 1, NODES, dtype=torch.float64).unsqueeze(-1)
    weights = torch.full((NODES,), 2 / NODES, dtype=torch.float64)
    if rank is None:
        parametrization, metric = TorchParametrization(network, x), L2Metric(weights)
    else:
        block = shard_slice(NODES, rank, world_size)
        x, weights = x[block], weights[block]
        parametrization = ShardedParametrization(TorchParametrization(network, x))
        metric = ShardedMetric(L2Metric(weights))
    target = x.abs() + 0.3 * torch.sin(5 * x)
    return parametrization, L2Regression(target, metric), metric


def run(rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """The flow's parameters after every step, shape ``(STEPS + 1, p)``."""
    parametrization, energy, metric = problem(rank, world_size)
    solve_mode = ConjugateGradientSolve(tolerance=1e-14, max_iterations=1000)  # converged to rounding
    flow = MinimizingMovement(parametrization, energy, metric, tau=0.2, solve_mode=solve_mode)
    result = flow.run(
        parametrization.initial_point(),
        steps=STEPS,
        solver=GaussNewton(max_iterations=3, initial_damping=INITIAL_DAMPING),
    )
    return torch.stack(result.thetas)


def _worker(rank: int, world_size: int, port: int, output: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        thetas = run(rank, world_size)
        if rank == 0:
            torch.save(thetas, output)
        dist.barrier()  # no process tears gloo down while another still has work in flight
    finally:
        dist.destroy_process_group()


def run_spawned(world_size: int = 2, port: int = 29531) -> torch.Tensor:
    """Start ``world_size`` gloo processes on this machine and return process 0's parameters per step."""
    with tempfile.TemporaryDirectory() as folder:
        output = str(Path(folder) / "thetas.pt")
        mp.spawn(_worker, args=(world_size, port, output), nprocs=world_size, join=True)
        return torch.load(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="processes to spawn when not under torchrun")
    arguments = parser.parse_args()
    if "RANK" in os.environ:  # under torchrun
        dist.init_process_group("gloo")
        thetas = run(dist.get_rank(), dist.get_world_size())
        if dist.get_rank() == 0:
            print(f"{dist.get_world_size()} processes: final parameters norm {float(thetas[-1].norm()):.15e}")
        dist.barrier()
        dist.destroy_process_group()
        return
    single = run()
    sharded = run_spawned(arguments.processes)
    for step, (one, many) in enumerate(zip(single, sharded)):
        print(f"step {step}: max |theta_1 - theta_{arguments.processes}| = {float((one - many).abs().max()):.2e}")


if __name__ == "__main__":
    main()
