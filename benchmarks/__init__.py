r"""The benchmarks: measurements of the library's cost and accuracy, each script run as ``python -m benchmarks.NAME``.

Run from the repository's root (results go to ``benchmarks/results/``; ``docs/performance.md``,
``docs/gauss_newton.md`` and ``docs/results.md`` quote them with the conditions they were taken under).

Scripts (each measurement in one place):

- :mod:`benchmarks.run`: the suite of ``docs/performance.md``: one Gauss–Newton iteration against one
  Adam iteration (time, peak memory), time to accuracy on the regression flow, adapter overhead, the
  solve modes on one problem, scaling with :math:`p` and :math:`N`, the dense Jacobian's two paths, and the
  memory of the matrix-free mode at :math:`p = N = 10^5`; it writes the tables between the GENERATED
  markers of ``docs/performance.md``.
- :mod:`benchmarks.floors`: per-iteration cost against its floor (forward, backward, Jacobian, Gram
  factorisation), the crossovers, the Poisson iteration, and (on a GPU) the regression time to
  accuracy and the memory refusal; on any device.
- :mod:`benchmarks.crossovers`: the solve-mode crossovers (which mode is fastest at which :math:`(p, N)`,
  what ``AutoSolve`` picks and its time over the fastest), run as ``floors``' ``crossovers`` section.
- :mod:`benchmarks.peers`: the two energy natural gradient problems of Müller & Zeinhofer over seeds and
  time steps (iterations to the L2 targets within each budget, best and final errors, seconds per iteration),
  with the library's rules or ENGD's (``--line-search logarithmic-grid --step-cutoff 1e-30 --no-geodesic-acceleration``),
  from one network or the least final cost of several sharing the iterations (``--starts``).
- :mod:`benchmarks.poisson_scale`: KFAC's 2-D Poisson at :math:`p = 9873` (900 + 120 nodes): the library's
  Gauss–Newton (defaults, Tikhonov-filtered steps, every search from length 1, row-sampled or float32 kernels
  first) beside Woodbury-ENGD and KFAC (their own code, from checkouts the user gives), CPU seconds and L2 error
  per iteration, for one network seed or several; ``--device cuda`` runs ours on a GPU (synchronised wall seconds).
- :mod:`benchmarks.poisson_5d`: Woodbury-ENGD's 5-D Poisson at :math:`p = 10{,}065` (3000 + 500 nodes drawn
  afresh every iteration): the library's resampled Gauss–Newton (a schedule of damping, step-length and SPRING
  momentum phases, continued from saved points)
  beside Woodbury-ENGD (its own code, from a checkout the user gives), CPU seconds and L2 error per iteration.
- :mod:`benchmarks.peer_clock`: runs a peer's own training script under its interpreter with CPU-time
  clocks and records its L2 errors (started by :mod:`benchmarks.poisson_scale` and :mod:`benchmarks.poisson_5d`).
- :mod:`benchmarks.scale`: the 2-D regression step at :math:`p = 20{,}601`, :math:`N = 4{,}900` (Gauss–Newton,
  Adam, L-BFGS to accuracy) and the peak memory at :math:`p \approx 10^5`.
- :mod:`benchmarks.scale_cpu`: that step on CPU seconds (a shared machine): Gauss–Newton, subspace
  Gauss–Newton, Adam and L-BFGS, in one process or several combined.
- :mod:`benchmarks.residual_bookkeeping`: the share of one MMS step's CPU time spent on its residual, per
  solver and per booked residual (the split, or the total alone), at :math:`p = 8{,}577`, :math:`N = 4{,}900`.
- :mod:`benchmarks.forcing`: the CG tolerances of Gauss–Newton's model solves on that step (a fixed tolerance,
  the certified decrease, Eisenstat–Walker forcing terms): CG iterations and model decrease per iteration.
- :mod:`benchmarks.subspace`: subspace Gauss–Newton against full Gauss–Newton and Adam on that step.
- :mod:`benchmarks.retractions`: Gauss–Newton's step moved along frozen and exact geodesics against
  Riemannian gradient descent with the exponential map, on the paper's quick flows.
- :mod:`benchmarks.teng`: TENG's 2-D periodic heat benchmark: each time scheme's error, exact per
  Fourier mode, and (``--neural``) the library's neural flow on it.
- :mod:`benchmarks.teng_side_by_side`: TENG's published code (run from the user's clone, in its own
  environment) beside the library's BDF2 flow on that benchmark: errors against the exact solution and CPU
  seconds per step, and one step's error against its exact step per Gauss–Newton iteration (``step``).
- :mod:`benchmarks.time_order`: the neural flow (a linear eigenmode model, a sine network, the standard heat 2-D
  network) against the continuous heat 2-D flow: implicit Euler's and BDF2's dt-convergence tables with the
  inner solves' floor, and adaptive steps to a final time (steps against fixed implicit Euler, the estimate
  against the true local error, its inexactness floor and its roughness estimate, after the start and at the
  first estimates; ``--seeds``: the standard network's adaptive run on other seeds' fits).
- :mod:`benchmarks.teng_allen_cahn`: TENG's 2-D Allen–Cahn benchmark: an ETDRK4 spectral reference (checked
  against half the step, twice the grid and TENG's files), each scheme's time error, and the BDF2 bound on
  perturbed exact steps.
- :mod:`benchmarks.device_session`: the large-scale benchmarks above (the regression step, both Poisson
  problems, TENG's heat step, subspace Gauss–Newton, the memory cell) shortened, with ``--device cuda``, in one
  session of a lent GPU within a time budget, every result in one file (``benchmarks/device_session.sh`` installs
  the carried wheels and starts it; ``benchmarks/prepare_device_carry.sh`` builds them).
- :mod:`benchmarks.variable_bdf2`: variable-step BDF2's certified tracking bound on the heat 2-D flow:
  violations and the largest bound over the largest error, on perturbed exact steps along the step controller's
  steps (against a constant step of the same count) and through the driver with adaptive steps.

Shared modules (imported by the scripts, never by the library):

- :mod:`benchmarks.flows`: the benchmark problems (regression flows at a given size, the 2-D regression
  step, the ENGD problems).
- :mod:`benchmarks.timing`: the one clock: wall and CPU seconds of a call, torch's thread count (one
  thread and the default), peak memory.
- :mod:`benchmarks.curves`: error against solver time of inner solves on a step with a known exact solution.
- :mod:`benchmarks.report`: the tables, JSON and CSVs of :mod:`benchmarks.run`.

``ROOT`` is the repository's root, ``RESULTS`` the folder every script writes its results into.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
