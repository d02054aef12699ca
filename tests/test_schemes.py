"""Time schemes: exact BDF2 iterates against closed-form recursions, orders, error estimates, the BDF2 G-norm ledger and the continuous-flow bound."""

import math
from dataclasses import replace

import pytest
import torch

from mms_manifolds import DirichletEnergy, GinzburgLandau, L2Metric
from mms_manifolds.flow_bound import EulerFlowBound, bregman_estimator
from mms_manifolds.grids import grid_2d, grid_spacing, stiffness_1d, stiffness_2d, trapezoid_weights, uniform_nodes
from mms_manifolds.ledger import BDF2Ledger, BoundParts, TrackingLedger
from mms_manifolds.schemes import (
    BDF2,
    BDF2_G_MATRIX,
    ImplicitEuler,
    StepController,
    adaptive_exact_trajectory,
    extrapolation_weights,
    richardson_start,
)
from mms_manifolds.step_constants import StepConstants
from mms_manifolds.subproblem import Residual

UNIT_SQUARE = (0.0, 1.0, 0.0, 1.0)


def _heat_1d(count=24):
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    x = uniform_nodes(count, 0.0, 1.0, "dirichlet").unsqueeze(-1)
    metric = L2Metric(torch.full((count,), spacing, dtype=torch.float64))
    stiffness = 0.25 * stiffness_1d(count, 0.0, 1.0, "dirichlet")
    return x, metric, DirichletEnergy(stiffness), stiffness, spacing


def _heat_2d(count=10):
    spacing = grid_spacing(count, 0.0, 1.0, "dirichlet")
    points = grid_2d(count, count, UNIT_SQUARE, "dirichlet")
    metric = L2Metric(torch.full((count * count,), spacing**2, dtype=torch.float64))
    stiffness = 0.25 * stiffness_2d(count, count, UNIT_SQUARE, "dirichlet")
    u0 = torch.sin(math.pi * points[:, :1]) * torch.sin(math.pi * points[:, 1:])
    u0 = u0 + 0.3 * torch.sin(2 * math.pi * points[:, :1]) * torch.sin(3 * math.pi * points[:, 1:])
    eigenvalues, vectors = torch.linalg.eigh(stiffness / spacing**2)

    def flow(t):
        """The continuous (space-discrete) flow u' = -M^{-1}Ku from u0 at time t."""
        return vectors @ (torch.exp(-t * eigenvalues).unsqueeze(-1) * (vectors.T @ u0))

    def fixed_euler(t, count):
        """``count`` exact implicit Euler steps of length t / count, mode by mode: (1 + t lambda_j / count)^-count."""
        return vectors @ ((1 + t * eigenvalues / count).pow(-count).unsqueeze(-1) * (vectors.T @ u0))

    flow.fixed_euler = fixed_euler
    return metric, DirichletEnergy(stiffness), u0, flow


def _closed_form_bdf2(stiffness, mass, u0, steps):
    """Variable-step BDF2 for Mu' = -Ku written out: ((1+2w)/(1+w) M + t_n K) u_n+1 = M((1+w) u_n - w^2/(1+w) u_n-1).

    The start: Richardson of implicit Euler, 2 (M + t/2 K)^{-2} M^2 u0 ... written as two half steps and a full step.
    """

    def euler(u, t):
        return torch.linalg.solve(mass + t * stiffness, mass @ u)

    first = steps[0]
    states = [u0, 2 * euler(euler(u0, first / 2), first / 2) - euler(u0, first)]
    for index in range(1, len(steps)):
        w = steps[index] / steps[index - 1]
        lhs = (1 + 2 * w) / (1 + w) * mass + steps[index] * stiffness
        rhs = mass @ ((1 + w) * states[-1] - w**2 / (1 + w) * states[-2])
        states.append(torch.linalg.solve(lhs, rhs))
    return torch.stack(states)


def _bdf2_deviation(scheme, steps):
    x, metric, energy, stiffness, spacing = _heat_1d()
    u0 = torch.sin(math.pi * x) + 0.5 * torch.sin(3 * math.pi * x)
    mass = spacing * torch.eye(x.shape[0], dtype=torch.float64)
    ours = scheme.exact_trajectory(energy, metric, u0, steps)
    reference = _closed_form_bdf2(stiffness, mass, u0, steps)
    return float((ours - reference).abs().max() / reference.abs().max())


CONSTANT = [0.05] * 12
VARIABLE = [0.05, 0.05, 0.08, 0.12, 0.06, 0.03, 0.05, 0.09, 0.15, 0.1]


@pytest.mark.parametrize("steps", [CONSTANT, VARIABLE], ids=["constant", "variable"])
def test_bdf2_exact_iterates_match_the_closed_form_recursion(steps):
    assert _bdf2_deviation(BDF2(), steps) < 1e-12


class _WrongAnchor(BDF2):
    """BDF2 with u~ = (4.03 u_k - 1.03 u_k-1)/3 (the weights still sum to 1)."""

    @staticmethod
    def coefficients(ratio):
        newest, previous, scale = BDF2.coefficients(ratio)
        return newest + 0.01, previous - 0.01, scale


class _WrongStep(BDF2):
    """BDF2 with tau' = 0.7 tau instead of 2 tau / 3 at a constant step."""

    @staticmethod
    def coefficients(ratio):
        newest, previous, scale = BDF2.coefficients(ratio)
        return newest, previous, scale * 1.05


@pytest.mark.parametrize("wrong", [_WrongAnchor(), _WrongStep()], ids=["anchor", "step"])
@pytest.mark.parametrize("steps", [CONSTANT, VARIABLE], ids=["constant", "variable"])
def test_a_wrong_bdf2_coefficient_is_caught(wrong, steps):
    assert _bdf2_deviation(wrong, steps) > 1e-5


def test_constant_step_coefficients_are_the_textbook_ones():
    newest, previous, scale = BDF2.coefficients(1.0)
    assert (newest, previous, scale) == pytest.approx((4 / 3, -1 / 3, 2 / 3), abs=1e-15)


def _slope(errors):
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


@pytest.mark.parametrize(
    ("scheme", "low", "high"), [(ImplicitEuler(), 0.9, 1.1), (BDF2(), 1.8, 2.2), (BDF2(start="euler"), 1.8, 2.2)]
)
def test_order_against_the_continuous_flow_on_heat_2d(scheme, low, high):
    metric, energy, u0, flow = _heat_2d()
    final = 0.2
    errors = []
    for count in (10, 20, 40, 80):
        states = scheme.exact_trajectory(energy, metric, u0, [final / count] * count)
        errors.append(float(metric.norm(states[-1] - flow(final))))
    slopes = _slope(errors)
    assert all(low <= slope <= high for slope in slopes), slopes


def test_richardson_start_is_third_order_locally():
    metric, energy, u0, flow = _heat_2d()

    def step(anchor, tau):
        return energy.prox(anchor, tau, metric)

    local = [float(metric.norm(richardson_start(step, u0, tau) - flow(tau))) for tau in (0.004, 0.002, 0.001)]
    euler = [float(metric.norm(step(u0, tau) - flow(tau))) for tau in (0.004, 0.002, 0.001)]
    assert all(slope > 2.7 for slope in _slope(local)), _slope(local)
    assert all(1.8 < slope < 2.2 for slope in _slope(euler)), _slope(euler)


def _true_local_errors(scheme, energy, metric, flow, steps):
    """u(t_k+1) - (the scheme's step from the exact past values u(t_k), u(t_k-1)), per step, in the M-norm."""
    times = [0.0]
    for tau in steps:
        times.append(times[-1] + tau)
    errors = []
    for k, tau in enumerate(steps):
        history = [flow(times[j]) for j in range(max(0, k - 1), k + 1)]
        step = scheme.exact_step(energy, metric, history, steps[max(0, k - 1) : k], tau)
        errors.append(float(metric.norm(step - flow(times[k + 1]))))
    return errors


def test_adaptive_bdf2_meets_the_target_with_far_fewer_steps_than_fixed_implicit_euler():
    metric, energy, u0, flow = _heat_2d()
    final = 0.2
    exact = flow(final)
    controller = StepController(7e-8 * float(metric.norm(u0)), order=2)
    states, steps, estimates = adaptive_exact_trajectory(BDF2(), energy, metric, u0, final, 1e-3, controller)
    relative = float(metric.norm(states[-1] - exact) / metric.norm(exact))
    assert relative <= 1e-5
    # fixed-step implicit Euler: the smallest step count reaching the same error (its error falls like 1/K)
    count = 100
    while True:
        fixed = flow.fixed_euler(final, count)
        if float(metric.norm(fixed - exact) / metric.norm(exact)) <= relative:
            break
        count *= 2
    assert count >= 10 * len(steps)
    fixed = ImplicitEuler().exact_trajectory(energy, metric, u0, [final / 50] * 50)[-1]
    assert torch.allclose(fixed, flow.fixed_euler(final, 50), atol=1e-13)  # the mode-by-mode form is implicit Euler
    truth = _true_local_errors(BDF2(), energy, metric, flow, steps)
    ratios = [estimate / true for estimate, true in zip(estimates, truth) if not math.isnan(estimate)]
    assert len(ratios) == len(steps) - 2  # BDF2's estimate needs three past states
    assert all(1 / 3 <= ratio <= 3 for ratio in ratios), (min(ratios), max(ratios))


def test_step_controller_rejects_and_shrinks():
    controller = StepController(1e-4, order=2)
    assert controller.accept(math.nan) and controller.accept(1e-4) and not controller.accept(2e-4)
    assert controller.next_step(0.1, 8e-4) == pytest.approx(0.1 * 0.9 * (1 / 8) ** (1 / 3))
    assert controller.next_step(0.1, 1e-12) == pytest.approx(0.2)
    assert controller.next_step(0.1, math.nan) == 0.1


def test_noise_aware_controller_judges_the_time_part_and_never_shrinks_on_roughness():
    """theta = max(eta - nu, 0) against the tolerance; a factor below 1 is raised to 1 where nu >= eta/2."""
    controller = StepController(1e-4, order=2)
    assert controller.accept(3e-4, 2.5e-4) and not controller.accept(3e-4, 1e-4)  # theta 5e-5, 2e-4
    assert controller.accept(5.0, math.nan) and controller.next_step(0.1, 5.0, math.nan) == 0.1  # no noise estimate yet
    # not dominated (nu < eta/2): the factor of theta = 8e-4, a shrink
    assert controller.next_step(0.1, 9e-4, 1e-4) == pytest.approx(0.1 * 0.9 * (1 / 8) ** (1 / 3))
    # dominated (nu >= eta/2) and theta above the tolerance: rejected and retried shorter, by the factor of theta
    assert not controller.accept(9e-4, 4.5e-4)
    assert controller.next_step(0.1, 9e-4, 4.5e-4) == pytest.approx(0.1 * 0.9 * (1 / 4.5) ** (1 / 3))
    # dominated and accepted with theta just below the tolerance: 0.9 (tol/theta)^(1/3) < 1 is raised to 1
    assert controller.accept(2e-4, 1.01e-4) and controller.next_step(0.1, 2e-4, 1.01e-4) == 0.1
    assert controller.next_step(0.1, 2e-4, 0.99e-4) < 0.1  # not dominated: the classic shrink of theta
    # dominated, theta small: it grows as theta says; theta = 0 grows by the largest ratio
    assert controller.next_step(0.1, 2e-5, 1.5e-5) == pytest.approx(0.1 * min(2.0, 0.9 * (1e-4 / 5e-6) ** (1 / 3)))
    assert controller.next_step(0.1, 2e-5, 3e-5) == pytest.approx(0.2)
    assert controller.next_step(0.1, 8e-4, None) == controller.next_step(0.1, 8e-4)  # no noise: the classic rule


def test_extrapolation_weights_reproduce_polynomials():
    times, target = [0.0, 0.3, 0.7, 1.2], 1.9
    for degree in range(4):
        weights = extrapolation_weights(times, target)
        assert sum(w * t**degree for w, t in zip(weights, times)) == pytest.approx(target**degree, rel=1e-12)
    assert extrapolation_weights([0.0, 1.0, 2.0], 3.0) == pytest.approx([1.0, -3.0, 3.0])


@pytest.mark.parametrize(("scheme", "share"), [(ImplicitEuler(), math.sqrt(6 / 20)), (BDF2(), math.sqrt(20 / 70))])
def test_noise_estimate_is_zero_on_smooth_states_and_the_rms_share_on_rough_ones(scheme, share):
    """On states on a polynomial of degree m (= estimate_history) the higher difference vanishes while the estimate does
    not; a deviation of the new state alone gives nu / eta = sqrt((1 + sum l^2) / (1 + sum l+^2)) exactly; and on
    uncorrelated deviations of one size nu estimates the estimate itself (the smooth part is zero)."""
    metric = L2Metric(torch.full((4000,), 0.5, dtype=torch.float64))
    m = scheme.estimate_history
    steps = [0.1, 0.12, 0.09, 0.11, 0.1][: m + 1]
    times = [0.0]
    for tau in steps:
        times.append(times[-1] + tau)
    direction = torch.linspace(-1, 1, 4000, dtype=torch.float64).unsqueeze(-1)
    smooth = [(1 + t + t**m) * direction for t in times]
    assert scheme.noise_estimate(smooth, steps, metric) <= 1e-12 * scheme.local_error_estimate(smooth[1:], steps[1:], metric)
    assert math.isnan(scheme.noise_estimate(smooth[1:], steps[1:], metric))  # one state short
    constant = [0.1] * (m + 1)
    kicked = [*smooth[:-1], smooth[-1] + 1e-3 * direction.flip(0)]
    flat = [(1 + 0.1 * j) * direction for j in range(m + 2)]
    flat[-1] = flat[-1] + 1e-3 * direction.flip(0)
    ratio = scheme.noise_estimate(flat, constant, metric) / scheme.local_error_estimate(flat[1:], constant[1:], metric)
    assert ratio == pytest.approx(share, rel=1e-9)
    assert scheme.noise_estimate(kicked, steps, metric) > 0
    generator = torch.Generator().manual_seed(0)
    rough = [1e-3 * torch.randn(4000, 1, generator=generator, dtype=torch.float64) for _ in range(m + 2)]
    nu, eta = scheme.noise_estimate(rough, steps, metric), scheme.local_error_estimate(rough[1:], steps[1:], metric)
    assert nu / eta == pytest.approx(1.0, abs=0.06), nu / eta


@pytest.mark.parametrize("scheme", [ImplicitEuler(), BDF2()], ids=["euler", "bdf2"])
def test_initial_step_meets_the_tolerance_on_one_eigenmode(scheme):
    """On one eigenmode u0 = phi (A phi = lam phi) the single-rate model is exact: ||u^(p+1)|| = lam^(p+1) ||phi||, so
    tau_0 = 0.9 (tol / (c lam^(p+1) ||phi||))^(1/(p+1)); the exact scheme's local error at tau_0 / 0.9 is then about tol."""
    metric, energy, _, _ = _heat_2d()
    spacing = 1 / 11
    eigenvalues, vectors = torch.linalg.eigh(energy.stiffness / spacing**2)
    lam, phi = float(eigenvalues[4]), vectors[:, 4:5]
    tol = 1e-7 * float(metric.norm(phi))
    tau = scheme.initial_step(energy, metric, phi, tol)
    p = scheme.order
    assert tau == pytest.approx(0.9 * (tol / (scheme.error_constant * lam ** (p + 1) * float(metric.norm(phi)))) ** (1 / (p + 1)))
    full = tau / 0.9
    if p == 1:
        local = abs(1 / (1 + full * lam) - math.exp(-full * lam))
    else:  # BDF2 from the exact history (phi e^{lam tau}, phi): (4 - e^{lam tau})/3 / (1 + 2 tau lam / 3) - e^{-lam tau}
        local = abs((4 - math.exp(lam * full)) / 3 / (1 + 2 * full * lam / 3) - math.exp(-lam * full))
    assert local * float(metric.norm(phi)) == pytest.approx(tol, rel=0.05)
    assert scheme.initial_step(energy, metric, torch.zeros_like(phi), tol) == math.inf  # a stationary state


def test_the_last_steps_to_the_final_time_are_balanced():
    """Between one and two steps left: half of the remaining time, so that the last step is no sliver."""
    from mms_manifolds.time_stepping import SchemeRecord, SchemeStepper

    metric = L2Metric(torch.ones(3, dtype=torch.float64))
    stepper = SchemeStepper(ImplicitEuler(), 0.1, 0.0, metric, torch.float64, 3, True, 1e-6, final_time=1.0)
    record = SchemeRecord(time_steps=(0.5, 0.3), local_error_estimate=(None, None), flow_bound=(None, None))
    assert stepper.next_step(replace(record, next_step=0.15)) == pytest.approx(0.1)  # 0.2 left: 0.15 would leave 0.05
    assert stepper.next_step(replace(record, next_step=0.25)) == pytest.approx(0.2)  # one step lands on it
    assert stepper.next_step(replace(record, next_step=0.08)) == 0.08  # more than two steps left: as chosen


def test_bad_scheme_settings_are_named():
    with pytest.raises(ValueError, match="start"):
        BDF2(start="heun")
    with pytest.raises(ValueError, match="1 \\+ sqrt\\(2\\)"):
        BDF2(max_ratio=2.5)
    with pytest.raises(ValueError, match="exceeds max_ratio"):
        BDF2().plan([torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)], [0.1], 0.25)
    with pytest.raises(ValueError, match="richardson_start"):
        BDF2().plan([torch.zeros(2, 1, dtype=torch.float64)], [], 0.1)
    with pytest.raises(ValueError, match="time_tolerance"):
        StepController(0.0, order=1)


# ---------------------------------------------------------------- the BDF2 G-norm ledger


def _g_norm(metric, newest, older):
    return 0.5 * math.sqrt(float(metric.norm(newest)) ** 2 + float(metric.norm(2 * newest - older)) ** 2)


def test_g_matrix_and_its_norm_constant_are_sharp():
    g = torch.tensor(BDF2_G_MATRIX, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    pairs = torch.randn(2000, 2, generator=generator, dtype=torch.float64)
    quadratic = ((pairs @ g) * pairs).sum(-1)
    assert torch.allclose(quadratic, 0.25 * (pairs[:, 0] ** 2 + (2 * pairs[:, 0] - pairs[:, 1]) ** 2))
    assert float((pairs[:, 0].abs() / quadratic.sqrt()).max()) <= BDF2Ledger.NORM_CONSTANT
    attained = torch.tensor([1.0, 2.0], dtype=torch.float64)  # e_k = 2 e_k+1
    assert float(attained[0] / (attained @ g @ attained).sqrt()) == pytest.approx(BDF2Ledger.NORM_CONSTANT)
    assert torch.linalg.eigvalsh(g).tolist() == pytest.approx([(3 - 2 * math.sqrt(2)) / 4, (3 + 2 * math.sqrt(2)) / 4])


def test_one_g_norm_step_needs_the_norm_constant():
    """From the exact G-norm of (e_k, e_k-1) with e_k-1 = 1.2 e_k, one exact BDF2 step: 2g bounds e_k+1, g does not."""
    x, metric, energy, _, _ = _heat_1d()
    tau = 0.05
    ledger = BDF2Ledger(energy.convexity(metric), tau, metric, torch.float64, x.shape[0])
    exact = BDF2().exact_trajectory(energy, metric, torch.sin(math.pi * x), [tau] * 3)
    error = 1e-2 * torch.sin(math.pi * x)
    u_old, u_now = exact[1] + 1.2 * error, exact[2] + error
    u_new = BDF2().exact_step(energy, metric, [u_old, u_now], [tau], tau)
    plan = BDF2().plan([u_old, u_now], [tau], tau)
    residual = float(metric.norm((energy.gradient(u_new) / metric.weights.unsqueeze(-1)) + (u_new - plan.anchor) / plan.tau))
    g_now = _g_norm(metric, u_now - exact[2], u_old - exact[1])
    previous = BoundParts(g_now, 0.0, 0.0, 0.0)
    g_new, bound, _ = ledger.step(previous, Residual(residual, residual, 0.0), u_new, u_now)
    true = float(metric.norm(u_new - exact[3]))
    assert bound.tracking_bound >= true
    assert g_new.tracking_bound < true  # a ledger without the constant 2 would be violated here


def _perturbed_bdf2(energy, metric, u0, tau, steps, size, seed, mode, full=False):
    """BDF2 (implicit Euler start) with a perturbation ``size * N(0, 1) * mode`` added to each exact step; the ledger's bounds and the true errors.

    ``full=False`` books the pure G-norm recursion :math:`2g_k`; ``full=True`` passes :math:`(B_k, B_{k-1}, W_k)`, as the
    driver does, so the total is the minimum of every bound of ``BDF2Ledger.step``.
    """
    generator = torch.Generator().manual_seed(seed)
    convexity = energy.convexity(metric)
    ledger = BDF2Ledger(convexity, tau, metric, torch.float64, u0.numel())
    euler = TrackingLedger(StepConstants.of(tau, convexity), metric, torch.float64, u0.numel())
    scheme = BDF2(start="euler")
    exact = scheme.exact_trajectory(energy, metric, u0, [tau] * steps)
    states, bounds, errors, g, anchor = [u0], [0.0], [], None, None
    for k in range(steps):
        plan = scheme.plan(states, [tau] * (len(states) - 1), tau)
        new = energy.prox(plan.anchor, plan.tau, metric) + size * float(torch.randn((), generator=generator, dtype=torch.float64)) * mode
        gradient = energy.gradient(new) / metric.weights.unsqueeze(-1)
        rho = float(metric.norm(gradient + (new - plan.anchor) / plan.tau))
        residual = Residual(rho, rho, 0.0)
        if k == 0:
            first = euler.step(BoundParts.start(0.0), residual, new, states[-1])
            g, bound, anchor = ledger.start(first, BoundParts.start(0.0)), first, 4 * first.tracking_bound
        elif full:
            g, bound, anchor = ledger.step(g, residual, new, states[-1], (bounds[-1], bounds[-2], anchor))
        else:
            g, bound, _ = ledger.step(g, residual, new, states[-1])
        states.append(new)
        bounds.append(bound.tracking_bound)
        errors.append(float(metric.norm(new - exact[k + 1])))
    return bounds[1:], errors


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bdf2_ledger_holds_on_perturbed_heat_steps(seed):
    x, metric, energy, _, _ = _heat_1d()
    mode = torch.sin(math.pi * x) + 0.5 * torch.sin(2 * math.pi * x)
    bounds, errors = _perturbed_bdf2(energy, metric, torch.sin(math.pi * x), 0.05, 20, 1e-4, seed, mode)
    assert all(error <= bound for error, bound in zip(errors, bounds))


def _allen_cahn_1d(count=32):
    x = uniform_nodes(count, -1.0, 1.0, "neumann", dtype=torch.float64).unsqueeze(-1)
    weights = trapezoid_weights(count, -1.0, 1.0, dtype=torch.float64)
    metric = L2Metric(weights)
    energy = GinzburgLandau(0.1, stiffness_1d(count, -1.0, 1.0, "neumann", dtype=torch.float64), weights)
    return x, metric, energy


def _full_ledger_cases():
    """Perturbed exact BDF2 runs on heat 1-D (lambda > 0) and Allen-Cahn (lambda = -1): (bounds, errors, pure-G-norm bounds)."""
    x, metric, energy, _, _ = _heat_1d()  # float64 grid
    low = torch.sin(math.pi * x)
    mode = low + 0.5 * torch.sin(2 * math.pi * x)
    for seed in range(3):
        arguments = (energy, metric, low, 0.05, 20, 1e-4, seed, mode)
        yield "heat", _perturbed_bdf2(*arguments, full=True), _perturbed_bdf2(*arguments)[0]
    x, metric, energy = _allen_cahn_1d()
    u0 = 0.6 * torch.sin(2.5 * math.pi * x) + 0.2 * x
    for seed in range(2):
        arguments = (energy, metric, u0, 0.1, 10, 1e-4, seed, torch.cos(math.pi * x))
        yield "allen_cahn", _perturbed_bdf2(*arguments, full=True), _perturbed_bdf2(*arguments)[0]


def test_bdf2_ledger_with_its_history_holds_and_is_tighter_than_the_pure_g_norm():
    """The driver's ledger (B_k, B_k-1, W_k passed on) bounds every error, and is several times below 2 g_k."""
    for name, (bounds, errors), pure in _full_ledger_cases():
        assert all(error <= bound for error, bound in zip(errors, bounds)), name
        assert all(bound <= g_bound * (1 + 1e-12) for bound, g_bound in zip(bounds, pure)), name
        assert max(bounds) <= (5 if name == "heat" else 8) * max(errors), name  # pure G-norm: 9-18 (heat), 43-56
        assert max(pure) >= 2 * max(bounds), name


def test_bdf2_ledger_breaks_without_the_norm_constant(monkeypatch):
    """With the G-norm constant 2 replaced by 1 (||e_k+1|| <= g_k+1) the bound is violated on both flows."""
    monkeypatch.setattr(BDF2Ledger, "NORM_CONSTANT", 1.0)
    violated = set()
    for name, (bounds, errors), _ in _full_ledger_cases():
        if any(error > bound for error, bound in zip(errors, bounds)):
            violated.add(name)
    assert violated == {"heat", "allen_cahn"}


def test_bdf2_semi_convex_bound_holds_on_allen_cahn():
    count = 32
    x = uniform_nodes(count, -1.0, 1.0, "neumann").unsqueeze(-1)
    weights = trapezoid_weights(count, -1.0, 1.0)
    metric = L2Metric(weights)
    energy = GinzburgLandau(0.1, stiffness_1d(count, -1.0, 1.0, "neumann"), weights)
    assert energy.convexity(metric) < 0
    u0 = 0.6 * torch.sin(2.5 * math.pi * x) + 0.2 * x
    for seed in range(2):
        bounds, errors = _perturbed_bdf2(energy, metric, u0, 0.1, 10, 1e-4, seed, torch.cos(math.pi * x))
        assert all(error <= bound for error, bound in zip(errors, bounds))
    with pytest.raises(ValueError, match="4 tau lambda_- < 1"):
        BDF2Ledger(energy.convexity(metric), 0.3, metric, torch.float64, count)


# ---------------------------------------------------------------- implicit Euler against the continuous flow


@pytest.mark.parametrize("perturbation", [0.0, 1e-4])
def test_euler_flow_bound_holds_against_the_continuous_flow(perturbation):
    metric, energy, u0, flow = _heat_2d()
    tau, steps = 0.01, 30
    checker = EulerFlowBound(energy.convexity(metric))
    generator = torch.Generator().manual_seed(0)
    states, bound = [u0], 0.0
    for k in range(steps):
        new = energy.prox(states[-1], tau, metric)
        new = new + perturbation * torch.randn(new.shape, generator=generator, dtype=torch.float64)
        residual = float(metric.norm(energy.gradient(new) / metric.weights.unsqueeze(-1) + (new - states[-1]) / tau))
        bound, problem = checker.step(bound, energy, states[-1], new, tau, residual)
        assert problem is None
        states.append(new)
        true = float(metric.norm(new - flow((k + 1) * tau)))
        assert true <= bound
    if perturbation == 0.0:
        assert bound <= 10 * true  # informative for exact implicit Euler iterates


def test_euler_flow_bound_refuses_a_non_convex_energy_and_a_negative_estimator():
    with pytest.raises(ValueError, match="convex"):
        EulerFlowBound(-1.0)
    with pytest.raises(ValueError, match="convex"):
        EulerFlowBound(None)
    count = 32
    weights = trapezoid_weights(count, -1.0, 1.0)
    energy = GinzburgLandau(0.1, stiffness_1d(count, -1.0, 1.0, "neumann"), weights)
    small, big = 0.1 * torch.ones(count, 1, dtype=torch.float64), 0.2 * torch.ones(count, 1, dtype=torch.float64)  # the double well is concave near 0
    assert bregman_estimator(energy, small, big)[0] < 0
    _, problem = EulerFlowBound(0.0).step(0.0, energy, small, big, 0.1, 0.0)
    assert "not convex" in problem


def test_teng_spectral_reference_agrees_with_the_schemes_on_its_modes():
    """benchmarks/teng.py iterates each Fourier mode by hand; the schemes module, on the diagonal energy of the same modes, must agree."""
    from benchmarks import teng

    wavenumbers, coefficients = teng.random_initial_condition(modes=12, highest=6, seed=1)
    rates = torch.tensor(teng.DIFFUSIVITY * (wavenumbers**2).sum(-1), dtype=torch.float64)
    metric, energy = L2Metric(torch.ones(rates.shape[0], dtype=torch.float64)), DirichletEnergy(torch.diag(rates))
    u0 = torch.tensor(coefficients.real, dtype=torch.float64).unsqueeze(-1)
    z = teng._decay_rates(wavenumbers) * 0.01
    for name, scheme in (("BDF2, Richardson start", BDF2()), ("BDF2, implicit Euler start", BDF2(start="euler"))):
        ours = scheme.exact_trajectory(energy, metric, u0, [0.01] * 7)[-1, :, 0]
        theirs = teng.SCHEMES[name](z, 7, coefficients.real)
        assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float64), rtol=1e-13, atol=1e-16)
    assert torch.allclose(
        ImplicitEuler().exact_trajectory(energy, metric, u0, [0.01] * 7)[-1, :, 0],
        torch.tensor(teng.SCHEMES["implicit Euler"](z, 7, coefficients.real), dtype=torch.float64),
        rtol=1e-13,
    )
    # the stand-in is a real function: coefficients of -k are the conjugates of those of k
    half = len(coefficients) // 2
    assert (wavenumbers[half:] == -wavenumbers[:half]).all()
    assert abs(coefficients[half:] - coefficients[:half].conj()).max() == 0


def _perturbed_run(scheme, metric, energy, u0, steps, defects, directions):
    """States u_j = (the scheme's exact step from the perturbed history) + d_j, ||d_j||_M = defects[j]; and the d_j."""
    states, shifts = [u0], []
    for j, tau in enumerate(steps):
        shift = directions[j] / metric.norm(directions[j]) * defects[j]
        states.append(scheme.exact_step(energy, metric, states, steps[:j], tau) + shift)
        shifts.append(shift)
    return states, shifts


def _exact_from_history(scheme, metric, energy, stencil, shift, steps):
    """The stencil's exact counterpart: s_0, then s_1 without its defect, then the scheme's exact steps from these."""
    clean = [stencil[0], stencil[1] - shift]
    for j in range(2, len(stencil)):
        history = clean[max(0, j - 2) : j][-scheme.history :]
        clean.append(scheme.exact_step(energy, metric, history, steps[j - 2 : j - 1], steps[j - 1]))
    return clean


@pytest.mark.parametrize("scheme", [ImplicitEuler(), BDF2()], ids=["euler", "bdf2"])
@pytest.mark.parametrize("pattern", ["random", "alternating lowest mode"])
def test_estimate_floor_bounds_what_the_defects_do_to_the_estimate(scheme, pattern):
    """|eta(u) - eta(exact steps from the same history)| <= pi, on perturbed exact steps with variable step sizes."""
    metric, energy, u0, _ = _heat_2d()
    steps = [0.004, 0.005, 0.006, 0.005, 0.0045, 0.006, 0.007]
    defects = [1e-6, 3e-7, 2e-6, 5e-7, 1e-6, 1e-6, 2e-7]
    lowest = torch.linalg.eigh(energy.stiffness)[1][:, :1]  # the lowest mode (M is a multiple of I): L' near 1
    m, ratios = scheme.estimate_history, []
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        if pattern == "random":
            directions = [torch.randn(u0.shape, generator=generator, dtype=torch.float64) for _ in steps]
        else:
            directions = [(-1) ** j * lowest for j in range(len(steps))]
        states, shifts = _perturbed_run(scheme, metric, energy, u0, steps, defects, directions)
        for k in range(m, len(steps) + 1):
            stencil, window = states[k - m : k + 1], steps[k - m : k]
            clean = _exact_from_history(scheme, metric, energy, stencil, shifts[k - m], window)
            moved = abs(scheme.local_error_estimate(stencil, window, metric) - scheme.local_error_estimate(clean, window, metric))
            floor = scheme.estimate_floor(window, defects[k - m : k], 0.0)
            ratios.append(moved / floor)
    assert max(ratios) <= 1, max(ratios)
    assert max(ratios) >= 1e-3  # the bound is of the right size, not vacuous (0.03 to 0.1 measured)


def test_estimate_floor_is_zero_without_defects_and_unknown_without_convexity():
    steps = [0.01, 0.02, 0.015]
    assert BDF2().estimate_floor(steps, [0.0, 0.0, 0.0], 0.0) == 0.0
    assert math.isnan(BDF2().estimate_floor(steps, [1e-6] * 3, math.nan))
    assert math.isnan(ImplicitEuler().estimate_floor(steps[:2], [1e-6] * 2, -1e3))  # 1 + tau lambda <= 0
    # implicit Euler, constant steps: C = 1/3, weights (1, -2, 1), Delta = (0, d1, d2 + d1/(1 + tau lambda))
    assert ImplicitEuler().estimate_floor([0.1, 0.1], [1.0, 2.0], 1.0) == pytest.approx((2 + 1 / 1.1 + 2 * 1.0) / 3)
    with pytest.raises(ValueError, match="last 3"):
        BDF2().estimate_floor(steps[:2], [0.0, 0.0], 0.0)


@pytest.mark.parametrize("scheme", [ImplicitEuler(), BDF2()])
def test_step_error_coefficient_is_milnes_constant_with_the_predictors_interpolation_factor(scheme):
    """C = kappa / (kappa + pi), pi = prod_i (t_new - t_i) / m! the interpolation error's factor of the predictor."""
    steps = [0.3, 0.5, 0.2, 0.4][-scheme.estimate_history :]
    times = [0.0]
    for tau in steps:
        times.append(times[-1] + tau)
    interpolation = math.prod(times[-1] - t for t in times[:-1]) / math.factorial(scheme.estimate_history)
    kappa = scheme.step_error_coefficient(steps)
    assert scheme.local_error_constant(steps) == pytest.approx(kappa / (kappa + interpolation), rel=1e-13)


@pytest.mark.parametrize("scheme", [ImplicitEuler(), BDF2()])
def test_start_estimates_match_the_true_local_errors_of_the_first_steps_on_one_eigenmode(scheme):
    """On one eigenmode u = e^{-lam t} phi with tau lam ~ 0.01 the first clean estimate (step m + 1, window u_1 ... u_m+1)
    scaled by kappa_j / kappa_m+1 is within a few per cent of each first step's true local error times Milne's own ratio
    at step m + 1 (0.86 for BDF2, 0.55 for implicit Euler: the states' own errors change between steps), the
    Richardson start's tau^3/6 included; BDF2's Euler start has none."""
    metric, energy, _, _ = _heat_2d()
    eigenvalues, vectors = torch.linalg.eigh(energy.stiffness / (1 / 11) ** 2)
    lam, phi = float(eigenvalues[4]), vectors[:, 4:5]

    def flow(t):
        return math.exp(-lam * t) * phi

    base = 0.01 / lam
    steps = [base * factor for factor in (1.0, 1.3, 0.8, 1.1)][: scheme.estimate_history + 1]
    states = scheme.exact_trajectory(energy, metric, phi, steps)
    estimate = scheme.local_error_estimate(list(states), steps, metric)
    started = scheme.start_estimates(steps, estimate)
    truth = _true_local_errors(scheme, energy, metric, flow, steps)
    assert len(started) == scheme.estimate_history
    carried = estimate / truth[-1]  # Milne's own ratio at step m + 1 (the states' global errors change between steps)
    assert carried == pytest.approx(0.86 if isinstance(scheme, BDF2) else 0.55, rel=0.05)
    for value, true in zip(started, truth):
        assert value / true == pytest.approx(carried, rel=0.03)
    with pytest.raises(ValueError, match="first"):
        scheme.start_estimates(steps[1:], estimate)
    if isinstance(scheme, BDF2):
        assert math.isnan(BDF2(start="euler").start_estimates(steps, estimate)[0])
