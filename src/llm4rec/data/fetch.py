"""Download public datasets into a local cache (``llm4rec data fetch NAME``).

Each entry of :data:`DATASETS` names an archive at its official address with its
published SHA-256. :func:`fetch_dataset` downloads it into the cache directory
(``$LLM4REC_CACHE``, else ``~/.cache/llm4rec``) through a ``<file>.part`` file
that a later call resumes with an HTTP range request, verifies the digest, keeps
the verified archive as ``<cache>/<file>`` and extracts the archive's data folder
atomically into ``<cache>/<name>/``. An archive placed there by hand is verified
and used without any network access. ``LLM4REC_FETCH_BASE_URL`` replaces the
address up to the file name, for mirrors and tests.

Only the standard library speaks HTTP, so fetching adds no dependency.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llm4rec import __version__
from llm4rec._atomic import atomic_dir
from llm4rec.errors import InputError

__all__ = ["DATASETS", "RemoteDataset", "default_cache_dir", "fetch", "fetch_dataset"]

_CHUNK = 1 << 16


@dataclass(frozen=True)
class RemoteDataset:
    """A public dataset archive: where it lives, its digest and which folder holds the data.

    ``member`` is the folder inside the zip whose contents become ``<cache>/<name>/``
    (``""`` for the archive root); ``format`` names the loader that reads them.
    """

    name: str
    url: str
    sha256: str
    member: str
    size: int | None = None
    format: str = "movielens"
    description: str = ""
    licence: str = ""

    @property
    def filename(self) -> str:
        """The archive's file name, the last segment of its address."""
        return self.url.rsplit("/", 1)[-1]


_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
_MOVIELENS_LICENCE = (
    "GroupLens usage licence: research use; cite Harper & Konstan (2015); no redistribution "
    "or commercial use without permission (README in the archive)"
)


def _movielens(name: str, sha256: str, size: int, member: str, description: str) -> RemoteDataset:
    return RemoteDataset(name=name, url=f"{_GROUPLENS}{name}.zip", sha256=sha256, member=member,
                         size=size, description=description, licence=_MOVIELENS_LICENCE)


# Digests and sizes as published in TensorFlow Datasets
# (tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt) and, identically,
# in OmniRec (ISG-Siegen/OmniRec, src/omnirec/data_loaders/movielens_*.py); ml-10m's
# SHA-256 is OmniRec's (its size is the one recorded next to that digest elsewhere).
DATASETS: dict[str, RemoteDataset] = {d.name: d for d in (
    _movielens("ml-100k", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
               4_924_029, "ml-100k", "MovieLens 100K: 100,000 ratings of 1,682 movies by 943 users (1998)"),
    _movielens("ml-1m", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
               5_917_549, "ml-1m", "MovieLens 1M: 1,000,209 ratings of 3,706 movies by 6,040 users (2003)"),
    _movielens("ml-10m", "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
               65_566_137, "ml-10M100K", "MovieLens 10M: 10 million ratings and 100,000 tags (2009)"),
    _movielens("ml-20m", "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
               198_702_078, "ml-20m", "MovieLens 20M: 20 million ratings and 465,000 tags (2016)"),
    _movielens("ml-25m", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
               261_978_986, "ml-25m", "MovieLens 25M: 25 million ratings and 1 million tags (2019)"),
    _movielens("ml-latest-small", "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
               978_202, "ml-latest-small",
               "MovieLens latest small: 100,836 ratings of 9,742 movies by 610 users (2018 release)"),
)}


def default_cache_dir() -> Path:
    """``$LLM4REC_CACHE`` when set, else ``~/.cache/llm4rec``."""
    env = os.environ.get("LLM4REC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llm4rec"


def fetch_dataset(name: str, cache_dir: str | Path | None = None, *, url: str | None = None,
                  force: bool = False, progress: bool = True, timeout: float = 30) -> Path:
    """Download, verify and extract the registered dataset ``name``; return its data folder.

    See :func:`fetch` for the arguments; an unknown name is an InputError listing the known ones.
    """
    remote = DATASETS.get(name)
    if remote is None:
        raise InputError("unknown dataset", value=name, expected="one of " + ", ".join(DATASETS))
    return fetch(remote, cache_dir, url=url, force=force, progress=progress, timeout=timeout)


def fetch(remote: RemoteDataset, cache_dir: str | Path | None = None, *, url: str | None = None,
          force: bool = False, progress: bool = True, timeout: float = 30) -> Path:
    """Make ``remote`` available as ``<cache_dir>/<name>/`` and return that folder.

    Does nothing when the folder exists (unless ``force``, which downloads again and
    replaces it once the new archive verifies). ``url`` overrides the address; else
    ``$LLM4REC_FETCH_BASE_URL`` replaces everything before the file name. ``timeout`` is
    in seconds per network operation. Network failures, HTTP errors, a digest mismatch
    and unsafe archive paths raise InputError; the folder is never left half written.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / remote.name
    if target.is_dir() and not force:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the cache directory: {exc.strerror or exc}", path=cache,
                         hint="Set LLM4REC_CACHE or pass another cache directory") from None
    archive = cache / remote.filename
    part = archive.with_name(archive.name + ".part")
    if force:
        part.unlink(missing_ok=True)
    if force or not archive.exists():
        source = url or _source_url(remote)
        _download(source, part, archive=archive, size=remote.size, progress=progress,
                  timeout=timeout, label=remote.name)
        actual = _sha256(part)
        if actual != remote.sha256:
            part.unlink()
            raise InputError(f"{source}: SHA-256 mismatch, the download was deleted", value=actual,
                             expected=remote.sha256,
                             hint="Run again; if it persists the file upstream has changed")
        os.replace(part, archive)
    else:
        actual = _sha256(archive)
        if actual != remote.sha256:
            raise InputError("SHA-256 mismatch", path=archive, value=actual, expected=remote.sha256,
                             hint="Delete the file and run again to download it")
    _extract(archive, remote.member, target)
    return target


def _source_url(remote: RemoteDataset) -> str:
    base = os.environ.get("LLM4REC_FETCH_BASE_URL")
    return f"{base.rstrip('/')}/{remote.filename}" if base else remote.url


def _download(url: str, part: Path, *, archive: Path, size: int | None, progress: bool,
              timeout: float, label: str) -> None:
    """Append ``url`` to ``part`` from its current length, or start over if the server ignores ranges."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"llm4rec/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return  # nothing left to send: the part file is whole, and the digest will tell
        what = "was not found" if exc.code == 404 else "was refused"
        raise InputError(f"{url} {what} (HTTP {exc.code} {exc.reason})",
                         hint=f"Check the address, or download the file by hand and place it at {archive}, "
                              "then run again") from None
    except ValueError as exc:
        raise InputError(f"not a download address ({exc})", value=url, expected="an http(s) URL") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        text = (reason.strerror if isinstance(reason, OSError) else None) or str(reason)
        raise InputError(f"cannot download {url}: {text}",
                         hint="Check the network connection and proxy settings, or download the file by "
                              f"hand and place it at {archive}, then run again (set LLM4REC_CACHE to use "
                              "another cache directory)") from None
    with response:
        if response.status != 206:
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else size
        received = offset
        bar = _progress_bar(progress, label, expected, offset)
        with part.open("ab" if offset else "wb") as out, bar as advance:
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    advance(len(chunk))
                problem = None
            except (OSError, http.client.HTTPException) as exc:
                problem = str(exc) or type(exc).__name__
    if problem is None and length is not None and received < expected:
        problem = "the connection closed early"
    if problem is not None:
        of = f" of {expected:,}" if expected else ""
        raise InputError(f"download of {url} stopped after {received:,}{of} bytes: {problem}",
                         hint=f"Run again to resume from {part}")


@contextlib.contextmanager
def _progress_bar(show: bool, label: str, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
    """Yield a function that advances a rich progress bar on stderr by n bytes (a no-op if not ``show``)."""
    if not show:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(archive: Path, member: str, target: Path) -> None:
    """Extract the ``member`` folder of the zip ``archive`` as ``target``, all or nothing."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise InputError(f"not a readable zip archive ({exc})", path=archive) from None
    with zf, atomic_dir(target, replace=True) as tmp:  # the caller checked: absent, or ours with force
        found = False
        for info in zf.infolist():
            parts = _safe_parts(info.filename, archive)
            if member:
                if parts[0] != member:
                    continue
                parts = parts[1:]
            if not parts:
                continue
            found = True
            dest = tmp.joinpath(*parts)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        if not found:
            raise InputError(f"the archive has no folder {member!r}", path=archive,
                             expected="the dataset's files under that folder")


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    """The path segments of a zip member, refusing absolute paths, '..' and drive letters."""
    normal = name.replace("\\", "/")
    parts = PurePosixPath(normal).parts
    if not parts or normal.startswith("/") or any(p == ".." or ":" in p for p in parts):
        raise InputError("unsafe member path in the archive", path=archive, value=name,
                         expected="a relative path that stays inside the extraction folder")
    return parts
