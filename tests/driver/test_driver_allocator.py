"""The driver's malloc setting (dynamat_driver/allocator.py): a freed large buffer is reused, not faulted
in again. Measured as the kernel counts it (minor page faults), in fresh processes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# ten rounds of allocating, touching and freeing 64 MB, as a model call does with its edge tensors
CYCLE = """
import json, resource, sys
sys.path.insert(0, {drivers!r})
from dynamat_driver.allocator import keep_freed_memory
said = keep_freed_memory() if {tuned} else "default"
import numpy as np
np.ones(8 << 20)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = np.ones(8 << 20)
    del a
print(json.dumps({{"said": said, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0}}))
"""
FRESH = 10 * (64 << 20) // (2 << 20)  # page faults of ten fresh 64 MB buffers, in 2 MB pages
DRIVERS = os.path.join(os.path.dirname(__file__), "..", "..", "drivers")


def cycle(tuned: bool, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CYCLE.format(drivers=DRIVERS, tuned=tuned)], env={**clean, **env},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


def test_freed_memory_is_reused_without_page_faults():
    default, tuned = cycle(False), cycle(True)
    # glibc maps and unmaps each 64 MB buffer, so each round faults it in again: at least once per page,
    # 2 MB pages where numpy asks for transparent huge pages, 4 kB pages otherwise
    assert default["faults"] >= FRESH, default
    assert tuned["faults"] < FRESH / 100, tuned
    assert tuned["said"].startswith("glibc malloc: no mmap, no trim")


def test_malloc_settings_of_the_user_are_left_alone():
    mine = cycle(True, MALLOC_TRIM_THRESHOLD_="131072")
    assert mine["said"] == "glibc malloc as the environment sets it (MALLOC_TRIM_THRESHOLD_)"
    assert mine["faults"] >= FRESH, mine
