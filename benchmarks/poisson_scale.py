r"""KFAC's 2-D Poisson at :math:`p = 9873`: the library's Gauss–Newton beside Woodbury-ENGD and KFAC, CPU seconds per iteration.

The problem of Dangel, Müller, Zeinhofer, "Kronecker-factored approximate curvature for physics-informed
neural networks" (NeurIPS 2024; github:f-dangel/kfac-pinns-experiments, experiment
``exp15_poisson2d_deepwide``), rebuilt here from its description (no code of theirs is used):
:math:`-\Delta u = 2\pi^2\sin(\pi x)\sin(\pi y)` on :math:`(0, 1)^2`, :math:`u = \sin(\pi x)\sin(\pi y)` on the
boundary, the PINN loss :math:`\frac1{2N_\Omega}\sum_i(\Delta u(x_i) + f(x_i))^2 + \frac1{2N_{\partial\Omega}}\sum_j(u(y_j) - g(y_j))^2`
on 900 interior and 120 boundary points, a tanh MLP 2-64-64-48-48-1 (:math:`p = 9873`, PyTorch's default
initialisation in float32, then float64), L2 error the root mean square on 9000 further uniform points.
The points and the initial network are the peers' exactly: their training script seeds 1 before building the
network, and its data loaders draw lazily after that, interior points first (``rand(900, 2)``), then the
boundary points (``rand(120, 2)``, a side index ``randint(0, 2)`` and a side value ``randint(0, 2)`` per
point), then the evaluation points. The peers compute :math:`f` and :math:`g` in float32 (relative rounding
6e-8); this benchmark in float64.

Ours is one MMS step with :math:`\tau = 10^{12}` (the step is the minimisation of the loss) solved by
``GaussNewton`` (``ours``: its defaults; ``ours_tikhonov``: ``step_filter="tikhonov"``; ``ours_tikhonov14``: that with
``step_cutoff=1e-14``; ``ours_full``: ``step_filter="tikhonov"`` with ``search_start="full"``, every line search
from length 1, and no end-of-solve residual; ``ours_rows``: ``ours_full`` with row-sampled models of 768 of the
1020 residual rows, :math:`\delta_S = -B_S^\top(K_S + \tfrac{n_S}{n}\mu I)^{-1}s_S`, until a step of length 1 is accepted
or a sampled step is rejected, :class:`~mms_manifolds.solvers.RowSampling`; ``ours_float32``: ``ours_full`` with the
kernel of every row formed in float32 and damped by at least :math:`\varepsilon_{32}\operatorname{tr}A` until then), the metric :math:`L^2` on the boundary values, so the model's
Jacobian is the PINN residual Jacobian (1020 rows) and the model is solved on its kernel side
(:math:`1020 \times 1020`, :func:`~mms_manifolds.linalg.diagonal_weight_factorization`). CPU seconds
(``time.process_time``, one torch thread) exclude the L2 evaluations; with ``--device cuda`` ours runs on the GPU
(the network and points drawn on the CPU as the peers draw them, then moved) and its clock is synchronised wall
seconds (:func:`benchmarks.timing.run_clock`); the peers stay on the CPU. The peers run through
:mod:`benchmarks.peer_clock` under their own interpreter, from checkouts whose paths are given (fetch them yourself; nothing of theirs is in this
repository): Woodbury-ENGD is rla-pinns' ``RNGD`` with ``approximation=exact`` and its 31-point grid line
search, damping :math:`3.17\cdot10^{-12}` (its best 5-D Poisson run); KFAC is kfac-pinns' best run of this
experiment (``KFAC_lr=auto``, damping :math:`2.99\cdot10^{-13}`, EMA 0.626, initialised to the identity).

    python -m benchmarks.poisson_scale                          # ours alone, 50 iterations
    python -m benchmarks.poisson_scale --woodbury /tmp/rla --woodbury-python /tmp/venv-rla/bin/python \
        --kfac /tmp/kfac --kfac-python /tmp/venv-kfac/bin/python --cpu 1
    python -m benchmarks.poisson_scale --seeds 3 4 5 2 --iterations 40 --ours ours_tikhonov ours_tikhonov14 \
        --woodbury /tmp/rla --woodbury-python /tmp/venv-rla/bin/python \
        --output benchmarks/results/poisson-scale-seeds-cpu.json
    python -m benchmarks.poisson_scale --device cuda --seeds 1 2 3 4 5 --ours ours_tikhonov ours_full \
        --output benchmarks/results/poisson-scale-cuda.json      # ours alone, on a GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mms_manifolds import GaussNewton, MinimizingMovement
from mms_manifolds.meshfree import JetMetric, JetParametrization, NodeSet, PoissonLeastSquares
from mms_manifolds.progress import InnerProgress
from mms_manifolds.solvers import RowSampling

from . import RESULTS, ROOT
from .curves import recording
from .timing import conditions, run_clock, use_threads

TAU = 1e12
#: ``ours_rows``' rule: 768 of the 1020 residual rows per sampled model (:math:`K_S` 0.57 of :math:`K`'s cost) until a
#: step of length 1 is accepted (``docs/performance.md``, "Row-sampled Gauss–Newton models on the plateau").
ROW_SAMPLING = RowSampling(768, until_length=1.0)
#: ``ours_float32``' rule: every row, the kernel formed in float32 (damped by at least float32's roundoff times its
#: trace) until a step of length 1 is accepted.
FLOAT32_KERNEL = RowSampling(kernel_dtype=torch.float32, until_length=1.0)
TARGETS = (1e-4, 1e-5, 1e-6)
WIDTHS = (2, 64, 64, 48, 48, 1)
WOODBURY_ARGUMENTS = (
    "--optimizer=RNGD",
    "--RNGD_approximation=exact",
    "--RNGD_damping=3.1732122998048178e-12",
    "--RNGD_equation=poisson",
    "--model=mlp-tanh-64-64-48-48",
)
KFAC_ARGUMENTS = (
    "--optimizer=KFAC",
    "--KFAC_damping=2.989246965479676e-13",
    "--KFAC_ema_factor=0.6258340006622556",
    "--KFAC_initialize_to_identity",
    "--KFAC_lr=auto",
    "--model=mlp-tanh-64-64-48-48",
)


def _solution(points: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * points[:, 0]) * torch.sin(math.pi * points[:, 1])


def _source(points: torch.Tensor) -> torch.Tensor:
    return 2 * math.pi**2 * _solution(points)


def peer_network(widths: tuple[int, ...], model_seed: int = 1) -> torch.nn.Sequential:
    """The peers' tanh MLP of these widths: seeded with ``model_seed``, PyTorch's default initialisation in float32, then float64."""
    torch.manual_seed(model_seed)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out, dtype=torch.float32), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1]).to(torch.float64)


def kfac_problem(
    model_seed: int = 1, interior: int = 900, boundary: int = 120, evaluation: int = 9000, device: str = "cpu"
):
    """The network and points of the peers' run (module docstring): ``(network, interior, boundary, evaluation)``.

    Drawn on the CPU in the peers' order, then moved to ``device``.
    """
    network = peer_network(WIDTHS, model_seed)
    inside = torch.rand(interior, 2, dtype=torch.float32)
    edge = torch.rand(boundary, 2, dtype=torch.float32)
    axis = torch.randint(0, 2, (boundary,))
    side = torch.randint(0, 2, (boundary,))
    edge[torch.arange(boundary), axis] = side.to(torch.float32)
    test = torch.rand(evaluation, 2, dtype=torch.float32)
    options = {"dtype": torch.float64, "device": device}
    return network.to(device), inside.to(**options), edge.to(**options), test.to(**options)


def pinn_problem(
    network: torch.nn.Module, inside: torch.Tensor, edge: torch.Tensor, source=_source, solution=_solution
) -> tuple[JetParametrization, PoissonLeastSquares, JetMetric]:
    r"""The PINN loss of :math:`-\Delta u = ` ``source``, :math:`u = ` ``solution`` on the boundary, as a jet energy (each term averaged), and the metric :math:`L^2` on the boundary values."""
    options = {"dtype": inside.dtype, "device": inside.device}
    nodes = {
        "interior": NodeSet(inside, torch.full((inside.shape[0],), 1 / inside.shape[0], **options), ("laplacian",)),
        "boundary": NodeSet(edge, torch.full((edge.shape[0],), 1 / edge.shape[0], **options)),
    }
    jets = JetParametrization(network, nodes)
    energy = PoissonLeastSquares(jets, source, boundary="boundary", penalty=1.0, boundary_values=solution)
    return jets, energy, JetMetric(jets, value={"boundary": 1.0})


def build_flow(network: torch.nn.Module, inside: torch.Tensor, edge: torch.Tensor) -> MinimizingMovement:
    """The PINN loss as a jet energy, metric :math:`L^2` on the boundary values, :math:`\\tau = 10^{12}`."""
    return MinimizingMovement(*pinn_problem(network, inside, edge), tau=TAU)


class TargetReached(Exception):
    """Raised by :class:`IterationRecorder` to end a run once its L2 target is reached."""


class IterationRecorder(logging.Handler):
    """Per Gauss–Newton iteration, counted over every solve: seconds of ``clock`` since ``start`` (L2 evaluations left out), L2 error, loss.

    Each record is appended to ``log`` (where given) as one JSON line as soon as it is taken; once the L2 error is
    at or below ``target`` (where given) it raises :class:`TargetReached`. ``clock`` is CPU seconds by default
    (:func:`benchmarks.timing.run_clock` of the device otherwise).
    """

    def __init__(
        self,
        flow: MinimizingMovement,
        l2_error,
        start: float,
        log: Path | None = None,
        target: float | None = None,
        clock=time.process_time,
    ):
        super().__init__(logging.INFO)
        self.flow, self.l2_error, self.start, self.log, self.target = flow, l2_error, start, log, target
        self.clock = clock
        self.excluded = 0.0
        self.records: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        progress = getattr(record, "progress", None)
        if not isinstance(progress, InnerProgress):
            return
        now = self.clock()
        self.flow.parametrization.write_to_module(progress.point)
        error = self.l2_error()
        entry = {
            "iteration": len(self.records) + 1,
            "cpu_seconds": now - self.start - self.excluded,
            "l2": error,
            "loss": progress.cost,
        }
        self.records.append(entry)
        if self.log is not None:
            with self.log.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
        line = f"ours {entry['iteration']:4d}: L2 {error:.3e}, loss {progress.cost:.3e}, {entry['cpu_seconds']:.1f} s"
        print(line, flush=True)
        self.excluded += self.clock() - now
        if self.target is not None and error <= self.target:
            raise TargetReached


def solvers(iterations: int) -> dict[str, GaussNewton]:
    """Ours by name: ``GaussNewton()``'s defaults, with Tikhonov-filtered steps (``step_filter="tikhonov"``, cutoff ``1e-12`` or ``1e-14``), that with every search from length 1 (``search_start="full"``, no end-of-solve residual), and that with row-sampled models first (:data:`ROW_SAMPLING`)."""
    full = {"step_filter": "tikhonov", "search_start": "full", "final_residual": False}
    return {
        "ours": GaussNewton(max_iterations=iterations),
        "ours_tikhonov": GaussNewton(max_iterations=iterations, step_filter="tikhonov"),
        "ours_tikhonov14": GaussNewton(max_iterations=iterations, step_filter="tikhonov", step_cutoff=1e-14),
        "ours_full": GaussNewton(max_iterations=iterations, **full),
        "ours_rows": GaussNewton(max_iterations=iterations, **full, row_sampling=ROW_SAMPLING),
        "ours_float32": GaussNewton(max_iterations=iterations, **full, row_sampling=FLOAT32_KERNEL),
    }


def run_ours(iterations: int, solver: GaussNewton, seed: int = 1, device: str = "cpu") -> dict:
    """``iterations`` Gauss–Newton iterations from the peers' initial network of ``seed`` on ``device``; the record of each."""
    network, inside, edge, test = kfac_problem(seed, device=device)
    flow = build_flow(network, inside, edge)
    exact = _solution(test)

    def l2_error() -> float:
        with torch.no_grad():
            return float((network(test).squeeze(-1) - exact).square().mean().sqrt())

    theta = flow.parametrization.initial_point()
    subproblem = flow.subproblem(theta)
    clock = run_clock(device)
    recorder = IterationRecorder(flow, l2_error, clock(), clock=clock)
    with recording(recorder):
        result = solver.solve(subproblem, theta)
    sampled = {"row_sampling": result.extra["row_sampling"]} if "row_sampling" in result.extra else {}
    return {"solver": repr(solver), "stop_reason": result.stop_reason.name, **sampled, "records": recorder.records}


def run_peer(
    package: str,
    checkout: Path,
    python: str,
    arguments: tuple[str, ...],
    iterations: int,
    cpu: int | None,
    seed: int | None = None,
    max_logs: int | None = None,
) -> dict:
    """The peer's own ``train.py`` for ``iterations`` steps through :mod:`benchmarks.peer_clock`; its record.

    ``seed`` is the peer's ``--model_seed`` (``None``: its default). ``max_logs`` (default ``iterations``) is
    the peer's ``--max_logs``: it logs at log-spaced steps, every step once ``max_logs`` is about 20 times
    ``iterations``.
    """
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "record.json"
        command = [python, "-m", "benchmarks.peer_clock", package, str(output)]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        seeded = [] if seed is None else [f"--model_seed={seed}"]
        command += ["--", *arguments, *seeded, f"--num_steps={iterations}", f"--max_logs={max_logs or iterations}"]
        environment = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(checkout), str(ROOT)]),
            CUDA_VISIBLE_DEVICES="",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            WANDB_MODE="disabled",
        )
        print(" ".join(command), flush=True)
        finished = subprocess.run(command, env=environment, cwd=checkout / package, stdout=subprocess.DEVNULL)
        record = json.loads(output.read_text()) if output.exists() else {"records": []}
        if finished.returncode != 0:  # the peer stopped with an error: its iterations up to it are kept
            record["failed"] = f"exit status {finished.returncode}"
        return record


def summarise(records: list[dict]) -> dict:
    """Iterations and CPU seconds to each L2 target, the best error, and CPU seconds per iteration."""
    if not records:
        return {"best_l2": None, "iterations": 0}
    summary: dict = {"best_l2": min(record["l2"] for record in records)}
    for target in TARGETS:
        hit = next((record for record in records if record["l2"] <= target), None)
        summary[f"{target:.0e}"] = None if hit is None else {"iteration": hit["iteration"], "cpu_seconds": hit["cpu_seconds"]}
    last = records[-1]
    summary["iterations"] = last["iteration"]
    summary["cpu_seconds_per_iteration"] = last["cpu_seconds"] / last["iteration"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=50, help="iterations of every method")
    parser.add_argument("--woodbury", type=Path, help="a checkout of github:andresguzco/rla-pinns")
    parser.add_argument("--woodbury-python", default=sys.executable, help="the interpreter rla-pinns is installed for")
    parser.add_argument("--kfac", type=Path, help="a checkout of github:f-dangel/kfac-pinns-experiments")
    parser.add_argument("--kfac-python", default=sys.executable, help="the interpreter kfac-pinns is installed for")
    parser.add_argument("--cpu", type=int, default=None, help="pin every run to this CPU core")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1], help="network seeds (1: the peers' run); each method runs once per seed"
    )
    parser.add_argument("--ours", nargs="+", default=["ours", "ours_tikhonov"], help="which of ours (solvers())")
    parser.add_argument("--device", default="cpu", help="where ours runs (cpu, cuda); the peers stay on the CPU")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/poisson-scale-<device>.json")
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    output = arguments.output or RESULTS / f"poisson-scale-{device.type}.json"
    use_threads(1)
    if arguments.cpu is not None:
        os.sched_setaffinity(0, {arguments.cpu})
    ours = solvers(arguments.iterations)
    peers = (
        ("woodbury", "rla_pinns", arguments.woodbury, arguments.woodbury_python, WOODBURY_ARGUMENTS),
        ("kfac", "kfac_pinns_exp", arguments.kfac, arguments.kfac_python, KFAC_ARGUMENTS),
    )
    runs: dict[str, dict] = {}

    def write() -> None:  # after every run, so that an interrupted sweep keeps what it finished
        write_record(
            runs,
            output,
            problem="KFAC 2-D Poisson, p = 9873, 900 + 120 nodes",
            seeds=arguments.seeds,
            conditions=conditions(device),
            clock=("CPU seconds (time.process_time)" if device.type != "cuda" else "synchronised wall seconds (ours)")
            + ", L2 evaluations excluded for ours",
        )

    for seed in arguments.seeds:  # alternating: each seed's methods one after the other, never overlapping
        suffix = "" if arguments.seeds == [1] else f"_seed{seed}"
        for name in arguments.ours:
            runs[name + suffix] = run_ours(arguments.iterations, ours[name], seed, str(device))
            write()
        for name, package, checkout, python, peer_arguments in peers:
            if checkout is not None:
                runs[name + suffix] = run_peer(  # every step logged (max_logs 20 x the steps)
                    package, checkout, python, peer_arguments, arguments.iterations, arguments.cpu, seed,
                    max_logs=20 * arguments.iterations,
                )
                write()
    for name, run in runs.items():
        print(name, json.dumps(summarise(run["records"])), run.get("failed", ""), flush=True)


def write_record(runs: dict[str, dict], output: Path, **fields: object) -> None:
    """Write the record (``fields``, each run's :func:`summarise` with its failure if it failed, the runs) to ``output`` as JSON."""
    summaries = {
        name: summarise(run["records"]) | ({"failed": run["failed"]} if "failed" in run else {})
        for name, run in runs.items()
    }
    record = {
        "torch_threads": 1,
        "clock": "time.process_time (CPU seconds), L2 evaluations excluded for ours",
        **fields,
        "summaries": summaries,
        "runs": runs,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1))

if __name__ == "__main__":
    main()
