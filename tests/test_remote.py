"""Remote shards: http(s), s3 (a local moto server checking signatures), gs (a local GCS emulator,
and STORAGE_EMULATOR_HOST) and pipe: URLs,
streamed, resumed with HTTP Range where a connection drops, and a clear error after the last
retry. Every server runs in this process, on loopback: no real cloud is touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest
from _helpers import free_port

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


def test_gs_urls_via_storage_emulator_host_resume_by_range(server, make_shards, fast_retries, monkeypatch):
    local = make_shards(shards=2, per_shard=5)
    for p in local["paths"]:
        server.files[f"/my-bucket/webli/{Path(p).name}"] = Path(p).read_bytes()
    server.drops["/my-bucket/webli/shard-000001.tar"] = 1
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    s = WebLIStream("gs://my-bucket/webli/shard-{000000..000001}.tar", batch_size=5, image_size=32)
    assert len(keys_of(s)) == 10 and s.stats()["remote_retries"] == 1
    reqs = [(r, n) for path, r, n in server.log if path == "/my-bucket/webli/shard-000001.tar"]
    assert reqs[0][0] is None and reqs[1][0] == f"bytes={reqs[0][1]}-", "resumed from the byte reached"


@pytest.fixture
def s3_server():
    """A local S3 (moto) that checks request signatures: an IAM user with S3 access and its key."""
    boto3 = pytest.importorskip("boto3")
    import json as _json

    import moto.settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    port = free_port()
    saved = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 3  # the setup below; then every request is checked
    ActionAuthenticatorMixin.request_count = 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
        user = f"trainer-{port}"  # moto keeps its accounts for the whole process
        iam.create_user(UserName=user)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=_json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        client.create_bucket(Bucket="webli")
        yield {"endpoint": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"], "client": client}
    finally:
        server.stop()
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = saved


def s3_env(s3_server, env) -> None:
    """The environment an S3 client reads: the moto server's key, region and endpoint."""
    for k, v in {"AWS_ACCESS_KEY_ID": s3_server["key"], "AWS_SECRET_ACCESS_KEY": s3_server["secret"], "AWS_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": s3_server["endpoint"]}.items():
        env.setenv(k, v)


def test_s3_with_credentials_from_the_environment(s3_server, make_shards, clean_cloud_env):
    s3_env(s3_server, clean_cloud_env)
    local = make_shards(shards=2, per_shard=6)
    for p in local["paths"]:
        s3_server["client"].upload_file(p, "webli", f"train/{Path(p).name}")
    s = WebLIStream("s3://webli/train/shard-{000000..000001}.tar", batch_size=4, image_size=32)
    assert keys_of(s) == keys_of(WebLIStream(local["pattern"], batch_size=4, image_size=32))
    bad = WebLIStream(["s3://webli/train/nope.tar"], batch_size=4, image_size=32)
    assert keys_of(bad) == [] and "object not found" in bad.problems()[0]["message"]


def test_s3_shards_are_indexed_then_counted_and_resumed_from_the_index(s3_server, make_shards, clean_cloud_env, tmp_path):
    from webli_io.index import build_index

    s3_env(s3_server, clean_cloud_env)
    local = make_shards(shards=4, per_shard=6)
    for p in local["paths"]:
        s3_server["client"].upload_file(p, "webli", f"ix/{Path(p).name}")
    urls = "s3://webli/ix/shard-{000000..000003}.tar"
    from webli_io.stream import ShardError

    with pytest.raises(ShardError, match="webli-io index"):
        WebLIStream(urls, batch_size=4, image_size=32, equal_batches="pad")
    # Written to the object store, as a cluster job writes it; a rerun finds it fresh (ETag).
    r = build_index(urls, "s3://webli/ix-index", progress=False)
    assert r["indexed"] == 4 and not r["failed"], r
    assert build_index(urls, "s3://webli/ix-index", progress=False)["fresh"] == 4
    from webli_io import _core

    ix = json.loads(_core.read_bytes("s3://webli/ix-index/shard-000000.index.json"))
    assert ix["size"] == Path(local["paths"][0]).stat().st_size and ix["validator"], "size and ETag from a HEAD"
    summary = json.loads(_core.read_bytes("s3://webli/ix-index/index.json"))
    assert sorted(summary["shards"]) == [f"shard-{i:06d}.tar" for i in range(4)]
    opts = dict(batch_size=4, image_size=32, equal_batches="pad", shuffle=True, seed=5, shuffle_buffer=6, index="s3://webli/ix-index/")
    ref = WebLIStream(urls, **opts)
    whole = [k for b in ref for k in b["keys"]]
    assert not ref.problems(), ref.problems()
    assert sorted(whole) == keys_of(WebLIStream(local["pattern"], batch_size=4, image_size=32))
    first = WebLIStream(urls, **opts)
    it = iter(first)
    got = [k for _ in range(3) for k in next(it)["keys"]]
    state = first.state_dict()
    it.close()
    assert got == whole[: len(got)], first.problems()
    again = WebLIStream(urls, **opts)
    again.load_state_dict(state)
    assert got + [k for b in again for k in b["keys"]] == whole
    assert again.stats()["index_passed"] > 0


def test_prepare_writes_to_an_object_store_and_a_rerun_checks_what_is_there(s3_server, make_shards, clean_cloud_env, tmp_path):
    """Issue 27: `prepare -o s3://...`, as a cluster job must: shards, done markers, the
    manifest and the shard index land in the store; a rerun redoes only a shard whose object
    changed (size and ETag in its marker), and refuses the input prefix as output."""
    from webli_io.cli import main as cli
    from webli_io.prepare import prepare

    s3_env(s3_server, clean_cloud_env)
    local = make_shards(shards=3, per_shard=5)
    m = prepare(local["paths"], "s3://webli/prepared", progress=False)
    assert m["samples"] == 15 and m["shards_done_now"] == 3 and m["index"]["indexed"] == 3
    listed = sorted(o["Key"] for o in s3_server["client"].list_objects_v2(Bucket="webli", Prefix="prepared/")["Contents"])
    assert "prepared/manifest.json" in listed and "prepared/.prepare/shard-000000.tar.json" in listed
    assert "prepared/shard-000002.tar" in listed and "prepared/index.json" in listed
    urls = "s3://webli/prepared/shard-{000000..000002}.tar"
    s = WebLIStream(urls, batch_size=5, image_size=16, equal_batches="pad", world_size=1, rank=0)
    assert keys_of(s) == keys_of(WebLIStream(local["pattern"], batch_size=5, image_size=16))
    assert s.stats().get("index_unusable", 0) == 0
    assert prepare(local["paths"], "s3://webli/prepared", progress=False)["shards_done_now"] == 0
    # An object replaced behind the run's back: its ETag no longer matches the marker.
    s3_server["client"].put_object(Bucket="webli", Key="prepared/shard-000001.tar", Body=b"not a shard")
    m = prepare(local["paths"], "s3://webli/prepared", progress=False)
    assert m["shards_done_now"] == 1 and m["samples"] == 15
    for p in local["paths"]:
        s3_server["client"].upload_file(p, "webli", f"raw/{Path(p).name}")
    assert cli(["prepare", "s3://webli/raw/shard-000000.tar", "-o", "s3://webli/raw", "--json"]) == 2


def test_train_on_s3_shards_two_torchrun_ranks_then_resume_on_one(s3_server, make_shards, clean_cloud_env, tmp_path):
    """The documented multi-node command on an object store: index written to the store, two
    torchrun ranks train and checkpoint, one process resumes."""
    from _helpers import train_two_ranks_then_resume

    from webli_io.index import build_index

    s3_env(s3_server, clean_cloud_env)
    local = make_shards(shards=4, per_shard=8)
    for p in local["paths"]:
        s3_server["client"].upload_file(p, "webli", f"train/{Path(p).name}")
    urls = [f"s3://webli/train/{Path(p).name}" for p in local["paths"]]
    assert build_index(urls, "s3://webli/train-index", progress=False)["indexed"] == 4
    train_two_ranks_then_resume(urls, str(tmp_path / "run"), "--index", "s3://webli/train-index/")


FORKED_AFTER_MAIN = """
import multiprocessing, sys
from torch.utils.data import DataLoader
from webli_io import WebLIStream

urls = sys.argv[1:]
next(iter(WebLIStream(urls[:1], batch_size=4, image_size=16)))  # the main process reads the store first
s = WebLIStream(urls, batch_size=4, image_size=16)
fork = multiprocessing.get_context("fork")
print(sum(len(b["keys"]) for b in DataLoader(s, batch_size=None, num_workers=2, multiprocessing_context=fork)))
"""


def test_forked_workers_read_an_object_store_after_the_main_process_did(s3_server, make_shards, clean_cloud_env, tmp_path):
    """A forked DataLoader worker inherits the parent's tokio runtime without its threads: it hung
    forever (6 of 6 trials). A runtime per process: the workers read their shards."""
    import os
    import subprocess
    import sys

    s3_env(s3_server, clean_cloud_env)
    local = make_shards(shards=4, per_shard=6)
    for p in local["paths"]:
        s3_server["client"].upload_file(p, "webli", f"fork/{Path(p).name}")
    script = tmp_path / "fork.py"
    script.write_text(FORKED_AFTER_MAIN)
    urls = [f"s3://webli/fork/{Path(p).name}" for p in local["paths"]]
    r = subprocess.run([sys.executable, str(script), *urls], capture_output=True, text=True, timeout=180, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[-1] == "24"


def test_s3_with_credentials_from_a_profile_file(s3_server, make_shards, clean_cloud_env, tmp_path):
    local = make_shards(shards=1, per_shard=6)
    s3_server["client"].upload_file(local["paths"][0], "webli", "train/a.tar")
    creds, config = tmp_path / "credentials", tmp_path / "config"
    config.write_text(f"[profile webli]\nregion = us-east-1\nendpoint_url = {s3_server['endpoint']}\n")
    clean_cloud_env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    clean_cloud_env.setenv("AWS_CONFIG_FILE", str(config))
    clean_cloud_env.setenv("AWS_PROFILE", "webli")
    creds.write_text(f"[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n"
                     f"[webli]\naws_access_key_id = {s3_server['key']}\naws_secret_access_key = {s3_server['secret']}\n")
    s = WebLIStream("s3://webli/train/a.tar", batch_size=4, image_size=32)
    assert len(keys_of(s)) == 6, s.problems()
    # The profile's key is what signs: a wrong secret there is refused by the server, and the
    # message says so without the secret.
    creds.write_text(f"[webli]\naws_access_key_id = {s3_server['key']}\naws_secret_access_key = wrong-secret-123\n")
    s = WebLIStream("s3://webli/train/a.tar", batch_size=4, image_size=32)
    with pytest.raises(PermissionError) as refused:
        keys_of(s)
    msg = str(refused.value)
    assert "wrong-secret-123" not in msg and ("403" in msg or "denied" in msg or "Signature" in msg), msg


@pytest.fixture
def gcs_emulator():
    """A local GCS (gcp-storage-emulator, in memory) with a bucket."""
    server_mod = pytest.importorskip("gcp_storage_emulator.server")
    import json as _json
    import urllib.request

    from gcp_storage_emulator.handlers import objects

    def download(request, response, storage, *args, **kwargs):
        objects.download(request, response, storage, *args, **kwargs)
        # Real GCS sends these with every object; the emulator does not, and object_store
        # requires them.
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:
            return
        response["ETag"] = '"{}"'.format(obj.get("md5Hash", "x"))
        response["Last-Modified"] = "Mon, 30 Nov 2026 00:00:00 GMT"

    for _, methods in server_mod.HANDLERS:
        for method, handler in list(methods.items()):
            if handler is objects.download:
                methods[method] = download
    port = free_port()
    server = server_mod.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    base = f"http://127.0.0.1:{port}"
    req = urllib.request.Request(f"{base}/storage/v1/b", data=_json.dumps({"name": "webligcs"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()

    def upload(name: str, data: bytes) -> None:
        req = urllib.request.Request(f"{base}/webligcs/{name}", data=data, method="PUT")
        urllib.request.urlopen(req, timeout=10).read()

    yield {"base": base, "upload": upload}
    server.stop()
    for _, methods in server_mod.HANDLERS:
        for method, handler in list(methods.items()):
            if handler is download:
                methods[method] = objects.download


def test_gcs_with_a_service_account_file(gcs_emulator, make_shards, clean_cloud_env, tmp_path):
    import json as _json

    local = make_shards(shards=2, per_shard=5)
    for p in local["paths"]:
        gcs_emulator["upload"](f"train/{Path(p).name}", Path(p).read_bytes())
    # The credentials file object_store reads for emulators: the emulator's URL and no OAuth.
    sa = tmp_path / "service-account.json"
    sa.write_text(_json.dumps({"private_key": "", "private_key_id": "", "client_email": "", "gcs_base_url": gcs_emulator["base"],
                               "disable_oauth": True}))
    clean_cloud_env.setenv("GOOGLE_SERVICE_ACCOUNT", str(sa))
    s = WebLIStream("gs://webligcs/train/shard-{000000..000001}.tar", batch_size=4, image_size=32)
    assert keys_of(s) == keys_of(WebLIStream(local["pattern"], batch_size=4, image_size=32)), s.problems()
    # And through STORAGE_EMULATOR_HOST, as Google's clients use an emulator.
    clean_cloud_env.delenv("GOOGLE_SERVICE_ACCOUNT")
    clean_cloud_env.setenv("STORAGE_EMULATOR_HOST", gcs_emulator["base"])
    assert len(keys_of(WebLIStream("gs://webligcs/train/shard-000000.tar", batch_size=4, image_size=32))) == 5


def test_pipe_urls(make_shards, fast_retries):
    local = make_shards(shards=2, per_shard=3)
    s = WebLIStream([f"pipe:cat {p}" for p in local["paths"]] + ["pipe:cat /nonexistent/x.tar"], batch_size=3, image_size=32, allow_pipe=True)
    assert len(keys_of(s)) == 6
    msg = s.problems()[0]["message"]
    assert "pipe:cat /nonexistent/x.tar exited" in msg and "No such file" in msg


def test_cache_dir_keeps_whole_shards_and_its_limit(server, make_shards, fast_retries, tmp_path):
    local = make_shards(shards=3, per_shard=6)
    sizes = []
    for p in local["paths"]:
        data = Path(p).read_bytes()
        server.files["/" + Path(p).name] = data
        sizes.append(len(data))
    url = server.url + "/shard-{000000..000002}.tar"
    cache = tmp_path / "cache"
    # (A bound of its own: without one the cache keeps a tenth of the disk free.)
    s = WebLIStream(url, batch_size=4, image_size=32, cache_dir=str(cache), cache_max_bytes=1 << 40, shuffle=True)
    first = keys_of(s)
    assert len(first) == 18 and len(server.log) == 3
    # The shards (and, beside them, the cache's marker and each entry's sidecar).
    kept = sorted(f.name for f in cache.iterdir() if not f.name.startswith("."))
    assert len(kept) == 3 and not any(n.startswith(".partial") for f in cache.iterdir() for n in [f.name])
    s.set_epoch(1)
    assert keys_of(s) == first and len(server.log) == 3, "the second epoch reads the cache, not the server"
    # A limit of two shards' bytes: the folder never holds more.
    limited = tmp_path / "limited"
    s = WebLIStream(url, batch_size=4, image_size=32, cache_dir=str(limited), cache_max_bytes=max(sizes) * 2)
    assert len(keys_of(s)) == 18
    shards = [f for f in limited.iterdir() if not f.name.startswith(".")]
    assert sum(f.stat().st_size for f in shards) <= max(sizes) * 2 and len(shards) == 2
    from webli_io import ConfigError

    with pytest.raises(ConfigError) as e:
        WebLIStream(url, cache_max_bytes=10)
    assert e.value.setting == "cache_max_bytes"
