"""Fresh output folders, and files written whole or not at all.

Every file the project writes goes through `write_atomically` (a temporary file in the same
folder, then a rename) and every saved folder through `finished_folder` (written under a
temporary name, then renamed into place): a full disk or an interrupt leaves the old state or
the whole new one, never half a file. A leftover temporary is named `.<name>.partial-<random>`.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import shutil
from pathlib import Path

PARTIAL = ".partial-"  # in the names of unfinished temporaries: ".results.csv.partial-x1y2"


def check_folder(folder, name: str = "folder") -> Path:
    """`folder` as a Path: it must be a path (str or os.PathLike) that is a folder or not there yet."""
    if isinstance(folder, bool) or not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise TypeError(f"{name} must be a folder path (a str or pathlib.Path), not {type(folder).__name__} {folder!r:.60}.")
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise FileNotFoundError(f"{name}={str(folder)!r} is a symbolic link to {os.readlink(folder)!r}, which does not "
                                f"exist: create that folder, or choose another {name}.")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{name}={str(folder)!r} is a file, not a folder: choose a folder path.")
    return folder


def fresh_run_dir(root) -> Path:
    """Create and return root/run-001 (or the next unused number): results never overwrite."""
    root = check_folder(root, "root")
    with writable(root, "root"):
        root.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"run-(\d+)", p.name))]
        number = max(taken, default=0) + 1
        while True:
            folder = root / f"run-{number:03d}"
            try:
                folder.mkdir()  # atomic: two runs started at once get different folders
                return folder
            except FileExistsError:
                number += 1


@contextlib.contextmanager
def writable(folder, name: str = "folder"):
    """Within the block, a refused write (a read-only folder or disk, no permission) is one
    PermissionError naming the argument `name` and its folder, instead of the OS's bare words; a
    path through a file is one NotADirectoryError."""
    try:
        yield
    except NotADirectoryError as e:
        raise NotADirectoryError(f"{name}={str(folder)!r} cannot be made: a part of that path is a file, not a "
                                 f"folder ({e.filename}).") from None
    except OSError as e:
        if not isinstance(e, PermissionError) and e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise PermissionError(f"{name}={str(folder)!r} cannot be written to ({e.strerror or e}): choose a "
                              f"folder you may write in.") from None


def write_atomically(path, data: bytes | str, *, overwrite: bool = False) -> Path:
    """Write `data` to `path` whole or not at all: into a temporary file beside it, flushed to
    disk, then renamed onto `path`. With overwrite=False an existing `path` is never replaced
    (FileExistsError). A failure (disk full, interrupt) removes the temporary and leaves `path`
    as it was."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not overwrite and os.path.lexists(path):  # a dangling symbolic link takes the name too
        raise FileExistsError(f"{path} already exists: nothing is overwritten.")
    temporary = _partial_name(path)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:  # (0o666 less the umask: the permissions a plain open() gives, unlike mkstemp's 0o600)
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            _link_into_place(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return path


def _link_into_place(temporary: Path, path: Path) -> None:
    """Give the finished `temporary` the name `path`, which must still be free (FileExistsError)."""
    try:
        os.link(temporary, path)  # atomic and exclusive: fails if someone took the name
    except FileExistsError:
        raise FileExistsError(f"{path} already exists: nothing is overwritten.") from None
    except OSError:  # a filesystem without hard links (FAT, some network drives)
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists: nothing is overwritten.") from None
        os.replace(temporary, path)


@contextlib.contextmanager
def finished_file(path):
    """For a writer that wants a file name (not bytes): yield a fresh temporary name beside `path`;
    when the block succeeds, flush it to disk and give it the name `path`, which must be free
    (FileExistsError: nothing is overwritten, and of two writers the second is told so); on any
    failure remove it. `path` appears whole or not at all."""
    path = Path(path)
    if os.path.lexists(path):
        raise FileExistsError(f"{path} already exists: choose a new file name (nothing is overwritten).")
    temporary = _partial_name(path)
    try:
        yield temporary
        handle = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
        _link_into_place(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


@contextlib.contextmanager
def finished_folder(folder):
    """Yield a temporary sibling folder to write into; on success rename it to `folder` (which
    must not exist, or be empty), on failure remove it: `folder` appears whole or not at all.
    A symbolic link to a folder is followed: the save lands in the folder it points to."""
    folder = Path(folder)
    if folder.is_symlink():
        if not folder.is_dir():
            raise FileExistsError(f"{folder} is a symbolic link to {os.readlink(folder)!r}, which is not a folder: "
                                  "choose another folder (nothing is overwritten).")
        folder = folder.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = _partial_name(folder)
    scratch.mkdir()  # 0o777 less the umask, as a plain mkdir (mkdtemp's would be 0o700)
    try:
        yield scratch
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # an empty folder made for the save: take its place
        os.rename(scratch, folder)  # fails rather than replace a folder someone filled meanwhile
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _partial_name(path: Path) -> Path:
    """A fresh temporary name beside `path`: hidden, and saying whose unfinished write it is."""
    return path.parent / f".{path.name[:100]}{PARTIAL}{secrets.token_hex(4)}"


def leftovers(folder, name: str) -> list[Path]:
    """Unfinished temporaries of `name` in `folder` (what an interrupted write left)."""
    folder = Path(folder)
    return sorted(folder.glob(f".{glob.escape(name[:100])}{PARTIAL}*")) if folder.is_dir() else []
