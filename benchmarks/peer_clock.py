r"""Run a peer's own ``train.py`` (KFAC for PINNs, Woodbury-ENGD / SPRING) with CPU-time clocks; record its L2 errors.

Started by :mod:`benchmarks.poisson_scale` under the peer's own interpreter, with the peer's checkout and this
repository's root on ``PYTHONPATH`` (nothing of the peer is copied here). It imports ``<package>.train``,
replaces the module's wall clocks by CPU time (:func:`benchmarks.timing.use_cpu_clocks`) so that the peer's
own ``Time:`` log counts CPU seconds, wraps its ``l2_error`` to record ``(iterations done, CPU seconds since start, L2 error)`` at every logged step,
and calls the peer's ``main()`` with the arguments after ``--``. The record is written even when the run is
interrupted.

    PYTHONPATH=<peer checkout>:<this root> python -m benchmarks.peer_clock kfac_pinns_exp out.json [--cpu 1] -- --optimizer=KFAC ...
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time

from .timing import use_cpu_clocks, use_threads


def main() -> None:
    split = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", help="the peer's package: kfac_pinns_exp or rla_pinns")
    parser.add_argument("output", help="JSON file for the record")
    parser.add_argument("--cpu", type=int, default=None, help="pin the run to this CPU core")
    arguments = parser.parse_args(sys.argv[1:split])
    train_arguments = sys.argv[split + 1 :]
    if arguments.cpu is not None:
        os.sched_setaffinity(0, {arguments.cpu})
    threads = use_threads(1)
    train = importlib.import_module(f"{arguments.package}.train")
    use_cpu_clocks(train)
    records: list[dict] = []
    start = time.process_time()
    peer_l2_error = train.l2_error

    def recorded_l2_error(model, points, solution):
        seconds = time.process_time() - start
        step = inspect.currentframe().f_back.f_locals.get("step")  # the training loop's counter, 0 after the first step
        value = peer_l2_error(model, points, solution)
        records.append({"iteration": None if step is None else step + 1, "cpu_seconds": seconds, "l2": float(value.detach())})
        return value

    train.l2_error = recorded_l2_error
    sys.argv[:] = ["train.py", *train_arguments]  # in place: the peer's parsers hold this list
    try:
        train.main()
    finally:
        record = {
            "package": arguments.package,
            "arguments": train_arguments,
            "torch_threads": threads,
            "records": records,
        }
        with open(arguments.output, "w") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
