"""Dataset fetching against a local HTTP server on 127.0.0.1: never the real internet."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading
import zipfile
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llm4rec.data.fetch import (
    DATASETS,
    RemoteDataset,
    default_cache_dir,
    fetch,
    fetch_dataset,
)
from llm4rec.errors import InputError

U_DATA = "".join(f"{u}\t{i}\t{(u + i) % 5 + 1}\t{881250949 + u * i}\n" for u in range(1, 40) for i in range(1, 60))


def make_zip(members: dict[str, str]) -> bytes:
    """A stored (uncompressed) zip of ``members``, so a byte offset cuts it predictably."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ServerState:
    """What the server serves, what it saw, and the faults it is told to inject."""

    files: dict[str, bytes]
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    drop_after: int | None = None  # cut the next response after this many body bytes
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``ServerState.files`` with single ``bytes=N-`` range support."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        requested = self.headers.get("Range")
        state.requests.append((self.path, requested))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if requested and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if state.drop_after is not None:
            payload, state.drop_after = payload[: state.drop_after], None
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path):
    """No proxies, no inherited cache or mirror settings."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "LLM4REC_FETCH_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def archive() -> bytes:
    return make_zip({"toy/": "", "toy/u.data": U_DATA, "toy/README": "a toy\n", "__MACOSX/toy/._u.data": "x"})


@pytest.fixture
def server(archive):
    state = ServerState(files={"/data/toy.zip": archive})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def toy(server, archive, **changes) -> RemoteDataset:
    remote = RemoteDataset(name="toy", url=f"{server.base}/data/toy.zip", sha256=sha256(archive), member="toy")
    return replace(remote, **changes)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_extracts_the_member_folder_and_is_idempotent(server, archive, tmp_path, capsys):
    cache = tmp_path / "cache"
    out = fetch(toy(server, archive), cache, progress=True)
    assert out == cache / "toy"
    assert (out / "u.data").read_text() == U_DATA
    assert sorted(p.name for p in out.iterdir()) == ["README", "u.data"]
    assert (cache / "toy.zip").read_bytes() == archive
    assert sorted(p.name for p in cache.iterdir()) == ["toy", "toy.zip"]
    assert server.requests == [("/data/toy.zip", None)]
    assert "toy" in capsys.readouterr().err  # the progress bar goes to stderr

    assert fetch(toy(server, archive), cache, progress=False) == out
    assert len(server.requests) == 1


def test_checksum_mismatch_deletes_the_download_and_names_both_digests(server, archive, tmp_path):
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(InputError) as err:
        fetch(toy(server, archive, sha256=wrong), cache, progress=False)
    message = str(err.value)
    assert wrong in message and sha256(archive) in message and "/data/toy.zip" in message
    assert list(cache.iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request(server, archive, tmp_path):
    cache = tmp_path / "cache"
    half = len(archive) // 2
    server.drop_after = half
    with pytest.raises(InputError, match=rf"stopped after {half:,} of {len(archive):,} bytes.*Run again to resume"):
        fetch(toy(server, archive), cache, progress=False)
    assert (cache / "toy.zip.part").stat().st_size == half
    assert not (cache / "toy").exists()

    out = fetch(toy(server, archive), cache, progress=False)
    assert server.requests[-1] == ("/data/toy.zip", f"bytes={half}-")
    assert (out / "u.data").read_text() == U_DATA
    assert not (cache / "toy.zip.part").exists()


def test_server_that_ignores_ranges_restarts_from_zero(server, archive, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.zip.part").write_bytes(b"stale bytes of another file")
    server.ignore_range = True
    out = fetch(toy(server, archive), cache, progress=False)
    assert server.requests[-1][1] == "bytes=27-"
    assert (out / "u.data").read_text() == U_DATA


def test_whole_part_file_is_verified_after_416(server, archive, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.zip.part").write_bytes(archive)
    out = fetch(toy(server, archive), cache, progress=False)
    assert server.requests == [("/data/toy.zip", f"bytes={len(archive)}-")]
    assert (out / "u.data").read_text() == U_DATA


def test_http_404_is_a_clear_error(server, archive, tmp_path):
    url = f"{server.base}/data/missing.zip"
    with pytest.raises(InputError, match=r"missing\.zip was not found \(HTTP 404") as err:
        fetch(toy(server, archive), tmp_path / "cache", url=url, progress=False)
    assert str(tmp_path / "cache" / "toy.zip") in str(err.value)
    assert not (tmp_path / "cache" / "toy").exists()


def test_connection_refused_says_what_to_do(archive, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/toy.zip"
    remote = RemoteDataset(name="toy", url=url, sha256=sha256(archive), member="toy")
    with pytest.raises(InputError) as err:
        fetch(remote, tmp_path / "cache", progress=False, timeout=2)
    message = str(err.value)
    assert f"cannot download {url}: Connection refused" in message
    assert str(tmp_path / "cache" / "toy.zip") in message and "LLM4REC_CACHE" in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_archive_placed_by_hand_is_used_without_network(archive, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.zip").write_bytes(archive)
    remote = RemoteDataset(name="toy", url=f"http://127.0.0.1:{closed_port()}/toy.zip",
                           sha256=sha256(archive), member="toy")
    assert (fetch(remote, cache, progress=False) / "u.data").read_text() == U_DATA


def test_archive_placed_by_hand_with_wrong_digest_is_reported_and_kept(archive, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.zip").write_bytes(archive + b"junk")
    remote = RemoteDataset(name="toy", url=f"http://127.0.0.1:{closed_port()}/toy.zip",
                           sha256=sha256(archive), member="toy")
    with pytest.raises(InputError, match=rf"toy\.zip: SHA-256 mismatch.*{sha256(archive)}"):
        fetch(remote, cache, progress=False)
    assert (cache / "toy.zip").exists() and not (cache / "toy").exists()


def test_force_downloads_again_and_replaces_the_folder(server, archive, tmp_path):
    cache = tmp_path / "cache"
    fetch(toy(server, archive), cache, progress=False)
    newer = make_zip({"toy/u.data": "1\t1\t5\t0\n"})
    server.files["/data/toy.zip"] = newer
    out = fetch(toy(server, newer), cache, force=True, progress=False)
    assert (out / "u.data").read_text() == "1\t1\t5\t0\n"
    assert sorted(p.name for p in out.iterdir()) == ["u.data"]


def test_zip_path_traversal_is_rejected(server, tmp_path):
    evil = make_zip({"toy/u.data": U_DATA, "toy/../../evil.txt": "pwned"})
    server.files["/data/toy.zip"] = evil
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"unsafe member path.*evil\.txt"):
        fetch(toy(server, evil), cache, progress=False)
    assert not list(tmp_path.rglob("evil.txt"))
    assert sorted(p.name for p in cache.iterdir()) == ["toy.zip"]


def test_archive_without_the_member_folder_is_rejected(server, tmp_path):
    flat = make_zip({"u.data": U_DATA})
    server.files["/data/toy.zip"] = flat
    with pytest.raises(InputError, match="has no folder 'toy'"):
        fetch(toy(server, flat), tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "toy").exists()


def test_malformed_address_is_an_input_error(archive, tmp_path):
    with pytest.raises(InputError, match="not a download address"):
        fetch(RemoteDataset(name="toy", url="toy.zip", sha256=sha256(archive), member="toy"), tmp_path,
              progress=False)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError, match=r"unknown dataset \(got 'ml-7'; expected one of ml-100k, ml-1m,"):
        fetch_dataset("ml-7")


def test_registered_name_through_mirror_env_and_default_cache(server, archive, monkeypatch, tmp_path):
    ml100k = make_zip({"ml-100k/u.data": U_DATA})
    server.files["/mirror/ml-100k.zip"] = ml100k
    monkeypatch.setitem(DATASETS, "ml-100k", replace(DATASETS["ml-100k"], sha256=sha256(ml100k)))
    monkeypatch.setenv("LLM4REC_FETCH_BASE_URL", f"{server.base}/mirror/")
    out = fetch_dataset("ml-100k", progress=False)
    assert out == tmp_path / "default-cache" / "ml-100k"
    assert (out / "u.data").read_text() == U_DATA
    assert server.requests == [("/mirror/ml-100k.zip", None)]


def test_registry_points_at_grouplens_with_sha256_digests():
    assert {"ml-100k", "ml-1m", "ml-latest-small"} <= set(DATASETS)
    for name, remote in DATASETS.items():
        assert remote.name == name
        assert remote.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
        assert remote.member and remote.format == "movielens" and remote.description and remote.licence
    assert default_cache_dir() == Path(os.environ["LLM4REC_CACHE"])
