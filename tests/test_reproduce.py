"""Small versions of the reproduction experiments: GN must beat Adam on iterations to accuracy, no bound may fail."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mms_manifolds import Adam, GaussNewton, L2Metric, QuarticEnergy
from mms_manifolds.grids import stiffness_1d, trapezoid_weights, uniform_nodes
from mms_manifolds.reproduce import EXPERIMENTS, build, compare
from mms_manifolds.reproduce.experiments import NoiseSchedule, ddpm_sample, digits_latents, energy_distance


def _max_error(experiment, solver) -> float:
    result = experiment.flow.run(experiment.theta0, experiment.steps, solver, reference=experiment.reference)
    return float(np.max(result.trajectory_error[1:]))


def test_gauss_newton_beats_adam_on_iterations_to_accuracy_for_the_regression_flow():
    experiment = build("regression", "quick")
    gauss_newton = _max_error(experiment, GaussNewton(max_iterations=3))
    adam = min(_max_error(experiment, Adam(lr=rate, max_iterations=30, check_every=30)) for rate in (3e-3, 1e-2, 3e-2))
    assert gauss_newton < adam / 3, (gauss_newton, adam)  # with 10x fewer iterations per step


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_no_tracking_bound_is_violated(name):
    rows, floors = compare([name], ["gauss-newton", "adam"], quick=True, budgets=(1, 3), floor_budget=5, progress=False)
    assert floors[name] > 0 and math.isfinite(floors[name])
    for row in rows:
        assert row.status == "ok", row
        assert row.bound_holds, row
        if name != "latent_diffusion":  # every experiment but the sampled one has a certified bound here
            assert row.max_bound_ratio >= 1.0 - 1e-9, row


def test_allen_cahn_energy_decays_monotonically_with_gauss_newton():
    experiment = build("allen_cahn", "quick")
    result = experiment.flow.run(experiment.theta0, experiment.steps, GaussNewton(max_iterations=5))
    assert bool(np.all(np.diff(result.energy) <= 1e-10))


def test_known_minimizer_energy_prox_is_optimal_and_its_grid_minimiser_is_cos():
    count = 80
    x = uniform_nodes(count, -1.0, 1.0, "neumann").unsqueeze(-1)
    weights = trapezoid_weights(count, -1.0, 1.0)
    source = math.pi**2 * torch.cos(math.pi * x) + torch.cos(math.pi * x) ** 3
    energy = QuarticEnergy(stiffness_1d(count, -1.0, 1.0, "neumann"), weights, source)
    metric = L2Metric(weights)
    assert energy.convexity(metric) == pytest.approx(0.0, abs=1e-8)
    u = torch.zeros(count, 1, dtype=torch.float64)
    step = energy.prox(u, 0.5, metric)
    optimality = energy.gradient(step) + metric.apply(step - u) / 0.5
    assert float(optimality.abs().max()) < 1e-10
    minimiser = u
    for _ in range(60):  # the flow converges linearly to the grid minimiser
        minimiser = energy.prox(minimiser, 10.0, metric)
    assert float(energy.gradient(minimiser).abs().max()) < 1e-8
    assert float(metric.norm(minimiser - torch.cos(math.pi * x))) < 5e-3  # O(h^2) grid error


def test_latent_diffusion_pieces():
    latents = digits_latents(4)
    assert latents.shape == (1797, 4)
    torch.testing.assert_close(latents.std(0), torch.ones(4, dtype=torch.float64), rtol=1e-6, atol=0)
    assert energy_distance(latents[:300], latents[300:600]) < 0.15  # sampling noise of 300 points
    noise = torch.randn(300, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert energy_distance(latents[:300], 3 * noise) > 0.5
    samples = ddpm_sample(lambda z: torch.zeros_like(z[:, :4]), NoiseSchedule(), 50, 4, seed=0)
    assert samples.shape == (50, 4) and bool(torch.isfinite(samples).all())


def test_an_interrupted_comparison_resumes_from_its_journal(tmp_path, monkeypatch):
    from mms_manifolds.reproduce import runner

    journal = tmp_path / "runs.csv"
    arguments = {"quick": True, "budgets": (1, 2), "floor_budget": 2, "progress": False, "journal": journal}
    rows, floors = compare(["regression"], ["gauss-newton", "adam"], **arguments)
    # GN at 1, at 2 (the floor run, journaled once and reused), Adam at 1 and 2
    assert [(row.solver, row.budget) for row in runner.read_csv(journal)] == [
        ("gauss-newton", 2),
        ("gauss-newton", 1),
        ("adam", 1),
        ("adam", 2),
    ]

    def must_not_run(*_):
        raise AssertionError("a journaled run was run again")

    monkeypatch.setattr(runner, "_run", must_not_run)
    again, floors_again = compare(["regression"], ["gauss-newton", "adam"], **arguments)
    assert again == rows and floors_again == floors
    # a run cut off before it was journaled is the only one repeated
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-1]) + "\n")
    monkeypatch.undo()
    resumed, _ = compare(["regression"], ["gauss-newton", "adam"], **arguments)
    assert [(row.solver, row.budget, row.max_error) for row in resumed] == [
        (row.solver, row.budget, row.max_error) for row in rows
    ]


def test_a_torn_journal_row_is_dropped_with_a_warning_and_appends_are_all_or_nothing(tmp_path):
    from mms_manifolds.reproduce import runner

    journal = tmp_path / "runs.csv"
    row = runner.Row("regression", "adam", 3, 0.01, 0.5, 0.4, 1.25, 9, True, 1.5, True, "ok")
    runner.append_csv(row, journal)
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole.splitlines(keepends=True)[1][:25])  # an append cut mid-row
    with pytest.warns(UserWarning, match="dropped a torn last line"):
        assert runner.read_csv(journal) == [row]
    journal.write_bytes(whole.replace(b",True,", b",Maybe,", 1))
    with pytest.raises(ValueError, match="line 2: not a valid row"):
        runner.read_csv(journal)
    # Under a file-size limit the append fails as a whole: the file keeps its previous length.
    journal.write_bytes(whole)
    script = (
        "import resource, sys, pathlib\n"
        "from mms_manifolds.reproduce import runner\n"
        f"path = pathlib.Path({str(journal)!r})\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 10, resource.RLIM_INFINITY))\n"
        f"row = runner.Row('regression', 'sgd', 3, 0.01, 0.5, 0.4, 1.25, 9, True, 1.5, True, 'ok')\n"
        "try:\n    runner.append_csv(row, path)\nexcept OSError as error:\n    print('refused', error.errno)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.startswith("refused"), completed.stderr
    assert journal.read_bytes() == whole and runner.read_csv(journal) == [row]
