r"""Per-iteration cost against its floor, solve-mode crossovers per device, and the GPU time-to-accuracy checks.

Sections (each writes into one JSON record; ``docs/performance.md`` quotes it with the device named):

- ``floors``: at a *new point* (caches missed), one Riemannian gradient iteration
  (:math:`\nabla_\theta f` + :math:`G^{-1}\nabla_\theta f`), one Gauss–Newton iteration, one geoopt
  RiemannianAdam step and one pymanopt steepest-descent iteration (fixed step), against the floor:
  forward + backward of the cost, the node-wise Jacobian, and forming and Cholesky-factoring the
  smaller Gram side (:math:`JJ^\top` or :math:`J^\top J`), all measured in this process.
- ``crossovers``: the solve-mode crossovers of :mod:`benchmarks.crossovers` (each mode factorising at a
  new point and solving ten right-hand sides on a grid of :math:`(p, N)`; what ``AutoSolve`` picks and its
  time over the fastest mode's).
- ``poisson``: seconds per Gauss–Newton iteration on the 2-D Poisson least-squares problem
  (:func:`benchmarks.flows.poisson`), at the run's thread count and with one and with torch's default.
- ``regression`` (meant for a GPU): the regression flow at :math:`N = 16384`, :math:`p = 4353`, 5 MMS
  steps; L-BFGS with 100 iterations per step against Gauss–Newton at 2-15 iterations per step:
  Gauss–Newton's time to reach L-BFGS's error over L-BFGS's time.
- ``refusal`` (meant for a GPU): a forced Woodbury mode at :math:`N = 10^5`, :math:`p = 3000` must raise
  ``MemoryError`` before it allocates its :math:`N \times N` kernel.

    python -m benchmarks.floors                        # CPU, one torch thread
    python -m benchmarks.floors --threads 0            # CPU, torch's default threads
    python -m benchmarks.floors --device cuda          # everything, on the GPU (a few minutes on an H200)
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from mms_manifolds import LBFGS, GaussNewton

from . import RESULTS
from . import crossovers as crossover_table
from .flows import poisson, pymanopt_fixed_step_descent, regression_flow
from .timing import Stopwatch, one_and_default_threads, time_call, use_threads


def seconds(function, device: torch.device) -> float:
    """Median wall seconds of ``function()`` over five calls after one warm-up (synchronised on CUDA)."""
    return time_call(function, device, repeats=5, warmup=1).wall


def floors(parameters: int, nodes: int, device: torch.device) -> dict:
    """One iteration of each kind at a new point, and the floor, in seconds."""
    import geoopt

    from mms_manifolds.adapters.geoopt import GeooptIncrementManifold
    from mms_manifolds.adapters.pymanopt import PymanoptIncrementManifold, make_problem

    flow = regression_flow(parameters, nodes, device=device)
    theta0 = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta0)
    generator = torch.Generator(device=device).manual_seed(1)
    manifold = subproblem.manifold

    def new_point() -> torch.Tensor:  # a fresh point: every cache (forward, Jacobian, factorisation) misses
        return theta0 + 1e-3 * torch.randn(theta0.shape, generator=generator, device=device, dtype=theta0.dtype)

    def floor() -> None:
        theta = new_point().requires_grad_(True)
        subproblem.cost_tensor(theta).backward()
        jacobian = flow.parametrization.jacobian(theta.detach()).reshape(-1, theta.numel())
        gram = jacobian @ jacobian.T if jacobian.shape[0] < jacobian.shape[1] else jacobian.T @ jacobian
        torch.linalg.cholesky(gram + 1e-3 * gram.diagonal().mean() * torch.eye(gram.shape[0], **_like(gram)))

    def riemannian_iteration() -> None:
        theta = new_point()
        manifold.egrad2rgrad(theta, subproblem.euclidean_gradient(theta))

    def gauss_newton_iterations(count: int) -> float:
        point = new_point()
        with Stopwatch(device) as clock:
            GaussNewton(max_iterations=count).solve(subproblem, point)
        return clock.wall

    def gauss_newton_iteration() -> float:
        """The marginal cost of an iteration inside a solve (its end-of-solve residual SVD left out)."""
        return (gauss_newton_iterations(6) - gauss_newton_iterations(1)) / 5

    parameter = geoopt.ManifoldParameter(theta0.clone(), manifold=GeooptIncrementManifold(manifold))
    adam = geoopt.optim.RiemannianAdam([parameter], lr=1e-3)

    def geoopt_adam_step() -> None:
        """Consecutive steps: each moves to a new point, and its momentum transport factors the metric there once."""
        adam.zero_grad()
        subproblem.cost_tensor(parameter).backward()
        adam.step()

    problem = make_problem(subproblem, PymanoptIncrementManifold(manifold, retraction="chart"))  # the core's iterates
    step = flow.tau / (1 + flow.tau)

    descent = pymanopt_fixed_step_descent(step, iterations=1)

    def pymanopt_iteration() -> None:
        descent.run(problem, initial_point=new_point().cpu().numpy())

    timings = {
        "floor": seconds(floor, device),
        "riemannian_gradient": seconds(riemannian_iteration, device),
        "gauss_newton": sorted(gauss_newton_iteration() for _ in range(3))[1],
        "geoopt_riemannian_adam": seconds(geoopt_adam_step, device),
    }
    if device.type == "cpu":  # pymanopt works on numpy arrays: host copies, so it is timed on the CPU only
        timings["pymanopt_steepest_descent"] = seconds(pymanopt_iteration, device)
    return {
        "p": flow.parametrization.num_parameters,
        "N": nodes,
        "solve_mode": manifold.solve_mode_name(),
        "seconds": timings,
        "over_floor": {name: value / timings["floor"] for name, value in timings.items() if name != "floor"},
        "adapters_over_core": {
            name: timings[name] / timings["riemannian_gradient"]
            for name in ("geoopt_riemannian_adam", "pymanopt_steepest_descent")
            if name in timings
        },
    }


def _like(tensor: torch.Tensor) -> dict:
    return {"dtype": tensor.dtype, "device": tensor.device}


def poisson_iteration(device: torch.device) -> dict:
    """Seconds per Gauss–Newton iteration on the 2-D Poisson least-squares problem (a 20-iteration solve, after a warm-up one).

    At the run's thread count (``seconds_per_iteration``), and again with one torch thread and with torch's
    default count (``seconds_per_iteration_by_threads``, keyed by the count).
    """
    flow, _, _ = poisson(0, device)
    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    solver = GaussNewton(max_iterations=20)
    iterations = solver.solve(subproblem, theta).iterations

    def solve() -> None:
        solver.solve(subproblem, theta)

    by_threads = one_and_default_threads(solve, device)
    return {
        "iterations": iterations,
        "seconds_per_iteration": time_call(solve, device).wall / iterations,
        "seconds_per_iteration_by_threads": {str(t.threads): t.wall / iterations for t in by_threads.values()},
    }


def regression_time_to_accuracy(device: torch.device, parameters: int = 4353, nodes: int = 16384) -> dict:
    """L-BFGS (100 iterations per step) against Gauss–Newton (2-15 per step) on 5 regression MMS steps."""
    runs = {}
    for name, solver in [
        ("lbfgs-100", LBFGS(max_iterations=100)),
        *[(f"gauss-newton-{n}", GaussNewton(max_iterations=n)) for n in (2, 5, 10, 15)],
    ]:
        flow = regression_flow(parameters, nodes, device=device)
        theta = flow.parametrization.initial_point()
        with Stopwatch(device) as clock:
            result = flow.run(theta, 5, solver)
        runs[name] = {
            "seconds": clock.wall,
            "max_error": float(result.trajectory_error.max()),
            "solve_mode": flow.manifold.solve_mode_name(),
        }
        print(name, json.dumps(runs[name]), flush=True)
    target = runs["lbfgs-100"]["max_error"]
    reaching = [run for key, run in runs.items() if key.startswith("gauss") and run["max_error"] <= target]
    fastest = min((run["seconds"] for run in reaching), default=None)
    return {
        "p": parameters,
        "N": nodes,
        "runs": runs,
        "lbfgs_error": target,
        "gauss_newton_time_to_lbfgs_error": fastest,
        "ratio_to_lbfgs_time": None if fastest is None else fastest / runs["lbfgs-100"]["seconds"],
    }


def memory_refusal(device: torch.device, parameters: int = 3000, nodes: int = 100_000) -> dict:
    """A forced Woodbury solve at N = 1e5 (an N x N kernel): it must refuse with MemoryError before allocating."""
    flow = regression_flow(parameters, nodes, solve_mode="woodbury", device=device)
    theta = flow.parametrization.initial_point()
    try:
        flow.manifold.egrad2rgrad(theta, torch.ones_like(theta))
    except MemoryError as error:
        return {"refused": True, "message": str(error)}
    return {"refused": False, "message": "the factorisation fitted"}


def markdown(records: list[dict]) -> str:
    """The floor and crossover tables of ``docs/performance.md`` from one or more result records."""
    lines = [
        "| device, threads | p | N | floor ms | Riemannian gradient | Gauss–Newton | geoopt RAdam | pymanopt SD |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in records:
        for row in record.get("floors", []) if isinstance(record.get("floors"), list) else []:
            ratios = row["over_floor"]
            cells = [
                f"{ratios[name]:.2f}x" if name in ratios else "—"
                for name in (
                    "riemannian_gradient",
                    "gauss_newton",
                    "geoopt_riemannian_adam",
                    "pymanopt_steepest_descent",
                )
            ]
            lines.append(
                f"| {record['device']}, {record['threads']} | {row['p']} | {row['N']} | "
                f"{row['seconds']['floor'] * 1e3:.2f} | " + " | ".join(cells) + " |"
            )
    tables = ["\n".join(lines)]
    tables += [crossover_table.markdown(record) for record in records if isinstance(record.get("crossovers"), list)]
    return "\n\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU; 0 keeps torch's default")
    parser.add_argument("--sections", default=None, help="comma-separated; default: all for cuda, all but regression")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a 2 x 1 crossover grid")
    parser.add_argument("--markdown", nargs="+", type=Path, help="print the tables of these result files and exit")
    arguments = parser.parse_args()
    if arguments.markdown:
        print(markdown([json.loads(path.read_text()) for path in arguments.markdown]))
        return
    device = torch.device(arguments.device)
    use_threads(arguments.threads)
    default = "floors,crossovers,poisson,regression,refusal" if device.type == "cuda" else "floors,crossovers,poisson"
    sections = (arguments.sections or default).split(",")
    record: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    measurements = {
        "floors": lambda: [floors(200, 64, device), floors(1021, 1000, device)],
        "crossovers": lambda: crossover_table.crossovers(*crossover_table.grid(device, arguments.quick), device),
        "poisson": lambda: poisson_iteration(device),
        "regression": lambda: regression_time_to_accuracy(device),
        "refusal": lambda: memory_refusal(device),
    }
    for section in sections:
        with Stopwatch(device) as clock:
            try:
                record[section] = measurements[section]()
            except Exception as error:  # one broken section must not lose the others' numbers
                record[section] = {"error": f"{type(error).__name__}: {error}"}
        print(section, f"{clock.wall:.1f} s", json.dumps(record[section])[:2000], flush=True)
    suffix = device.type if device.type == "cuda" else f"cpu-{record['threads']}-threads"
    output = arguments.output or RESULTS / f"floors-{suffix}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1))
    print(f"written {output}")


if __name__ == "__main__":
    main()
