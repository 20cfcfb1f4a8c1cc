"""How this process's C heap treats freed memory: every `stage` command keeps it for reuse (stage.cli)."""

from __future__ import annotations


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks for reuse instead of returning them to the OS (process-wide). Every
    denoising step, decode, encode and training step frees and reallocates the same large activation buffers,
    and page-faulting them in again each time was system time, not arithmetic (measured here on 2 cores: a
    12-stream rollout decode 51-58 -> 25-35 ms per frame; `stage encode` of the training split 51-60 -> 38 s
    on 2 threads, 89-94 -> 63 s on 1; 300 autoencoder steps 48 -> 43 s; reconstruct 94 -> 86 s; stage-1
    training unchanged). The arithmetic, hence every output, is unchanged; resident memory stays at its peak
    (70-100 MB more for those commands). False where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 1 << 30))
