"""Write files and directories atomically (a temporary sibling, then a rename), with the user's umask.

Nothing here removes a file or directory it did not create, unless the
caller passes ``replace=True`` for a directory it owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from llm4rec.errors import InputError

__all__ = ["atomic_dir", "atomic_file", "atomic_write_bytes", "atomic_write_text", "check_output_files", "move_dir",
           "write_output_files"]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it becomes ``path`` only if the block succeeds.

    Readers see the old file or the new one, never half. The file gets the
    permissions a plain ``open(path, "w")`` would give (0666 less the umask),
    not the 0600 of a temporary file; on failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` only if the block succeeds.

    ``path`` must not exist or be an empty directory; with ``replace=True``
    (for a directory the caller has checked is its own output) an existing
    one is replaced whole. The new directory gets 0777 less the umask.
    """
    path = Path(path)
    if path.exists() and not replace and not (path.is_dir() and not any(path.iterdir())):
        raise InputError("the output directory exists and is not empty", path=path,
                         expected="a new or empty directory (nothing in it is removed)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        move_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_dir(source: str | Path, path: str | Path) -> None:
    """Rename the finished directory ``source`` to ``path`` (a sibling), replacing an existing ``path`` whole.

    The old ``path`` is moved aside first and removed only once ``source`` is in its place, so ``path`` is
    always the old directory or the new one.
    """
    path = Path(path)
    if path.exists():
        backup = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, backup / path.name)
        os.replace(source, path)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(source, path)


def check_output_files(directory: str | Path, names: Iterable[str], *, overwrite: bool = False,
                       option: str = "--out") -> Path:
    """Check, before any work, that ``names`` can be written into ``directory``.

    ``directory`` may exist (its other files are left alone) or will be
    created. A file of ours already there is refused unless ``overwrite``.
    Raises InputError naming the path and the command-line ``option``.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{option} names a file, not a directory", path=directory,
                         expected="a directory (new or existing)")
    if not overwrite:
        taken = [n for n in names if (directory / n).exists()]
        if taken:
            raise InputError(f"{option}: {', '.join(taken)} already exist(s) here", path=directory,
                             expected="new file names", hint="Add --overwrite to replace them (nothing else in "
                                                             "the directory is touched).")
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{option}: a part of the path is a file, not a directory", path=probe,
                         expected="a directory path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{option}: no permission to write here", path=probe, expected="a writable directory")
    return directory


def write_output_files(directory: str | Path, files: dict[str, bytes], *, overwrite: bool = False,
                       option: str = "--out") -> list[Path]:
    """Write ``files`` (name -> bytes) into ``directory``, each atomically; touch nothing else there."""
    directory = check_output_files(directory, files, overwrite=overwrite, option=option)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in files.items():
        atomic_write_bytes(directory / name, data)
        out.append(directory / name)
    return out
