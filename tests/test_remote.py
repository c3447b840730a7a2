"""Remote shards: http(s), s3 (a local moto server), gs (STORAGE_EMULATOR_HOST) and pipe: URLs,
streamed, resumed with HTTP Range where a connection drops, and a clear error after the last
retry. Every server runs in this process, on loopback: no real cloud is touched."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import List

import pytest

from webli_io import WebLIStream


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
