"""The memory limit reads what a new allocation can get: Linux's ``MemAvailable``, not ``MemFree``."""

from __future__ import annotations

from mms_manifolds.linalg.limits import available_memory_bytes, meminfo_available_bytes

MEMINFO = """MemTotal:       24684000 kB
MemFree:          900000 kB
MemAvailable:   17000000 kB
Buffers:           12000 kB
Cached:         16000000 kB
"""


def test_mem_available_is_read_in_bytes():
    assert meminfo_available_bytes(MEMINFO) == 17000000 * 1024


def test_a_meminfo_without_mem_available_gives_none():
    assert meminfo_available_bytes("MemTotal: 1 kB\nMemFree: 1 kB\n") is None


def test_the_cpu_has_a_positive_amount_available():
    available = available_memory_bytes("cpu")
    assert isinstance(available, int) and available > 0
