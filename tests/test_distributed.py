"""Nodes sharded over 2 gloo processes give the same MMS iterates as one process (float64, to 1e-10)."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from mms_manifolds.distributed import ShardedParametrization, shard_slice

EXAMPLE = Path(__file__).parent.parent / "examples" / "distributed_regression.py"


def _example(monkeypatch):
    # imported by name, so that the spawned processes (which unpickle its worker) can import it too
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    return importlib.import_module(EXAMPLE.stem)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawned_with_one_retry(example):
    """The sharded run; once more on a fresh port if a process was killed by a signal (not a Python error).

    gloo's C++ threads occasionally abort a process (``terminate called without an active exception``, SIGABRT)
    while a loaded machine tears a process group down; seen in 2 of 9 runs of this test on the shared 2-core
    machine, never with a Python traceback. A wrong result or a Python exception still fails at once.
    """
    try:
        return example.run_spawned(world_size=2, port=_free_port())
    except mp.ProcessExitedException as error:
        if error.signal_name is None:
            raise
        return example.run_spawned(world_size=2, port=_free_port())


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_processes_equal_one_process(monkeypatch):
    example = _example(monkeypatch)
    single = example.run()
    sharded = _spawned_with_one_retry(example)
    assert sharded.shape == single.shape
    assert float((single - sharded).abs().max()) <= 1e-10
    assert float((single[-1] - single[0]).abs().max()) > 1e-2  # the flow moved


def test_shards_cover_the_nodes_once():
    for count, world in [(10, 3), (7, 7), (256, 2)]:
        blocks = [shard_slice(count, rank, world) for rank in range(world)]
        covered = [index for block in blocks for index in range(count)[block]]
        assert covered == list(range(count))
    with pytest.raises(ValueError, match="cannot shard"):
        shard_slice(2, 0, 3)


def test_sharding_needs_an_initialised_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match="init_process_group"):
        ShardedParametrization(None)  # type: ignore[arg-type]
