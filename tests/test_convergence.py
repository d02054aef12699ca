"""Steps that stop at their iteration budget far from converged are reported: a warning, a log record, a note."""

import logging
import math
import warnings

import pytest

from mms_manifolds import GaussNewton, InnerResult, StopReason, TrajectoryBudget
from mms_manifolds.convergence import UnconvergedStepWarning, far_from_converged

from problems import linear_regression_flow, regression_flow


class StopsAtBudget(GaussNewton):
    """Gauss-Newton that, at solve number ``at`` (the step the test chooses), stops at its budget: at once, or with
    ``crawled`` after three iterations whose last two lower the cost by 1e-9 of the first's decrease."""

    def __init__(self, at, crawled=False, **options):
        super().__init__(**options)
        self._at, self._crawled, self._solves = at, crawled, 0

    def solve(self, subproblem, theta0, tolerance=None, state=None):
        self._solves += 1
        if self._solves == self._at:
            cost = subproblem.cost(theta0)
            costs = [cost + 1.0, cost + 1e-9, cost + 5e-10, cost] if self._crawled else [cost]
            stopped = InnerResult(theta0, len(costs) - 1, costs, [], [], 0.0, StopReason.MAX_ITERATIONS)
            stopped.state = state if state is not None else self.initial_state()
            return stopped
        return super().solve(subproblem, theta0, tolerance, state)


def test_a_jump_at_the_iteration_budget_warns_logs_and_is_noted(caplog):
    flow = linear_regression_flow()
    with pytest.warns(UnconvergedStepWarning, match=r"MMS step 5: the inner solve stopped at its iteration budget"):
        with caplog.at_level(logging.WARNING, logger="mms_manifolds"):
            result = flow.run(flow.parametrization.initial_point(), 6, StopsAtBudget(5, max_iterations=3))
    assert [entry["step"] for entry in result.metadata["unconverged_steps"]] == [5]
    assert "times the median" in result.metadata["unconverged_steps"][0]["reason"]
    assert result.metadata["unconverged_steps"][0]["reason"].endswith("raise the solver's max_iterations or shorten tau")
    assert any("unconverged_steps" in note for note in result.metadata["notes"])
    assert any("MMS step 5" in record.getMessage() for record in caplog.records)
    assert result.stop_reasons[5] == "max_iterations"
    assert result.residual_tangential[5] > 10 * sorted(result.residual_tangential[1:5])[1]


def test_a_crawl_at_the_iteration_budget_is_told_from_a_solve_cut_short():
    flow = linear_regression_flow()
    with pytest.warns(UnconvergedStepWarning, match=r"MMS step 5: .* over its last 2 of 3 iterations: it crawls"):
        result = flow.run(flow.parametrization.initial_point(), 6, StopsAtBudget(5, crawled=True, max_iterations=3))
    (entry,) = result.metadata["unconverged_steps"]
    assert entry["step"] == 5 and "max_iterations" not in entry["reason"]


def test_an_ordinary_run_that_uses_its_budget_every_step_is_not_flagged():
    flow = regression_flow(count=48)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnconvergedStepWarning)
        result = flow.run(flow.parametrization.initial_point(), 6, GaussNewton(max_iterations=2))
    assert set(result.stop_reasons[1:]) == {"max_iterations"} and "unconverged_steps" not in result.metadata


def test_far_above_the_budgets_tolerance_is_flagged():
    flow = regression_flow(count=48)
    with pytest.warns(UnconvergedStepWarning, match="times the budget's step tolerance"):
        result = flow.run(
            flow.parametrization.initial_point(), 2, GaussNewton(max_iterations=1), budget=TrajectoryBudget(1e-9)
        )
    assert [entry["step"] for entry in result.metadata["unconverged_steps"]] == [1, 2]


def test_the_rule():
    assert far_from_converged("max_iterations", [1e-6, 2e-6, 3e-5], math.nan) is not None
    assert far_from_converged("max_iterations", [1e-6, 2e-6, 1.5e-5], math.nan) is None  # 10x is the line
    assert far_from_converged("converged", [1e-6, 2e-6, 3e-5], math.nan) is None
    assert far_from_converged("max_iterations", [1e-6, 3e-5], math.nan) is None  # one earlier step is no history
    assert far_from_converged("max_iterations", [2e-8], 1e-9) is not None
    assert far_from_converged("max_iterations", [math.nan, 1e-6, 2e-6, 1.0], math.nan) is not None


@pytest.mark.parametrize(
    ("costs", "crawls"),
    [
        ([1.0, 0.5, 0.5 - 1e-7, 0.5 - 2e-7, 0.5 - 5e-7], True),  # the last 2 of 4 iterations: 8e-7 of the decrease
        ([1.0, 0.5, 0.5 - 1e-7, 0.5 - 2e-7, 0.5 - 1e-6], False),  # 1.8e-6 of it: more iterations still pay
        ([1.0, 1.0 - 1e-12, 0.5], False),  # the decrease came last
        ([1.0, 0.5], False),  # one iteration says nothing of the last half
        ([1.0, 1.0, 1.0], False),  # no decrease at all: a budget too small, not a crawl
        ([1.0, math.nan, 0.5, 0.5], False),
    ],
)
def test_a_crawl_is_a_last_half_that_bought_almost_nothing(costs, crawls):
    reason = far_from_converged("max_iterations", [1e-6, 2e-6, 3e-5], math.nan, costs)
    assert ("it crawls" in reason) is crawls
    assert reason.endswith("raise the solver's max_iterations or shorten tau") is not crawls
