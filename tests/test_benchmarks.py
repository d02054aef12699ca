"""The benchmarks package: its scripts run as ``python -m benchmarks.NAME``, and its one clock keeps its books."""

from __future__ import annotations

import ast
import importlib
import itertools
from pathlib import Path

import pytest
import torch

from benchmarks import timing

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(path.stem for path in (ROOT / "benchmarks").glob("*.py") if path.stem != "__init__")


def _defines_main(name: str) -> bool:
    tree = ast.parse((ROOT / "benchmarks" / f"{name}.py").read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


SCRIPTS = [name for name in MODULES if _defines_main(name)]


def test_every_module_is_listed_in_the_package_docstring_and_imports():
    import benchmarks

    for name in MODULES:
        assert f":mod:`benchmarks.{name}`" in benchmarks.__doc__, name
        importlib.import_module(f"benchmarks.{name}")
    assert {"run", "floors", "peers", "retractions", "teng"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_says_how_it_runs_and_touches_no_import_path(name):
    text = (ROOT / "benchmarks" / f"{name}.py").read_text()
    module = importlib.import_module(f"benchmarks.{name}")
    assert f"python -m benchmarks.{name}" in module.__doc__
    assert "sys.path" not in text
    assert "perf_counter" not in text and "set_num_threads" not in text  # times and threads come from timing.py


def test_no_page_runs_a_benchmark_as_a_file():
    """``python benchmarks/NAME.py`` fails (relative imports); only the generated record of past runs may name it."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text().split("<!-- BEGIN GENERATED -->")[0]
        assert "python benchmarks/" not in text, path.name


def test_time_call_takes_the_median_after_the_warmup(monkeypatch):
    clock = itertools.count()
    walls = iter([0.0, 5.0, 10.0, 11.0, 20.0, 29.0])  # three timed calls of 5, 1 and 9 seconds

    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(walls))
    monkeypatch.setattr(timing.time, "process_time", lambda: float(next(clock)))
    calls = []
    result = timing.time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert result.wall == 5.0 and result.cpu == 1.0
    assert result.threads == torch.get_num_threads()
    with pytest.raises(ValueError, match="repeats"):
        timing.time_call(lambda: None, repeats=0)


def test_thread_counts_are_restored_and_named():
    before = torch.get_num_threads()
    with timing.torch_threads(1) as count:
        assert count == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with timing.torch_threads(0) as count:
        assert count == timing.default_thread_count()
    assert torch.get_num_threads() == before
    timings = timing.one_and_default_threads(lambda: None)
    assert timings["one"].threads == 1 and timings["default"].threads == timing.default_thread_count()
    assert torch.get_num_threads() == before
    assert timing.use_threads(0) == before
    with pytest.raises(ValueError, match="thread count"):
        timing.use_threads(-1)


def test_a_stopwatch_reads_wall_and_cpu_seconds_of_its_block(monkeypatch):
    walls, cpus = iter([1.0, 4.0]), iter([10.0, 12.5])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(walls))
    monkeypatch.setattr(timing.time, "process_time", lambda: next(cpus))
    with timing.Stopwatch() as clock:
        pass
    assert (clock.wall, clock.cpu) == (3.0, 2.5)
    assert clock.timing().as_dict() == {"wall": 3.0, "cpu": 2.5, "threads": torch.get_num_threads()}


def test_the_peers_benchmark_reads_the_errors_of_one_long_solve_as_one_iteration_solves_give_them():
    """The error after each iteration, read from the progress logger, equals that of a loop of one-iteration solves."""
    from benchmarks import peers
    from benchmarks.flows import poisson
    from mms_manifolds import GaussNewton
    from mms_manifolds.progress import LOGGER

    level = LOGGER.level
    row = peers.run_seed("poisson", 0, 3, "armijo", tau=1e6)
    assert LOGGER.level == level and not any(isinstance(h, peers.ErrorRecorder) for h in LOGGER.handlers)
    assert row["tau"] == 1e6 and row["iterations_run"] == 3 and set(row["iterations_to"]) == {"1e-06", "1e-07", "1e-08"}
    flow, _, l2_error = poisson(0, tau=1e6)
    theta = flow.parametrization.initial_point()
    subproblem, one_iteration, state, errors = flow.subproblem(theta), GaussNewton(max_iterations=1), None, []
    for _ in range(3):
        result = one_iteration.solve(subproblem, theta, state=state)
        theta, state = result.point, result.state
        flow.parametrization.write_to_module(theta)
        with torch.no_grad():
            errors.append(l2_error())
    assert row["errors"] == errors


def test_the_peers_starts_share_the_iterations_and_keep_the_point_of_least_final_cost():
    """``run_starts``: start j is seed + 1000 j with the iterations left over its share; the chosen start has the least final cost."""
    from benchmarks import peers

    row = peers.run_starts("poisson", 0, 2, 5, line_search="armijo", tau=1e6)
    assert row["start_iterations"] == [2, 3] and row["iterations_run"] == 5
    alone = [peers.run_seed("poisson", seed, count, "armijo", tau=1e6) for seed, count in ((0, 2), (1000, 3))]
    assert row["start_final_costs"] == [run["costs"][-1] for run in alone]
    assert row["start_final_errors"] == [run["final_error"] for run in alone]
    chosen = min(range(2), key=lambda start: alone[start]["costs"][-1])
    assert row["chosen_start"] == chosen and row["final_error"] == alone[chosen]["final_error"]
    assert row["iterations_to"] == {target: None for target in ("1e-06", "1e-07", "1e-08")}  # 5 iterations reach none


def test_the_peers_summary_counts_seeds_within_each_budget():
    from benchmarks import peers

    def row(to_6, to_8, best):
        return {"iterations_to": {"1e-06": to_6, "1e-08": to_8}, "best_error": best, "seconds_per_iteration": 0.1}

    rows = [row(40, 100, 5e-9), row(70, None, 2e-7), row(None, None, 3e-5), row(55, 149, 9e-9)]
    summary = peers.summarise(rows, (60, 150))
    assert summary["1e-06"] == {"within_60": 2, "within_150": 3, "median_iterations": 55, "range": [40, 70]}
    assert summary["1e-08"] == {"within_60": 0, "within_150": 2, "median_iterations": 124.5, "range": [100, 149]}
    assert summary["best_errors"] == {"min": 5e-9, "median": (9e-9 + 2e-7) / 2, "max": 3e-5}
    assert summary["stalled_above_1e-5"] == 1


def test_the_5d_poisson_point_sets_are_the_peers_order_and_each_iteration_keeps_its_own():
    """One generator, drawn in the peer's order: batch 1, the evaluation points, batch 2, ... (rla-pinns' loop)."""
    from benchmarks.poisson_5d import PeerBatches

    state = torch.Generator().manual_seed(7).get_state()
    batches = PeerBatches(state, dimension=3, interior=4, boundary=6, evaluation=5)
    third, first = batches(3), batches(1)
    assert torch.equal(batches(3)[0], third[0]) and torch.equal(batches(1)[1], first[1])
    generator = torch.Generator()
    generator.set_state(state)
    assert torch.equal(first[0], torch.rand(4, 3, generator=generator).double())
    torch.rand(6, 3, generator=generator), torch.randint(0, 3, (6,), generator=generator)
    torch.randint(0, 2, (6,), generator=generator)
    assert torch.equal(batches.evaluation, torch.rand(5, 3, generator=generator).double())
    assert torch.equal(batches(2)[0], torch.rand(4, 3, generator=generator).double())
    on_a_face = ((first[1] == 0) | (first[1] == 1)).any(dim=1)
    assert bool(on_a_face.all()) and first[1].dtype == torch.float64


def test_the_run_clock_is_cpu_seconds_on_a_cpu_and_synchronised_wall_seconds_on_cuda(monkeypatch):
    """On a CPU the process's CPU seconds; on CUDA the device is synchronised before the wall clock is read (no GPU needed)."""
    import time

    assert timing.run_clock("cpu") is time.process_time
    events: list[str] = []
    monkeypatch.setattr(timing, "synchronize", lambda device: events.append(f"sync {torch.device(device)}"))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: events.append("wall") or 12.5)
    clock = timing.run_clock("cuda:0")
    assert clock() == 12.5 and events == ["sync cuda:0", "wall"]


def test_the_2d_poisson_problem_follows_its_device_and_keeps_the_peers_draws():
    """``kfac_problem(device=...)``: the same draws as on the CPU (moved after drawing), float64, on the device asked."""
    from benchmarks.poisson_scale import kfac_problem

    reference = kfac_problem(2, interior=9, boundary=4, evaluation=5)
    moved = kfac_problem(2, interior=9, boundary=4, evaluation=5, device="cpu")
    for first, second in zip(reference[1:], moved[1:]):
        assert second.dtype == torch.float64 and second.device.type == "cpu" and torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(reference[0].parameters(), moved[0].parameters()))


def _small_5d_problem():
    """The peer's network on a few of its points: 6 interior and 4 boundary points per iteration, 8 for the L2 error."""
    from benchmarks.poisson_5d import peer_problem

    return peer_problem(interior=6, boundary=4, evaluation=8)


def _pinn_loss(network: torch.nn.Module, inside: torch.Tensor, edge: torch.Tensor) -> float:
    r""":math:`\tfrac12\operatorname{mean}(\Delta u_\theta + f)^2 + \tfrac12\operatorname{mean}(u_\theta - g)^2` by autograd, independently of the jets."""
    from benchmarks.poisson_5d import cos_sum, cos_sum_source

    points = inside.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(network(points).sum(), points, create_graph=True)
    laplacian = sum(torch.autograd.grad(gradient[:, i].sum(), points, retain_graph=True)[0][:, i] for i in range(5))
    interior = (laplacian + cos_sum_source(inside)).square().mean()
    boundary = (network(edge).squeeze(-1) - cos_sum(edge)).square().mean()
    return float((interior + boundary).detach()) / 2


def test_the_5d_poisson_phases_continue_on_their_own_iterations_batches():
    """A second phase from iteration 3 keeps phase one's first two iterations and solves iteration k on batch k."""
    from benchmarks.poisson_5d import run_ours, tikhonov_solver

    first, late = tikhonov_solver(1e-8), tikhonov_solver(1e-6)
    network, batches = _small_5d_problem()
    run = run_ours(4, [(1, first), (3, late)], problem=(network, batches))
    phased = run["records"]
    assert [record["iteration"] for record in phased] == [1, 2, 3, 4]
    assert run["solvers"] == [[1, repr(first)], [3, repr(late)]] and repr(first) != repr(late)
    # the network holds the last iterate: its PINN loss on batch 4 is the last record's cost (tau = 1e12)
    assert _pinn_loss(network, *batches(4)) == pytest.approx(phased[-1]["loss"], rel=1e-9)
    assert _pinn_loss(network, *batches(2)) != pytest.approx(phased[-1]["loss"], rel=1e-3)
    alone = run_ours(2, [(1, first)], problem=_small_5d_problem())["records"]
    assert [record["l2"] for record in alone] == [record["l2"] for record in phased[:2]]


@pytest.mark.parametrize("phases", [[], [2], [1, 1], [1, 5, 3]])
def test_the_5d_poisson_phases_start_at_one_and_increase(phases):
    from benchmarks.poisson_5d import run_ours, tikhonov_solver

    with pytest.raises(ValueError, match="phases"):
        run_ours(4, [(first, tikhonov_solver(1e-8)) for first in phases], problem=_small_5d_problem())


def test_the_5d_poisson_continues_from_a_saved_point_as_the_uninterrupted_run(tmp_path):
    """``--save`` at a phase's end and ``--start`` from it: the records after it bit for bit, SPRING's phase included."""
    from benchmarks.poisson_5d import load_point, run_ours, tikhonov_solver

    phases = [(1, tikhonov_solver(1e-8)), (3, tikhonov_solver(1e-6, momentum=0.9))]
    whole = run_ours(5, phases, problem=_small_5d_problem(), save=tmp_path, save_every=2)["records"]
    saved = load_point(tmp_path / "point-2.pt")
    assert saved["iteration"] == 2 and saved["records"] == whole[:2]
    continued = run_ours(5, phases, problem=_small_5d_problem(), start=saved)["records"]
    assert [record["iteration"] for record in continued] == [1, 2, 3, 4, 5]
    assert [(r["l2"], r["loss"]) for r in continued] == [(r["l2"], r["loss"]) for r in whole]
    assert continued[2]["cpu_seconds"] > saved["records"][-1]["cpu_seconds"]
    plain = run_ours(5, [phases[0], (3, tikhonov_solver(1e-6))], problem=_small_5d_problem())["records"]
    assert plain[2]["l2"] == whole[2]["l2"] and plain[4]["l2"] != whole[4]["l2"]  # the momentum acts from the second step
    torch.save({"theta": saved["theta"], "iteration": 3, "records": saved["records"]}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="2 records for iteration 3"):
        load_point(tmp_path / "bad.pt")


def test_the_5d_poisson_grid_phase_searches_the_grid():
    """``tikhonov_solver(line_search=...)``: Armijo's halvings by default, the 31-length grid where asked."""
    from benchmarks.poisson_5d import tikhonov_solver

    assert tikhonov_solver(1e-8).line_search == "armijo"
    grid = tikhonov_solver(2e-11, 1.0, False, 0.063, line_search="logarithmic-grid")
    assert grid.line_search == "logarithmic-grid" and grid.momentum == 0.063 and grid.step_damping == 2e-11


def test_the_5d_poisson_peer_rules_are_the_peers_damping_momentum_and_grid():
    """``peer_rule()``: the Tikhonov step at Woodbury-ENGD's absolute damping, its grid 2^0 .. 2^-30, one iteration; SPRING's with its momentum."""
    from benchmarks.poisson_5d import SPRING_DAMPING, SPRING_MOMENTUM, WOODBURY_DAMPING, peer_rule

    rule = peer_rule()
    assert rule.max_iterations == 1 and rule.step_filter == "tikhonov" and rule.line_search == "logarithmic-grid"
    assert rule.step_damping == WOODBURY_DAMPING == 3.1732122998048178e-12 and rule.absolute_damping
    assert rule.grid_largest == 1.0 and not rule.geodesic_acceleration and not rule.final_residual
    assert rule.momentum == 0.0
    spring = peer_rule(SPRING_DAMPING, SPRING_MOMENTUM)
    assert spring.step_damping == 2.086286730036186e-10 and spring.momentum == 0.0632666532797279
    assert spring.absolute_damping and spring.grid_largest == 1.0


def test_the_5d_poisson_spring_peer_arguments_override_woodburys_damping():
    """The peer's argparse keeps the last ``--RNGD_damping``: SPRING's comes after Woodbury-ENGD's, with its momentum."""
    from benchmarks.poisson_5d import SPRING_ARGUMENTS, WOODBURY_ARGUMENTS

    assert SPRING_ARGUMENTS[: len(WOODBURY_ARGUMENTS)] == WOODBURY_ARGUMENTS
    dampings = [argument for argument in SPRING_ARGUMENTS if argument.startswith("--RNGD_damping=")]
    assert dampings[-1] == "--RNGD_damping=2.086286730036186e-10"
    assert "--RNGD_momentum=0.0632666532797279" in SPRING_ARGUMENTS


def test_the_5d_poisson_model_seed_gives_the_peers_network_of_that_seed_and_other_points():
    """``--model-seed``: :func:`peer_problem` of seed 2 is the peer's network of seed 2, and the points drawn after it differ from seed 1's."""
    from benchmarks.poisson_5d import WIDTHS, peer_problem
    from benchmarks.poisson_scale import peer_network

    counts = {"interior": 6, "boundary": 4, "evaluation": 8}
    (first, first_batches), (second, second_batches) = (peer_problem(seed, **counts) for seed in (1, 2))
    assert all(torch.equal(a, b) for a, b in zip(second.parameters(), peer_network(WIDTHS, 2).parameters()))
    assert not torch.equal(next(first.parameters()), next(second.parameters()))
    assert not torch.equal(first_batches(1)[0], second_batches(1)[0])
