"""Helpers shared by the tests: a tar writer for hand-made (and hostile) shards, and a
loopback HTTP server for remote shards (Range, drops, fixed statuses, redirects, stalls)."""

from __future__ import annotations

import io
import re
import socket
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List


def free_port() -> int:
    """A TCP port free on loopback now (for a server or a process group the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tar(path, members) -> str:
    """A tar of `(name, bytes)` members, as given (no webdataset rules applied): for shards
    that webdataset would not write."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return str(path)


def etag(data: bytes) -> str:
    """A strong ETag that follows the content (as object stores' do)."""
    import zlib

    return f'"{zlib.crc32(data):08x}-{len(data)}"'


class ShardServer:
    """Serves `files` (path → bytes) with Range support. `drops[path] = n`: the first n answers
    for that path send the headers of the whole remaining body, half of it, then close the
    connection. `status[path] = code`: always answer that code. Paths under
    `/storage/v1/b/BUCKET/o/OBJECT?alt=media` serve `gs/BUCKET/OBJECT` (GCS's JSON API); an object
    store's path-style `/BUCKET/OBJECT` is served as any path."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.drops: Dict[str, int] = {}
        self.status: Dict[str, int] = {}
        self.bodies: Dict[str, bytes] = {}  # path -> the body sent with its `status` answer
        self.redirects: Dict[str, str] = {}  # path -> Location
        self.stall: Dict[str, float] = {}  # path -> seconds to hang after the headers
        self.trickle: Dict[str, float] = {}  # path -> seconds between single bytes
        self.log: List[tuple] = []  # (path, Range header, bytes sent)
        # path -> the next version of the file, served from the next request on (a server whose
        # object is replaced while a client reads it; ETags follow the content)
        self.replace_after_first: Dict[str, bytes] = {}
        self.wrong_range: Dict[str, int] = {}  # path -> answer a Range with this start instead
        self.honour_if_match = True  # False: a server that ignores If-Match (answers anyway)
        self.no_length: set = set()  # paths answered without Content-Length (the body ends at the close)
        self.encoding: Dict[str, str] = {}  # path -> a Content-Encoding header sent with its (stored) bytes
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                path = urllib.parse.unquote(url.path)  # object stores percent-encode names
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
                    body = server.bodies.get(path, b"")
                    self.send_response(server.status[path])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                data = server.files.get(path)
                if data is not None and path in server.replace_after_first:
                    server.files[path] = server.replace_after_first.pop(path)
                if data is None:
                    server.log.append((path, rng, 0))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                want = self.headers.get("If-Match")
                if want is not None and server.honour_if_match and want != etag(data):
                    server.log.append((path, rng, 0))
                    self.send_response(412)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                m = re.match(r"bytes=(\d+)-(\d*)", rng) if rng else None
                start = int(m.group(1)) if m else 0
                if m and path in server.wrong_range:
                    start = server.wrong_range[path]
                last = min(int(m.group(2)), len(data) - 1) if m and m.group(2) else len(data) - 1
                body = data[start : last + 1]
                self.send_response(206 if rng else 200)
                # What object stores send with every object (object_store's GCS and Azure
                # clients require them).
                self.send_header("ETag", etag(data))
                self.send_header("Last-Modified", "Mon, 30 Nov 2026 00:00:00 GMT")
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{last}/{len(data)}")
                if path in server.encoding:
                    self.send_header("Content-Encoding", server.encoding[path])
                if path in server.no_length:
                    self.close_connection = True
                else:
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

            def do_HEAD(self) -> None:  # noqa: N802
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                data = server.files.get(path)
                server.log.append((path, "HEAD", 0))
                self.send_response(404 if data is None else 200)
                self.send_header("Content-Length", "0" if data is None else str(len(data)))
                if data is not None:
                    self.send_header("ETag", etag(data))
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def sent(self, suffix: str = "") -> int:
        """Bytes of bodies sent so far, for paths ending with `suffix`."""
        return sum(n for path, _, n in self.log if path.endswith(suffix))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def train_two_ranks_then_resume(shards, out, *extra) -> None:
    """`webli-io train` on 2 torchrun ranks (3 steps, a checkpoint with both ranks' positions),
    then resumed in this process on 1 rank to step 5: the multi-node command, small."""
    import argparse
    import os
    import subprocess
    import sys

    import torch

    from webli_io.siglip.loop import train
    from webli_io.train import add_arguments

    common = ["--model", "tiny", "--image-size", "32", "--batch-size", "4", "--out", str(out), "--log-every", "1",
              "--warmup", "2", "--no-eval", "--threads", "1", *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "webli_io",
           "train", *shards, *common, "--steps", "3", "--checkpoint-every", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert ckpt["step"] == 3 and ckpt["data"]["slots"] == 2
    p = argparse.ArgumentParser()
    add_arguments(p)
    lines: List[str] = []
    res = train(p.parse_args([*shards, *common, "--steps", "5", "--resume"]), log=lines.append)
    assert res["steps"] == 5 and res["world_size"] == 1
    assert any("resumed from" in x and "step 3" in x for x in lines), lines
