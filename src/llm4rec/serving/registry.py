"""A model registry on disk: numbered, immutable copies of bundles, one of them current, atomic publish and rollback.

Layout::

    ROOT/versions/v000001/   a full copy of a bundle (see :mod:`llm4rec.models.bundle`), never changed afterwards
    ROOT/versions/v000002/
    ROOT/CURRENT.json        {"version": "v000002", "previous": ["v000001"], "published": {"v000001": "<UTC>", ...}}
    ROOT/.lock               taken (fcntl.flock) by whoever publishes, activates or rolls back

A bundle is loaded and checked before anything is written; its copy appears
under ``versions/`` by one rename and is checked again against the manifest
that was loaded; ``CURRENT.json`` is replaced atomically, so a reader sees the
old current version or the new one, never half of either. A service polls
:meth:`ModelRegistry.stamp` and reloads when it changes (keeping the model it
has if the new one does not load).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4rec._atomic import atomic_write_text
from llm4rec.errors import InputError

if TYPE_CHECKING:
    from llm4rec.models import Recommender

__all__ = ["ModelRegistry"]

CURRENT = "CURRENT.json"
VERSIONS = "versions"
LOCK = ".lock"
_VERSION = re.compile(r"v\d{6,}")
_PUBLISH_HINT = "Publish a bundle first: llm4rec publish BUNDLE --registry ROOT."


def _version_name(number: int) -> str:
    return f"v{number:06d}"


class ModelRegistry:
    """Versioned model bundles under ``root`` (which need not exist until the first :meth:`publish`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, path: str | Path) -> ModelRegistry:
        """The registry rooted at ``path``; InputError if ``path`` is not one (a plain bundle is not)."""
        path = Path(path)
        if (path / CURRENT).is_file() or (path / VERSIONS).is_dir():
            return cls(path)
        what = "a model bundle, not a model registry" if (path / "bundle.json").is_file() else \
            "not a model registry" if path.exists() else "no model registry here (the path does not exist)"
        raise InputError(what, path=path, expected=f"a directory with {CURRENT} or {VERSIONS}/",
                         hint="Publish it first: llm4rec publish BUNDLE --registry ROOT.")

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    # ------------------------------------------------------------ reading
    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS

    def versions(self) -> list[str]:
        """Every published version, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()]
        return sorted(names, key=lambda n: int(n[1:]))

    def current(self) -> tuple[str, Path] | None:
        """(version, its directory) of the current version, or None when none is."""
        version = self._state()["version"]
        return None if version is None else (version, self.versions_dir / version)

    def history(self) -> dict[str, Any]:
        """The content of ``CURRENT.json``: ``version`` (or None), ``previous`` (most recent first), ``published``."""
        return self._state()

    def stamp(self) -> str:
        """A token that changes whenever ``CURRENT.json`` does ("" before anything is published): poll it to reload.

        It is the SHA-256 of the file's content, so two states that point at
        the same versions give the same stamp (version directories never change).
        """
        try:
            data = (self.root / CURRENT).read_bytes()
        except FileNotFoundError:
            return ""
        return hashlib.sha256(data).hexdigest()

    def path(self, version: str) -> Path:
        """The directory of an existing ``version``; InputError naming it otherwise."""
        if not isinstance(version, str) or not _VERSION.fullmatch(version) or \
                not (self.versions_dir / version).is_dir():
            known = self.versions()
            raise InputError("no such model version in the registry", path=self.root, value=version,
                             expected="one of: " + ", ".join(known) if known else "a published version (none yet)")
        return self.versions_dir / version

    def load(self, version: str | None = None) -> tuple[str, Recommender]:
        """(version, model) of the current version, or of ``version``; InputError naming the file if it is corrupt."""
        from llm4rec.models import Recommender

        if version is None:
            current = self.current()
            if current is None:
                raise InputError("the registry has no current model version", path=self.root,
                                 expected="a published version", hint=_PUBLISH_HINT)
            version, path = current
        else:
            path = self.path(version)
        return version, Recommender.load(path)

    # ------------------------------------------------------------ writing
    def publish(self, bundle_dir: str | Path, *, activate: bool = True) -> str:
        """Copy the bundle at ``bundle_dir`` in as the next version and (with ``activate``) make it current.

        The bundle is loaded first (an InputError naming the bad file, and
        nothing written, if it does not load); the copy appears whole or not
        at all. Returns the new version's name. Safe against other publishers,
        threads or processes, on the same root.
        """
        from llm4rec.models import Recommender
        from llm4rec.models.bundle import MANIFEST, bundle_files

        source = Path(bundle_dir)
        manifest = source / MANIFEST
        seen = manifest.read_bytes() if manifest.is_file() else None
        Recommender.load(source)  # every file present, unmodified, and a model that loads
        names = bundle_files(source)  # the manifest last; a carried encoder's files too
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        incoming = self.versions_dir / f".incoming-{os.getpid()}-{uuid.uuid4().hex}"
        os.mkdir(incoming)  # 0777 less the umask, as the files copied into it
        try:
            for name in names:
                (incoming / name).parent.mkdir(parents=True, exist_ok=True)
                _copy(source / name, incoming / name)
            self._check_copy(source, incoming, seen)
            with self._locked():
                state = self._state()
                named = [*self.versions(), *state["published"], *state["previous"], state["version"]]
                number = max((int(n[1:]) for n in named if isinstance(n, str) and _VERSION.fullmatch(n)),
                             default=0) + 1  # never the name of a version deleted by hand
                while True:  # the lock keeps publishers apart; this also steps over a name made by hand
                    version = _version_name(number)
                    try:
                        os.rename(incoming, self.versions_dir / version)  # fails on an existing non-empty dir
                        break
                    except OSError:
                        if not (self.versions_dir / version).exists():
                            raise
                        number += 1
                _fsync_dir(self.versions_dir)
                state["published"][version] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                if activate:
                    state = _pointed_at(state, version)
                self._write_state(state)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        return version

    def activate(self, version: str) -> None:
        """Make an existing ``version`` current (the old current one goes first in ``previous``).

        Its files are checked first (InputError naming a missing or modified
        one); activating the current version changes nothing.
        """
        from llm4rec.models.bundle import read_manifest

        read_manifest(self.path(version))
        with self._locked():
            state = self._state()
            if state["version"] != version:
                self._write_state(_pointed_at(state, version))

    def rollback(self) -> str:
        """Make the most recent previous version current again and return it; InputError if there is none.

        The version rolled back from leaves the history (it stays in
        ``versions/`` and can be activated again). The target's files are
        checked first: a missing or modified file is an InputError naming it,
        and nothing changes.
        """
        from llm4rec.models.bundle import read_manifest

        if not (self.root / CURRENT).is_file():
            raise InputError("nothing to roll back: no version was ever made current", path=self.root,
                             expected="a registry with a published version", hint=_PUBLISH_HINT)
        with self._locked():
            state = self._state()
            if not state["previous"]:
                raise InputError(f"nothing to roll back to: {state['version'] or 'no version'} is current and no "
                                 "version was current before it", path=self.root / CURRENT,
                                 expected="a previous version",
                                 hint="Activate a version by name instead (versions: "
                                      + (", ".join(self.versions()) or "none") + ").")
            target, *rest = state["previous"]
            read_manifest(self.path(target))
            self._write_state({**state, "version": target, "previous": rest})
        return target

    # ------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry's lock (between threads too: each call opens its own file description)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _state(self) -> dict[str, Any]:
        path = self.root / CURRENT
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": None, "previous": [], "published": {}}
        try:
            state = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid JSON ({exc})", path=path, expected="the file the registry wrote") from None

        def is_version(v: Any) -> bool:
            return isinstance(v, str) and _VERSION.fullmatch(v) is not None

        if not isinstance(state, dict) or not (state.get("version") is None or is_version(state.get("version"))) \
                or not isinstance(state.get("previous"), list) or not all(map(is_version, state["previous"])) \
                or not isinstance(state.get("published"), dict):
            raise InputError("not a registry state", path=path,
                             expected='{"version": "v000001" or null, "previous": [versions], "published": {...}}')
        return {"version": state["version"], "previous": list(state["previous"]),
                "published": dict(state["published"])}

    def _write_state(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.root / CURRENT, json.dumps(state, indent=2) + "\n")

    @staticmethod
    def _check_copy(source: Path, copy: Path, seen: bytes | None) -> None:
        """The copy holds exactly the bundle that was loaded (its manifest unchanged, every file matching it)."""
        from llm4rec.models.bundle import MANIFEST, read_manifest

        changed = InputError("the bundle changed while it was being published", path=source,
                             expected="a bundle nothing writes to", hint="Publish it again.")
        if seen is None or (copy / MANIFEST).read_bytes() != seen:
            raise changed
        try:
            read_manifest(copy)
        except InputError:
            raise changed from None


def _pointed_at(state: dict[str, Any], version: str) -> dict[str, Any]:
    """``state`` with ``version`` current and the old current version first in ``previous``."""
    old = state["version"]
    previous = [] if old is None or old == version else [old]
    previous += [v for v in state["previous"] if v not in (old, version)]
    return {**state, "version": version, "previous": previous}


def _copy(source: Path, target: Path) -> None:
    """Copy one file, flushed to disk (permissions 0666 less the umask, as a new file gets)."""
    with source.open("rb") as src, target.open("xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
