"""An offline Cloud Storage for tests: gs:// paths that epath, orbax and tensorstore all reach.

Nothing outside the machine can be reached in tests, and etils.epath knows no test
scheme (`memory://` is a KeyError); orbax writes arrays through tensorstore, whose only
remote driver it uses is GCS. So a test gets a real `gs://bucket/...` namespace held in
memory, seen the same way by both halves of the stack:

- epath (our `rlaif_jax.fs`, orbax's metadata and commit files): EPATH_USE_TF=false makes
  epath take its fsspec backend (its cached answer is cleared around the test), and fsspec's 'gs'/'gcs' protocol is registered to
  `GsMemoryFileSystem`, an fsspec MemoryFileSystem with its own store;
- tensorstore (orbax's array data, OCDBT manifests): TENSORSTORE_GCS_HTTP_URL points its
  GCS driver at `_Handler`, a small HTTP server speaking the subset of the GCS JSON API
  the driver uses (object GET with alt=media/Range/generation preconditions, media
  upload with ifGenerationMatch, list with prefix, DELETE), over the same store.

One thing is stubbed: orbax asks google-cloud-storage (not installed) whether a bucket has
a hierarchical namespace before listing or deleting steps; the fixture answers "no".
What this cannot show: TensorFlow's own GCS file system (tf.io.gfile: TensorBoard event
files, the jax profiler, seqio's tf.data readers) has no endpoint override, so those
writers are not exercised on gs:// here.

Use the `fake_gcs` fixture (import it into a test module): it yields the store, a dict
of '/bucket/name' -> fsspec MemoryFile.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.parse

import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem


class GsMemoryFileSystem(MemoryFileSystem):
    """fsspec's in-memory file system under the gs:// protocol, with its own store."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

    def __init__(self, *args, finalize_on_close=None, **kwargs):  # epath passes it for gcsfs
        del finalize_on_close
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        for prefix in ("gs://", "gcs://"):
            path = path.removeprefix(prefix)
        path = path.strip("/")
        return "/" + path if path else ""


_GENERATIONS: dict[str, tuple[object, int]] = {}
_LOCK = threading.Lock()


def _generation(key: str) -> int | None:
    """The object's generation: bumped whenever its MemoryFile is replaced."""
    f = GsMemoryFileSystem.store.get(key)
    if f is None:
        return None
    seen = _GENERATIONS.get(key)
    if seen is None or seen[0] is not f:
        seen = (f, (seen[1] + 1) if seen else 1)
        _GENERATIONS[key] = seen
    return seen[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    """The GCS JSON API calls tensorstore's 'gcs' kvstore driver makes."""

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", headers=None, ctype="application/json"):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _parsed(self):
        u = urllib.parse.urlsplit(self.path)
        return u.path, dict(urllib.parse.parse_qsl(u.query))

    def _meta(self, bucket, name, key):
        data = GsMemoryFileSystem.store[key].getvalue()
        return {
            "bucket": bucket,
            "name": name,
            "size": str(len(data)),
            "generation": str(_generation(key)),
            "metageneration": "1",
        }

    def _not_found(self):
        self._send(404, b'{"error": {"code": 404, "message": "not found"}}')

    def do_GET(self):
        path, q = self._parsed()
        with _LOCK:
            m = re.match(r"^(?:/download)?/storage/v1/b/([^/]+)/o/(.+)$", path)
            if m:
                return self._get_object(m.group(1), urllib.parse.unquote(m.group(2)), q)
            m = re.match(r"^/storage/v1/b/([^/]+)/o$", path)
            if m:
                return self._list(m.group(1), q)
        self._send(400, b"{}")

    def _get_object(self, bucket, name, q):
        key = f"/{bucket}/{name}"
        if key not in GsMemoryFileSystem.store:
            return self._not_found()
        gen = _generation(key)
        if "ifGenerationNotMatch" in q and int(q["ifGenerationNotMatch"]) == gen:
            return self._send(304, headers={"x-goog-generation": str(gen)})
        if "ifGenerationMatch" in q and int(q["ifGenerationMatch"]) != gen:
            return self._send(412, b"{}")
        if q.get("alt") != "media":
            return self._send(200, json.dumps(self._meta(bucket, name, key)).encode())
        data = GsMemoryFileSystem.store[key].getvalue()
        headers, code = {"x-goog-generation": str(gen)}, 200
        wanted = self.headers.get("Range")
        if wanted:  # bytes=a-b, bytes=a- or bytes=-n (the last n bytes)
            a, b = wanted.split("=", 1)[1].split("-")
            lo = max(0, len(data) - int(b)) if a == "" else int(a)
            hi = len(data) - 1 if a == "" or b == "" else min(int(b), len(data) - 1)
            headers["Content-Range"] = f"bytes {lo}-{hi}/{len(data)}"
            data, code = data[lo : hi + 1], 206
        self._send(code, data, headers, "application/octet-stream")

    def _list(self, bucket, q):
        prefix, lo, hi = q.get("prefix", ""), q.get("startOffset", ""), q.get("endOffset")
        items = []
        for key in sorted(GsMemoryFileSystem.store):
            if not key.startswith(f"/{bucket}/"):
                continue
            name = key[len(bucket) + 2 :]
            if name.startswith(prefix) and name >= lo and (not hi or name < hi):
                items.append(self._meta(bucket, name, key))
        self._send(200, json.dumps({"items": items}).encode())

    def do_POST(self):
        path, q = self._parsed()
        m = re.match(r"^/upload/storage/v1/b/([^/]+)/o$", path)
        if not m or q.get("uploadType") != "media":
            return self._send(400, b"{}")
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        bucket, name = m.group(1), q["name"]
        key = f"/{bucket}/{name}"
        with _LOCK:
            if "ifGenerationMatch" in q and int(q["ifGenerationMatch"]) != (_generation(key) or 0):
                return self._send(412, b'{"error": {"code": 412}}')
            GsMemoryFileSystem.store[key] = MemoryFile(GsMemoryFileSystem(), key, body)
            self._send(200, json.dumps(self._meta(bucket, name, key)).encode())

    def do_DELETE(self):
        path, q = self._parsed()
        m = re.match(r"^/storage/v1/b/([^/]+)/o/(.+)$", path)
        if not m:
            return self._send(400, b"{}")
        key = f"/{m.group(1)}/{urllib.parse.unquote(m.group(2))}"
        with _LOCK:
            if key not in GsMemoryFileSystem.store:
                return self._not_found()
            if "ifGenerationMatch" in q and int(q["ifGenerationMatch"]) != _generation(key):
                return self._send(412, b"{}")
            del GsMemoryFileSystem.store[key]
            self._send(204)


_SERVER: http.server.ThreadingHTTPServer | None = None


def _server() -> http.server.ThreadingHTTPServer:
    """One server per process: tensorstore may keep the endpoint it first read."""
    global _SERVER
    if _SERVER is None:
        _SERVER = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        _SERVER.daemon_threads = True
        threading.Thread(target=_SERVER.serve_forever, daemon=True).start()
    return _SERVER


def _reset() -> None:
    GsMemoryFileSystem.store.clear()
    GsMemoryFileSystem.pseudo_dirs[:] = [""]
    _GENERATIONS.clear()


@pytest.fixture
def fake_gcs(monkeypatch):
    """gs:// in memory for epath (fsspec backend) and tensorstore (HTTP); yields the store."""
    import importlib

    from etils.epath import backend, gpath
    from orbax.checkpoint._src.path import gcs_utils

    server = _server()
    monkeypatch.setenv("EPATH_USE_TF", "false")
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "fake-token")
    for protocol in ("gs", "gcs"):
        # fsspec.registry (the attribute) is a read-only view; the module holds the dict.
        registry = importlib.import_module("fsspec.registry")._registry
        monkeypatch.setitem(registry, protocol, GsMemoryFileSystem)
    # orbax's bucket probe (google-cloud-storage, not installed): a flat namespace.
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    # epath caches its "use TensorFlow?" answer on first use of any path: ask again now
    # (and after the test, so later tests get tf.io.gfile back).
    gpath._is_tf_installed.cache_clear()
    backend.fsspec_backend._get_filesystem.cache_clear()
    GsMemoryFileSystem.clear_instance_cache()
    _reset()
    yield GsMemoryFileSystem.store
    _reset()
    monkeypatch.undo()
    gpath._is_tf_installed.cache_clear()
    backend.fsspec_backend._get_filesystem.cache_clear()
