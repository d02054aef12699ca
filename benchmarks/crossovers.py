r"""The solve-mode crossovers, measured in one place: which mode is fastest at which :math:`(p, N)` on a device.

At each :math:`(p, N)` of a grid, on the regression flow (:func:`benchmarks.flows.regression_flow`): each
solve mode factorises the Gram operator :math:`J^\top MJ` at a new point (no cache) and solves ten
right-hand sides with damping :math:`\lambda = 10^{-4}\operatorname{tr}(J^\top MJ)/p` — dense (Cholesky of
the smaller side), dense SVD, Woodbury, kernel (where :math:`N < p`) and CG —, the median of three runs after a warm-up
(:func:`benchmarks.timing.time_call`); then what ``AutoSolve`` picks, its reason, and its time over the
fastest mode's. ``docs/performance.md`` ("Solve-mode crossovers per device") quotes the tables and
:mod:`mms_manifolds.linalg.auto` its limits.

It runs as the ``crossovers`` section of :mod:`benchmarks.floors`, whose record of the run holds it (a run of
this section alone wants an ``--output`` of its own, or it replaces the device's full floors record)::

    python -m benchmarks.floors --sections crossovers --output /tmp/crossovers-cpu.json   # CPU, one thread
    python -m benchmarks.floors --sections crossovers --device cuda --output benchmarks/results/floors-cuda-crossovers.json

or alone on a grid of its own (the kernel side, where ``AutoSolve`` weighs the kernel modes against CG)::

    python -m benchmarks.crossovers --parameters 8600 20000 --nodes 1000 2000 [--device cuda] [--threads 1]

which writes ``benchmarks/results/crossovers-<device>.json``. The layer-kernel mode
(:class:`~mms_manifolds.linalg.LayerKernelSolve`) is timed where :math:`N < p`; ``AutoSolve`` is given the
parametrisation's layer-kernel flops, as :class:`~mms_manifolds.IncrementManifold` gives them.
"""

from __future__ import annotations

import argparse
import json

import torch

from mms_manifolds.linalg import (
    AutoSolve,
    ConjugateGradientSolve,
    DenseSolve,
    GramOperator,
    KernelSolve,
    LayerKernelSolve,
    WoodburySolve,
)

from . import RESULTS
from .flows import regression_flow
from .timing import conditions, time_call, use_threads

__all__ = ["MODES", "crossovers", "grid", "markdown"]

MODES = {
    "dense": DenseSolve(),
    "dense-svd": DenseSolve(method="svd"),
    "woodbury": WoodburySolve(),
    "kernel": KernelSolve(),
    "layer-kernel": LayerKernelSolve(),
    "cg": ConjugateGradientSolve(),
}


def grid(device: torch.device, quick: bool = False) -> tuple[list[int], list[int]]:
    """The ``(parameter sizes, node sizes)`` measured on ``device``: ``quick`` is 2 x 1 cells."""
    if quick:
        return [200, 1021], [1000]
    if device.type == "cpu":  # N = 16384 with p = 3000 takes minutes per mode on two cores
        return [200, 1021, 3000], [1000, 4000]
    return [200, 1021, 3000], [1000, 4000, 16384]


def factor_and_solve(mode, parametrization, metric, theta, rhs, damping) -> None:
    """Factorise the Gram operator at a fresh copy of ``theta`` (no cache) and solve each row of ``rhs``."""
    factorization = mode.factorize(GramOperator(parametrization, metric, theta.clone()))
    for column in rhs:
        factorization.solve(column, damping)


def crossovers(parameter_sizes: list[int], node_sizes: list[int], device: torch.device) -> list[dict]:
    """Factorise at a new point and solve ten right-hand sides, per mode; AutoSolve's pick and its ratio to the fastest."""
    rows = []
    for parameters in parameter_sizes:
        for nodes in node_sizes:
            flow = regression_flow(parameters, nodes, device=device)
            parametrization, metric = flow.parametrization, flow.metric
            theta = parametrization.initial_point()
            rhs = torch.randn(10, theta.numel(), generator=torch.Generator().manual_seed(0), dtype=theta.dtype)
            rhs = rhs.to(device)
            damping = 1e-4 * GramOperator(parametrization, metric, theta).trace() / theta.numel()
            row = {"p": parametrization.num_parameters, "N": nodes, "seconds": {}}
            for name, mode in MODES.items():
                if name == "dense-svd" and min(theta.numel(), nodes) * max(theta.numel(), nodes) > 2e7:
                    row["seconds"][name] = None  # thin SVD of this size takes tens of seconds; not a contender
                    continue
                if name in ("kernel", "layer-kernel") and nodes >= theta.numel():
                    row["seconds"][name] = None  # the kernel mode factors the N x N side only where N < p
                    continue
                work = (mode, parametrization, metric, theta, rhs, damping)
                timing = time_call(lambda work=work: factor_and_solve(*work), device, repeats=3, warmup=1)
                row["seconds"][name] = timing.wall
            flops = parametrization.jacobian_kernel_flops()
            picked, reason = AutoSolve().select(theta.numel(), nodes, 8, device=device, kernel_flops=flops)
            measured = {name: value for name, value in row["seconds"].items() if value is not None}
            fastest = min(measured, key=measured.get)
            row.update(
                auto=picked.name,
                reason=reason,
                fastest=fastest,
                auto_over_fastest=measured[picked.name] / measured[fastest],
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def markdown(record: dict) -> str:
    """The crossover table of one floors record (``record["crossovers"]``), headed by its device and threads."""
    table = [
        f"{record['device']}, {record['threads']} thread(s):",
        "",
        "| p | N | " + " | ".join(MODES) + " | auto | fastest | auto / fastest |",
        "| --- | --- | " + "--- | " * len(MODES) + "--- | --- | --- |",
    ]
    for row in record["crossovers"]:
        times = [row["seconds"].get(name) for name in MODES]  # records before the kernel mode have no kernel column
        cells = " | ".join("—" if value is None else f"{value:.3g}" for value in times)
        table.append(
            f"| {row['p']} | {row['N']} | {cells} | {row['auto']} | {row['fastest']} | {row['auto_over_fastest']:.2f} |"
        )
    return "\n".join(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=int, nargs="+", required=True, help="parameter sizes (1-w-w-1 MLPs)")
    parser.add_argument("--nodes", type=int, nargs="+", required=True, help="node counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    arguments = parser.parse_args()
    threads = use_threads(arguments.threads)
    device = torch.device(arguments.device)
    record = {**conditions(device), "threads": threads, "crossovers": crossovers(arguments.parameters, arguments.nodes, device)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"crossovers-{device.type}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(markdown(record))


if __name__ == "__main__":
    main()
