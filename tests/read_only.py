"""A read-only folder, made by the operating system: chmod 0o555. Root, whom chmod does not stop,
first gives up the capabilities that let it write anyway (CAP_DAC_OVERRIDE and friends) for the
calling thread while the block runs; where that is refused, the folder gets the immutable attribute
(chattr +i). Where none of that holds the test fails, saying so: it never skips silently."""

import contextlib
import ctypes
import os
import stat
import subprocess

import pytest

# linux/capability.h: capget/capset on the calling thread (pid 0), version 3 (two 32-bit words).
_CAPABILITY_VERSION_3 = 0x20080522
_DAC_CAPABILITIES = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capabilities(new_effective=None):
    """This thread's effective capabilities (word 0); with `new_effective`, set them first. None
    where the C library or the kernel refuses."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = _Header(_CAPABILITY_VERSION_3, 0), (_Data * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            return None
        if new_effective is not None:
            data[0].effective = new_effective
            if libc.capset(ctypes.byref(header), data) != 0:
                return None
        return data[0].effective
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def read_only(folder):
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    restore_caps, immutable = None, False
    try:
        if _writable(folder):  # root: chmod alone does not stop it
            before = _capabilities()
            if before is not None and _capabilities(before & ~_DAC_CAPABILITIES) is not None:
                restore_caps = before
            if _writable(folder):
                immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if _writable(folder):
                pytest.fail("no way to make a folder read-only here: chmod does not stop this user, dropping "
                            "CAP_DAC_OVERRIDE was refused and so was chattr +i. Run the tests as a non-root user.")
        yield folder
    finally:
        if restore_caps is not None:
            _capabilities(restore_caps)
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def _writable(folder) -> bool:
    try:
        (folder / ".probe").mkdir()
    except OSError:
        return False
    os.rmdir(folder / ".probe")
    return True
