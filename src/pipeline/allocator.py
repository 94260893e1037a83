"""How the process's C allocator treats the large arrays a step frees.

glibc's malloc serves a request above its mmap threshold (adaptive, at most 32 MiB) with a
fresh ``mmap`` and unmaps it on ``free``, and hands the top of the heap back to the kernel
(``trim``) once more than a threshold is free there. A convolutional network allocates and
frees its activations and their gradients every step, so every step the kernel maps and
zeroes the same pages again: the particle-flow UNet (64 events, 32 channels x 64 x 64 cells
x 4 B = 32 MiB a feature map) spent most of its system time there, and trainings and the
image building run faster with freed memory kept in the process (measured in
docs/benchmarks.md). PyTorch's CPU allocator is malloc itself, without a cache
of its own; the memory kept is about what a step used at its peak (the heap grows to it in the
first few steps), which the process holds while it runs anyway. The ``pipeline`` command sets
it for every sub-command, and ``build_trainer`` for trainings started from Python.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
RETAINED_BYTES = 1 << 30  # mallopt takes a C int; 1 GiB exceeds any single tensor of our trainings


def retain_freed_memory(threshold: int = RETAINED_BYTES) -> bool:
    """Serve allocations up to ``threshold`` bytes from the heap and keep up to ``threshold``
    freed bytes there instead of returning them to the kernel (glibc ``mallopt``; the
    numbers computed do not change). Returns True if set, False where the C library is not
    glibc (macOS, musl), whose allocators are left as they are."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
