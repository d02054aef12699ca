r"""Woodbury-ENGD's 5-D Poisson at :math:`p = 10065`, 3000 + 500 nodes drawn afresh every iteration: the library's Gauss–Newton beside Woodbury-ENGD, CPU seconds per iteration.

The problem of Guzmán-Cordero, Dangel, Goldshlager, Zeinhofer, "Improving energy natural gradient descent
through Woodbury, momentum, and randomization" (2025; github:andresguzco/rla-pinns, experiment
``exp1_poisson5d``), rebuilt here from its description (no code of theirs is used):
:math:`-\Delta u = \pi^2\sum_i\cos(\pi x_i)` on :math:`(0, 1)^5`, :math:`u = \sum_i\cos(\pi x_i)` on the boundary,
the PINN loss :math:`\frac1{2N_\Omega}\sum_j(\Delta u(x_j) + f(x_j))^2 + \frac1{2N_{\partial\Omega}}\sum_j(u(y_j) - g(y_j))^2`
on 3000 interior and 500 boundary points drawn anew at every iteration (``--batch_frequency=1``), a tanh MLP
5-64-64-48-48-1 (:math:`p = 10065`, PyTorch's default initialisation in float32, then float64), L2 error the
root mean square of :math:`u_\theta - u` on 30,000 further uniform points (absolute, as the peer logs it;
:math:`\|u\|_{L^2} \approx 1.58`, so the relative error is 0.63 of it).

The network and every point set are the peer's exactly. Its training script seeds 0, builds its data loaders
(they draw lazily), seeds 1 and builds the network; the points are then drawn from the generator where the
network left it, in the order the training loop asks: the first iteration's interior points (``rand(3000, 5)``)
and boundary points (``rand(500, 5)``, a face index ``randint(0, 5)`` and a side ``randint(0, 2)`` per point),
the evaluation points (at the first logged step, after the first iteration's), then each further iteration's
interior and boundary points (:class:`PeerBatches`). The peer computes :math:`f` and :math:`g` in float32; this
benchmark in float64 from the same points.

Ours is ``MinimizingMovement.run`` with ``resample=`` (each MMS step on that step's fresh points), one
Gauss–Newton iteration per step, :math:`\tau = 10^{12}` (each step minimises the loss on its batch, as an ENGD
iteration does) and ``certify=False``; the model is solved on its kernel side (:math:`3500 \times 3500`) with the
Tikhonov step :math:`-(A + \mu I)^{-1}g` by one Cholesky factorisation (``GaussNewton(step_filter="tikhonov", step_damping=...)``,
:math:`\mu` relative to :math:`\operatorname{tr}(A)/p`), Armijo's
line search, no geodesic acceleration (``--acceleration`` adds it: 1.2 CPU seconds an iteration here), no
end-of-solve residual (``final_residual=False``). The solver follows a schedule of phases (``--phase``, each one ``MinimizingMovement.run`` from where the last
ended; :data:`PHASES` by default): ``step_damping`` ``1e-8`` (Woodbury-ENGD's absolute :math:`3.17\cdot10^{-12}` over
:math:`\operatorname{tr}(A)/p = 3.45\cdot10^{-4}` at the initial point) for iterations 1-30, ``1e-5`` from 31, and
from 41 the line search's first length capped at one half (``GaussNewton(max_step_length=0.5)``). Each change was
chosen on this problem by one-step sweeps over damping and step length at saved points (``docs/performance.md``):
:math:`\operatorname{tr}(A)/p` grows to about 10.7 by iteration 30, where the full step at ``1e-8`` overshoots
(L2 :math:`4\cdot10^{-3}` from :math:`1.3\cdot10^{-3}`) and the one at ``1e-5`` lands at :math:`6.7\cdot10^{-5}`; near
:math:`6\cdot10^{-5}` every full step refits its own batch and no damping lowers the loss on the next, where half
steps do, a little. ``--phase FIRST DAMPING LENGTH MOMENTUM`` adds SPRING's momentum to a phase
(``GaussNewton(momentum=...)``: the Tikhonov step pulled towards ``MOMENTUM`` times the last direction, carried from
MMS step to MMS step within the phase; ``--spring``: :data:`SPRING_PHASES`, the measured schedule that went
lowest). ``--save DIR`` writes the point, its iteration and every record so far to ``DIR/point-K.pt`` at every
``--save-every`` iterations, and ``--start FILE`` continues from such a file on the batches of the iterations after it
(the records continue its own, its CPU seconds included); the phase that holds its next iteration begins there with a
fresh solver state, as a phase does, so a continuation repeats the uninterrupted run bit for bit where the saved point
ends a phase (the schedules' 30 and 40).
``--grid-from FIRST`` makes the phases from iteration ``FIRST`` on search the best batch loss over the 31 lengths
:math:`2^{1-k}` (``GaussNewton(line_search="logarithmic-grid")``, the grid of Woodbury-ENGD and SPRING, which try
:math:`2^{-30} .. 1`) instead of Armijo's halvings.
``--device`` puts the network and the points (drawn on the CPU, the peer's generator) on a torch
device; the records' seconds are the process's CPU seconds on a CPU (``time.process_time``, one torch thread) and
synchronised wall seconds on CUDA (:func:`benchmarks.timing.run_clock`), the L2 evaluations excluded. Every iteration's record is appended to ``--log`` as one JSON line when it is
taken, and an interrupted run (Ctrl-C) still writes ``--output`` with every iteration it finished; ``--target`` ends
the run at that L2 error.

The peer runs through :mod:`benchmarks.peer_clock` under its own interpreter from a checkout whose path is given
(fetch it yourself; nothing of it is in this repository): rla-pinns' ``RNGD`` with ``approximation=exact``
(Woodbury-ENGD), damping :math:`3.17\cdot10^{-12}` (its best run of this experiment), its 31-point grid line search.

    python -m benchmarks.poisson_5d --iterations 300 --target 1e-5 --log ours.jsonl      # ours alone
    python -m benchmarks.poisson_5d --iterations 300 --target 1e-5 --device cuda          # ours on a GPU
    python -m benchmarks.poisson_5d --iterations 300 --phase 1 1e-8 1                     # the fixed damping of before
    python -m benchmarks.poisson_5d --iterations 300 --spring --save points               # SPRING_PHASES, points every 10
    python -m benchmarks.poisson_5d --iterations 300 --spring --start points/point-30.pt  # the same from iteration 31
    python -m benchmarks.poisson_5d --iterations 300 --woodbury /tmp/rla --woodbury-python /tmp/venv-rla/bin/python --cpu 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

from mms_manifolds import GaussNewton, MinimizingMovement

from . import RESULTS, poisson_scale
from .curves import recording
from .poisson_scale import (
    TAU,
    IterationRecorder,
    TargetReached,
    peer_network,
    pinn_problem,
    run_peer,
    write_record,
)
from .timing import run_clock, use_threads

WIDTHS = (5, 64, 64, 48, 48, 1)
INTERIOR, BOUNDARY, EVALUATION = 3000, 500, 30000
#: The damping schedule measured (``docs/performance.md``): ``(first iteration, step_damping, max_step_length)``.
#: ``1e-8`` is Woodbury-ENGD's damping 3.17e-12 over tr(A)/p = 3.45e-4 at the initial point; tr(A)/p is about
#: 10.7 from iteration 30 on, where ``1e-5`` takes full steps that land; from iteration 41 half steps.
PHASES = ((1, 1e-8, 1.0), (31, 1e-5, 1.0), (41, 1e-5, 0.5))
#: The schedule with SPRING's momentum that went lowest (``docs/performance.md``): ``PHASES``' ``1e-8`` to iteration
#: 30, then ``step_damping`` ``1e-5`` with ``GaussNewton(momentum=0.99)``, full lengths to 40 and half steps from 41
#: (the direction carries within each phase and restarts at 41):
#: ``(first iteration, step_damping, max_step_length, momentum)``.
SPRING_PHASES = ((1, 1e-8, 1.0, 0.0), (31, 1e-5, 1.0, 0.99), (41, 1e-5, 0.5, 0.99))
#: Woodbury-ENGD's damping in this experiment's best run (absolute, in the units of :math:`A`).
WOODBURY_DAMPING = 3.1732122998048178e-12
#: rla-pinns' best Woodbury-ENGD run of this experiment (the 2-D benchmark borrowed its settings from it).
#: SPRING's damping and momentum in this experiment's best run (rla-pinns ``RNGD`` with ``--RNGD_momentum``).
SPRING_DAMPING, SPRING_MOMENTUM = 2.086286730036186e-10, 0.0632666532797279
WOODBURY_ARGUMENTS = (
    *poisson_scale.WOODBURY_ARGUMENTS,
    "--equation=poisson",
    "--boundary_condition=cos_sum",
    "--dim_Omega=5",
    f"--N_Omega={INTERIOR}",
    f"--N_dOmega={BOUNDARY}",
    "--batch_frequency=1",
)
#: SPRING's published run of this experiment: Woodbury-ENGD's arguments with its damping and momentum (the later
#: ``--RNGD_damping`` is the one the peer's parser keeps).
SPRING_ARGUMENTS = (
    *WOODBURY_ARGUMENTS,
    f"--RNGD_damping={SPRING_DAMPING!r}",
    f"--RNGD_momentum={SPRING_MOMENTUM!r}",
)


def cos_sum(points: torch.Tensor) -> torch.Tensor:
    r""":math:`u(x) = \sum_i\cos(\pi x_i)`, shape ``(N,)`` for points ``(N, d)``."""
    return torch.cos(math.pi * points).sum(-1)


def cos_sum_source(points: torch.Tensor) -> torch.Tensor:
    r""":math:`f = -\Delta u = \pi^2\sum_i\cos(\pi x_i)`."""
    return math.pi**2 * cos_sum(points)


class PeerBatches:
    r"""The peer's point sets in the order its training loop draws them (module docstring), from one generator.

    The points are drawn on the CPU (the peer's generator) and then moved to ``device``.

    Args:
        state: the state of torch's global generator after the network was built (``torch.get_rng_state()``).
        dimension, interior, boundary, evaluation: :math:`d` and the three counts.
        device: where the float64 point sets are kept (default the CPU).

    Attributes:
        evaluation: the L2 error's points, ``(evaluation, d)`` float64 on ``device`` (drawn after the first batch).
    """

    def __init__(
        self,
        state: torch.Tensor,
        dimension: int = 5,
        interior: int = INTERIOR,
        boundary: int = BOUNDARY,
        evaluation: int = EVALUATION,
        device: torch.device | str = "cpu",
    ):
        self.dimension, self.interior, self.boundary = dimension, interior, boundary
        self.device = torch.device(device)
        self._generator = torch.Generator()
        self._generator.set_state(state)
        self._batches = [self._draw()]
        self.evaluation = self._placed(torch.rand(evaluation, dimension, generator=self._generator))

    def _placed(self, points: torch.Tensor) -> torch.Tensor:
        return points.to(dtype=torch.float64, device=self.device)

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        inside = torch.rand(self.interior, self.dimension, generator=self._generator)
        edge = torch.rand(self.boundary, self.dimension, generator=self._generator)
        face = torch.randint(0, self.dimension, (self.boundary,), generator=self._generator)
        side = torch.randint(0, 2, (self.boundary,), generator=self._generator)
        edge[torch.arange(self.boundary), face] = side.to(edge.dtype)
        return self._placed(inside), self._placed(edge)

    def __call__(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(interior, boundary)`` points of iteration ``iteration`` (1-based), float64 on ``device``; the same on every call."""
        while len(self._batches) < iteration:
            self._batches.append(self._draw())
        return self._batches[iteration - 1]


def peer_problem(
    model_seed: int = 1, device: torch.device | str = "cpu", **counts: int
) -> tuple[torch.nn.Sequential, PeerBatches]:
    """The peer's initial network and its point sets (module docstring), both on ``device`` (drawn on the CPU); ``counts``: :class:`PeerBatches`' ``interior``, ``boundary``, ``evaluation``."""
    network = peer_network(WIDTHS, model_seed)
    batches = PeerBatches(torch.get_rng_state(), device=device, **counts)
    return network.to(device), batches


class SavingRecorder(IterationRecorder):
    """:class:`IterationRecorder` that also writes ``{"theta", "iteration", "records"}`` to ``directory/point-K.pt`` at every ``every``-th iteration ``K`` (where ``directory`` is given)."""

    def __init__(self, *arguments, directory: Path | None = None, every: int = 10, **keywords):
        super().__init__(*arguments, **keywords)
        self.directory, self.every = directory, every

    def emit(self, record) -> None:
        taken = len(self.records)
        try:
            super().emit(record)
        finally:
            iteration = len(self.records)
            if self.directory is not None and iteration > taken and iteration % self.every == 0:
                saved = {"theta": record.progress.point.detach().cpu().clone(), "iteration": iteration}
                torch.save({**saved, "records": list(self.records)}, self.directory / f"point-{iteration}.pt")


def load_point(path: Path) -> dict:
    """A point :class:`SavingRecorder` wrote: ``{"theta": (p,) tensor, "iteration": K, "records": [K records]}``."""
    saved = torch.load(path, weights_only=True)
    if not isinstance(saved, dict) or sorted(saved) != ["iteration", "records", "theta"]:
        raise ValueError(f"{path} is not a point the benchmark saved (keys theta, iteration, records)")
    if len(saved["records"]) != saved["iteration"]:
        raise ValueError(f"{path} holds {len(saved['records'])} records for iteration {saved['iteration']}")
    return saved


def run_ours(
    iterations: int,
    phases: list[tuple[int, GaussNewton]],
    log: Path | None = None,
    target: float | None = None,
    problem: tuple[torch.nn.Module, PeerBatches] | None = None,
    device: torch.device | str = "cpu",
    start: dict | None = None,
    save: Path | None = None,
    save_every: int = 10,
    model_seed: int = 1,
) -> dict:
    """Up to ``iterations`` resampled Gauss–Newton iterations from the peer's initial network; the record of each.

    ``problem``: the network (trained in place) and its point sets; default :func:`peer_problem` of ``model_seed``
    (the peer's ``--model_seed``, default 1, its published runs') on ``device``.
    ``phases`` lists ``(first iteration, solver)`` in order, the first from iteration 1: each phase is one
    ``MinimizingMovement.run`` on the batches of its iterations from where the last one ended (the solver's
    warm start begins afresh, as in a new run). ``start``: a saved point (:func:`load_point`) at iteration
    :math:`K`: the run continues from it with iteration :math:`K + 1` (its records first, the seconds continued),
    the phase that holds :math:`K + 1` beginning there. ``save``: a directory for :class:`SavingRecorder`.
    """
    if not phases or phases[0][0] != 1 or any(later[0] <= earlier[0] for earlier, later in zip(phases, phases[1:])):
        raise ValueError(f"phases must start at iteration 1 and increase, got {[first for first, _ in phases]}")
    done = 0 if start is None else int(start["iteration"])
    network, batches = peer_problem(model_seed, device=device) if problem is None else problem
    exact = cos_sum(batches.evaluation)

    def l2_error() -> float:
        with torch.no_grad():
            return float((network(batches.evaluation).squeeze(-1) - exact).square().mean().sqrt())

    def step_problem(step: int):
        return pinn_problem(network, *batches(step), source=cos_sum_source, solution=cos_sum)

    flow = MinimizingMovement(*step_problem(1), tau=TAU)
    clock = run_clock(torch.device(device) if problem is None else next(network.parameters()).device)
    earlier = [] if start is None else [dict(record) for record in start["records"]]
    began = clock() - (earlier[-1]["cpu_seconds"] if earlier else 0.0)
    recorder = SavingRecorder(flow, l2_error, began, log, target, clock=clock, directory=save, every=save_every)
    recorder.records = earlier
    stop = "iterations"
    theta = flow.parametrization.initial_point()
    if start is not None:
        theta = start["theta"].to(dtype=theta.dtype, device=theta.device)
    ends = [first - 1 for first, _ in phases[1:]] + [iterations]
    try:
        with recording(recorder):
            for (first, solver), last in zip(phases, ends):
                first = max(first, done + 1)
                if last < first:
                    continue
                offset = first - 1
                result = flow.run(
                    theta, last - offset, solver, certify=False, resample=lambda step, offset=offset: step_problem(offset + step)
                )
                theta = result.thetas[-1]
    except TargetReached:
        stop = "target"
    except KeyboardInterrupt:  # the records so far are kept and written
        stop = "interrupted"
    return {
        "solvers": [[first, repr(solver)] for first, solver in phases],
        "stopped_at": stop,
        "records": recorder.records,
    }


def tikhonov_solver(
    step_damping: float,
    max_step_length: float = 1.0,
    acceleration: bool = False,
    momentum: float = 0.0,
    line_search: str = "armijo",
    **options: object,
) -> GaussNewton:
    """One Gauss–Newton iteration per batch, the Tikhonov step of fixed relative damping ``step_damping``, Armijo's line search from at most ``max_step_length`` (or ``line_search="logarithmic-grid"``, the best of the 31 lengths ``2^(1-k)``), SPRING's ``momentum``, no end-of-solve residual; ``options``: further ``GaussNewton`` settings (:func:`peer_rule`'s)."""
    return GaussNewton(
        max_iterations=1,
        line_search=line_search,
        step_filter="tikhonov",
        step_damping=step_damping,
        geodesic_acceleration=acceleration,
        final_residual=False,
        max_step_length=max_step_length,
        momentum=momentum,
        **options,
    )


def peer_rule(damping: float = WOODBURY_DAMPING, momentum: float = 0.0) -> GaussNewton:
    r"""The peers' step in the library (``--woodbury-rule``, ``--spring-rule``): one Gauss–Newton iteration per batch, the Tikhonov step :math:`-(A + \mu I)^{-1}g` at the absolute damping ``damping`` (``absolute_damping=True``), with SPRING's ``momentum`` where nonzero, the best batch loss over the 31 lengths :math:`2^0 \dots 2^{-30}` (``line_search="logarithmic-grid"``, ``grid_largest=1``), no geodesic acceleration, no end-of-solve residual.

    The defaults are Woodbury-ENGD's best run of this experiment; :data:`SPRING_DAMPING` and :data:`SPRING_MOMENTUM`
    SPRING's (whose bias correction :math:`1/\sqrt{1 - \beta^{2(k+1)}}`, 1.002 at the first iteration at this
    :math:`\beta`, :math:`1 + 3\cdot10^{-8}` at the third, is not applied).
    """
    return tikhonov_solver(
        damping, momentum=momentum, line_search="logarithmic-grid", absolute_damping=True, grid_largest=1.0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300, help="iterations of every method")
    parser.add_argument("--target", type=float, default=None, help="end our run at this L2 error")
    parser.add_argument(
        "--phase",
        nargs="+",
        type=float,
        action="append",
        metavar="FIRST DAMPING LENGTH [MOMENTUM]",
        help="from iteration FIRST on, GaussNewton(step_damping=DAMPING, max_step_length=LENGTH, momentum=MOMENTUM "
        "(default 0)); repeat it (default: PHASES)",
    )
    parser.add_argument(
        "--grid-from",
        type=int,
        default=None,
        help="from this phase's first iteration on, the line search is the best of the 31 lengths 2^(1-k) "
        "(line_search='logarithmic-grid', as Woodbury-ENGD's and SPRING's grid) instead of Armijo's",
    )
    parser.add_argument("--spring", action="store_true", help="the schedule SPRING_PHASES (SPRING's momentum from 31)")
    parser.add_argument(
        "--woodbury-rule",
        action="store_true",
        help="one phase of peer_rule(): Woodbury-ENGD's absolute damping and grid, in the library",
    )
    parser.add_argument(
        "--spring-rule",
        action="store_true",
        help="one phase of peer_rule(SPRING_DAMPING, SPRING_MOMENTUM): SPRING's damping, momentum and grid, in the library",
    )
    parser.add_argument(
        "--model-seed", type=int, default=1, help="the peer's --model_seed of our network and points (default 1)"
    )
    parser.add_argument("--start", type=Path, default=None, help="continue from a point --save wrote")
    parser.add_argument("--save", type=Path, default=None, help="write the point every --save-every iterations here")
    parser.add_argument("--save-every", type=int, default=10, help="iterations between saved points")
    parser.add_argument("--device", default="cpu", help="torch device of the network and the points (drawn on the CPU)")
    parser.add_argument("--acceleration", action="store_true", help="GaussNewton(geodesic_acceleration=True)")
    parser.add_argument("--skip-ours", action="store_true", help="run the peer only")
    parser.add_argument("--woodbury", type=Path, help="a checkout of github:andresguzco/rla-pinns")
    parser.add_argument("--woodbury-python", default=sys.executable, help="the interpreter rla-pinns is installed for")
    parser.add_argument(
        "--peer-spring",
        action="store_true",
        help="with --woodbury: run rla-pinns with SPRING's published damping and momentum (SPRING_ARGUMENTS) as well",
    )
    parser.add_argument("--cpu", type=int, default=None, help="pin every run to this CPU core")
    parser.add_argument("--log", type=Path, default=None, help="append our per-iteration records here (JSON lines)")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/poisson-5d-<device>.json")
    arguments = parser.parse_args()
    output = arguments.output or RESULTS / f"poisson-5d-{torch.device(arguments.device).type}.json"
    use_threads(1)
    if arguments.cpu is not None:
        os.sched_setaffinity(0, {arguments.cpu})
    if arguments.save_every < 1:
        parser.error(f"--save-every must be at least 1, got {arguments.save_every}")
    if sum([arguments.phase is not None, arguments.spring, arguments.woodbury_rule, arguments.spring_rule]) > 1:
        parser.error("--spring, --woodbury-rule and --spring-rule are schedules of their own: give one of them or --phase")
    if (arguments.woodbury_rule or arguments.spring_rule) and arguments.grid_from is not None:
        parser.error("--woodbury-rule and --spring-rule search the peers' grid from the first iteration: no --grid-from")
    if arguments.peer_spring and arguments.woodbury is None:
        parser.error("--peer-spring runs rla-pinns: give its checkout with --woodbury")
    schedule = [tuple(phase) for phase in (SPRING_PHASES if arguments.spring else arguments.phase or PHASES)]
    if any(len(phase) not in (3, 4) for phase in schedule):
        parser.error("--phase takes FIRST DAMPING LENGTH [MOMENTUM]")
    if arguments.grid_from is not None and arguments.grid_from not in [int(phase[0]) for phase in schedule]:
        parser.error(f"--grid-from {arguments.grid_from} is no phase's first iteration")
    grid_from = math.inf if arguments.grid_from is None else arguments.grid_from
    phases = [
        (
            int(first),
            tikhonov_solver(
                damping,
                length,
                arguments.acceleration,
                *(momentum or [0.0]),
                line_search="logarithmic-grid" if first >= grid_from else "armijo",
            ),
        )
        for first, damping, length, *momentum in schedule
    ]
    if arguments.woodbury_rule:
        phases = [(1, peer_rule())]
    if arguments.spring_rule:
        phases = [(1, peer_rule(SPRING_DAMPING, SPRING_MOMENTUM))]
    if arguments.save is not None:
        arguments.save.mkdir(parents=True, exist_ok=True)
    runs = {}
    if not arguments.skip_ours:
        runs["ours"] = run_ours(
            arguments.iterations,
            phases,
            arguments.log,
            arguments.target,
            device=arguments.device,
            start=None if arguments.start is None else load_point(arguments.start),
            save=arguments.save,
            save_every=arguments.save_every,
            model_seed=arguments.model_seed,
        )
    if arguments.woodbury is not None:
        runs["woodbury"] = run_peer(
            "rla_pinns",
            arguments.woodbury,
            arguments.woodbury_python,
            WOODBURY_ARGUMENTS,
            arguments.iterations,
            arguments.cpu,
            max_logs=20 * arguments.iterations,
        )
        if arguments.peer_spring:
            runs["spring"] = run_peer(
                "rla_pinns",
                arguments.woodbury,
                arguments.woodbury_python,
                SPRING_ARGUMENTS,
                arguments.iterations,
                arguments.cpu,
                max_logs=20 * arguments.iterations,
            )
    write_record(
        runs,
        output,
        problem="rla-pinns 5-D Poisson, p = 10065, 3000 + 500 nodes drawn every iteration",
        device=str(torch.device(arguments.device)),
        l2="absolute root mean square on 30000 points (the peer's); relative = 0.63 of it",
    )
    for name, run in runs.items():
        print(name, json.dumps(poisson_scale.summarise(run["records"])), flush=True)

if __name__ == "__main__":
    main()
