"""A read-only folder, made by the operating system: chmod 0o555, and for root (whom chmod does
not stop) the immutable attribute (chattr +i); skipped where neither holds."""

import contextlib
import os
import stat
import subprocess

import pytest


@contextlib.contextmanager
def read_only(folder):
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    immutable = False
    try:
        if _writable(folder):  # root
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not immutable or _writable(folder):
                pytest.skip("no way to make a folder read-only here")
        yield folder
    finally:
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
