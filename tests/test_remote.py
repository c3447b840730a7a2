"""Remote shards: http(s), s3 (a local moto server), gs (STORAGE_EMULATOR_HOST) and pipe: URLs,
streamed, resumed with HTTP Range where a connection drops, and a clear error after the last
retry. Every server runs in this process, on loopback: no real cloud is touched."""

from __future__ import annotations

import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List

import pytest

from webli_io import WebLIStream


class ShardServer:
    """Serves `files` (path → bytes) with Range support. `drops[path] = n`: the first n answers
    for that path send the headers of the whole remaining body, half of it, then close the
    connection. `status[path] = code`: always answer that code. Paths under
    `/storage/v1/b/BUCKET/o/OBJECT?alt=media` serve `gs/BUCKET/OBJECT` (GCS's JSON API)."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.drops: Dict[str, int] = {}
        self.status: Dict[str, int] = {}
        self.redirects: Dict[str, str] = {}  # path -> Location
        self.stall: Dict[str, float] = {}  # path -> seconds to hang after the headers
        self.trickle: Dict[str, float] = {}  # path -> seconds between single bytes
        self.log: List[tuple] = []  # (path, Range header, bytes sent)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                path = url.path
                m = re.match(r"^/storage/v1/b/([^/]+)/o/([^/]+)$", path)
                if m and "alt=media" in url.query:
                    path = f"/gs/{m.group(1)}/{urllib.parse.unquote(m.group(2))}"
                rng = self.headers.get("Range")
                if path in server.redirects:
                    server.log.append((path, rng, 0))
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path in server.status:
                    server.log.append((path, rng, 0))
                    self.send_response(server.status[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(path)
                if data is None:
                    server.log.append((path, rng, 0))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in server.stall or path in server.trickle:
                    import time

                    self.wfile.flush()
                    if path in server.stall:
                        time.sleep(server.stall[path])
                        return
                    for b in body:
                        time.sleep(server.trickle[path])
                        try:
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                if server.drops.get(path, 0) > 0:
                    server.drops[path] -= 1
                    part = body[: len(body) // 2]
                    self.wfile.write(part)
                    self.wfile.flush()
                    server.log.append((path, rng, len(part)))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)
                server.log.append((path, rng, len(body)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ShardServer()
    yield s
    s.close()


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setenv("WEBLI_IO_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("WEBLI_IO_RETRIES", "3")


def keys_of(stream) -> List[str]:
    return sorted(k for b in stream for k in b["keys"])


def test_http_streams_and_resumes_dropped_connections_by_range(server, make_shards, fast_retries):
    local = make_shards(shards=3, per_shard=8)
    for p in local["paths"]:
        server.files["/" + Path(p).name] = Path(p).read_bytes()
        server.drops["/" + Path(p).name] = 2  # every shard drops twice mid-body
    want = keys_of(WebLIStream(local["pattern"], batch_size=5, image_size=32))
    s = WebLIStream(server.url + "/shard-{000000..000002}.tar", batch_size=5, image_size=32)
    assert keys_of(s) == want and len(want) == 24
    st = s.stats()
    assert st["remote_retries"] == 6 and st["shard_truncated"] == 0 and st["shard_unreadable"] == 0
    for p in local["paths"]:
        name, size = "/" + Path(p).name, len(Path(p).read_bytes())
        reqs = [(r, n) for path, r, n in server.log if path == name]
        # First request from 0, then two resumes from where the data stopped, not from 0.
        assert reqs[0][0] is None and len(reqs) == 3
        offsets = [int(r.split("=")[1].rstrip("-")) for r, _ in reqs[1:]]
        assert offsets[0] == reqs[0][1] and offsets[1] == offsets[0] + reqs[1][1]
        assert sum(n for _, n in reqs) == size  # every byte sent exactly once


def test_http_errors_are_clear_and_counted(server, make_shards, fast_retries):
    local = make_shards(shards=1, per_shard=4)
    server.files["/ok.tar"] = Path(local["paths"][0]).read_bytes()
    server.status["/down.tar"] = 503
    s = WebLIStream([server.url + "/down.tar", server.url + "/missing.tar", server.url + "/ok.tar"], batch_size=4, image_size=32)
    assert len(keys_of(s)) == 4  # the good shard still streams
    assert s.stats()["shard_unreadable"] == 2
    msgs = {p["shard"].rsplit("/", 1)[1]: p["message"] for p in s.problems()}
    assert "HTTP 503" in msgs["down.tar"] and "after 4 attempts" in msgs["down.tar"]
    assert "HTTP 404" in msgs["missing.tar"] and "after 1 attempt)" in msgs["missing.tar"]  # not retried
    assert sum(1 for path, _, _ in server.log if path == "/down.tar") == 4


def test_gs_urls_via_storage_emulator_host(server, make_shards, fast_retries, monkeypatch):
    local = make_shards(shards=2, per_shard=5)
    for p in local["paths"]:
        server.files[f"/gs/my-bucket/webli/{Path(p).name}"] = Path(p).read_bytes()
    server.drops["/gs/my-bucket/webli/shard-000001.tar"] = 1
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    s = WebLIStream("gs://my-bucket/webli/shard-{000000..000001}.tar", batch_size=5, image_size=32)
    assert len(keys_of(s)) == 10 and s.stats()["remote_retries"] == 1


def test_s3_urls_against_a_local_s3_server(make_shards, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="webli")
        local = make_shards(shards=2, per_shard=6)
        for p in local["paths"]:
            client.upload_file(p, "webli", f"train/{Path(p).name}")
        s = WebLIStream("s3://webli/train/shard-{000000..000001}.tar", batch_size=4, image_size=32)
        assert keys_of(s) == keys_of(WebLIStream(local["pattern"], batch_size=4, image_size=32))
        bad = WebLIStream(["s3://webli/train/nope.tar"], batch_size=4, image_size=32)
        assert keys_of(bad) == [] and "HTTP 404" in bad.problems()[0]["message"]
    finally:
        moto.stop()


def test_pipe_urls(make_shards, fast_retries):
    local = make_shards(shards=2, per_shard=3)
    s = WebLIStream([f"pipe:cat {p}" for p in local["paths"]] + ["pipe:cat /nonexistent/x.tar"], batch_size=3, image_size=32, allow_pipe=True)
    assert len(keys_of(s)) == 6
    msg = s.problems()[0]["message"]
    assert "pipe:cat /nonexistent/x.tar exited" in msg and "No such file" in msg
