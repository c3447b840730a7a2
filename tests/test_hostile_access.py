"""Hostile input, second round (issue 28, items 6 and 10): credentials. A chosen AWS profile is
never replaced by another identity, and an answer that says the credentials or the region are
wrong ends the stream at once with its reason, instead of six retries per shard and an epoch
that ends normally with 0 samples."""

from __future__ import annotations

import time

import pytest

from webli_io import WebLIStream

EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
           b"<Message>The provided token has expired.</Message></Error>")


def s3_at(server, env, **extra) -> None:
    """An S3 client pointed at the test server, with keys (unless `keys=False`)."""
    keys = extra.pop("keys", True)
    values = {"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.url, "AWS_METADATA_ENDPOINT": server.url, **extra}
    if keys:
        values.update(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMIEXAMPLEKEY")
    for k, v in values.items():
        env.setenv(k, v)


@pytest.mark.parametrize("status,body,reason", [
    (400, EXPIRED, "ExpiredToken"),
    # S3's answer to a bucket in another region: a redirect without a Location.
    (301, b"", "incorrectly configured region"),
    (403, b"<Error><Code>AccessDenied</Code></Error>", "AccessDenied"),
])
def test_a_refusal_ends_the_stream_at_once_with_its_reason(server, clean_cloud_env, status, body, reason):
    s3_at(server, clean_cloud_env)
    urls = [f"s3://webli/train/s-{i:03d}.tar" for i in range(40)]
    for u in urls:
        server.status["/" + u[5:]] = status
        server.bodies["/" + u[5:]] = body
    t = time.monotonic()
    with pytest.raises(PermissionError, match=reason) as err:
        list(WebLIStream(urls, batch_size=4, image_size=16))
    assert "wJalrXUtnFEMIEXAMPLEKEY" not in str(err.value)
    # No retries and no tour of the other shards: a request per reader thread at most.
    gets = [p for p, rng, _ in server.log if p.startswith("/webli/")]
    assert len(gets) <= 8, len(gets)
    assert time.monotonic() - t < 30  # not a timed assertion of speed: six retries per shard took hours


def test_an_http_403_ends_the_stream_too(server):
    server.status["/a.tar"] = 403
    server.files["/b.tar"] = b""
    with pytest.raises(PermissionError, match="HTTP 403"):
        list(WebLIStream([f"{server.url}/a.tar", f"{server.url}/b.tar"], batch_size=2, image_size=16))


@pytest.mark.parametrize("profile,key", [
    ("credential_process = touch {marker}\n", "credential_process"),
    ("role_arn = arn:aws:iam::123456789012:role/webli\nsource_profile = base\n", "role_arn"),
    ("sso_session = corp\nsso_account_id = 123456789012\n", "sso_session"),
])
def test_a_chosen_profile_is_never_replaced_by_another_identity(server, clean_cloud_env, tmp_path, profile, key):
    marker = tmp_path / "ran"
    config = tmp_path / "config"
    config.write_text("[profile base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = basesecret\n"
                      "[profile webli]\nregion = us-east-1\n" + profile.format(marker=marker))
    s3_at(server, clean_cloud_env, keys=False, AWS_CONFIG_FILE=str(config), AWS_PROFILE="webli",
          AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    server.files["/webli/train/a.tar"] = b""
    with pytest.raises(PermissionError, match=key) as err:
        list(WebLIStream(["s3://webli/train/a.tar"], batch_size=2, image_size=16))
    assert "export-credentials --profile webli" in str(err.value)
    assert not marker.exists(), "a credential process ran"
    assert server.log == [], "a request went out signed by another identity (or none)"


def test_a_profile_named_but_missing_is_refused(server, clean_cloud_env, tmp_path):
    s3_at(server, clean_cloud_env, keys=False, AWS_PROFILE="nope", AWS_CONFIG_FILE=str(tmp_path / "none"),
          AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    with pytest.raises(PermissionError, match='profile "nope"'):
        list(WebLIStream(["s3://webli/train/a.tar"], batch_size=2, image_size=16))
    assert server.log == []
