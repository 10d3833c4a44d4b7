"""The driver keeps the memory it frees (glibc's malloc), so a model call stops paying page faults.

An MLIP's forward and backward allocate and free the same large tensors on every call (SevenNet-0, 32
atoms: ~17 MB edge-feature tensors, ~95 MB of fresh pages per call). glibc serves large requests with
``mmap`` and returns them with ``munmap``, so each call faults every page in again and the kernel
zeroes it: 23,000 minor faults and ~30 ms of system time in a 300 ms call; 21 % of a 256-atom call.
A driver is one long-lived process whose allocations repeat step after step, so it tells malloc to
serve everything from its heap (``M_MMAP_MAX = 0``) and never to give the heap back (``M_TRIM_THRESHOLD
= -1``, "disables trimming completely", mallopt(3)). The process keeps its peak size, which it reaches
again at the next step anyway. Allocation changes no arithmetic: torch aligns its buffers itself.

Left alone where malloc is not glibc's, and where the user set glibc's malloc options themselves
(``MALLOC_*_`` or ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "GLIBC_TUNABLES")


def keep_freed_memory() -> str:
    """Sets glibc's malloc to serve large requests from the heap and keep it; returns what was done,
    in words (for the timing file)."""
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")  # what platform.libc_ver() asks first
    except (ValueError, OSError, AttributeError):  # not a glibc system
        glibc = False
    if not glibc:
        return "system malloc (not glibc: left as it is)"
    mine = [k for k in _USER_SETTINGS if k in os.environ]
    if mine:
        return f"glibc malloc as the environment sets it ({', '.join(mine)})"
    import ctypes  # here, not at import: the driver's --list and --help need none of this

    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    except (OSError, AttributeError):
        ok = False
    return "glibc malloc: no mmap, no trim (freed memory kept for the next call)" if ok else "glibc malloc (mallopt refused)"


__all__ = ["keep_freed_memory"]
