"""A full disk, made by the operating system: every write that would grow a file past a size fails.

`disk_full_after(n)` lowers this process's file-size limit (RLIMIT_FSIZE): the kernel then refuses
the bytes past `n` in any file, with EFBIG instead of a full disk's ENOSPC, exactly where the
write happens (Python, Rust safetensors or C alike), and leaves what was written before it.
"""

import contextlib
import errno
import resource
import signal


@contextlib.contextmanager
def disk_full_after(limit_bytes: int):
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the refused write."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.EFBIG, errno.ENOSPC):
            return True
        if "File too large" in str(error) or "No space left" in str(error):  # from Rust, as text
            return True
        error = error.__cause__ or error.__context__
    return False
