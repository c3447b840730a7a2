"""The `webli-io` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "webli_io", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_teaches():
    r = run("--help")
    assert r.returncode == 0
    for word in ("demo", "stream", "bench", "prepare", "train", "examples:", "DataLoader(WebLIStream"):
        assert word in r.stdout
    r = run("stream", "--help")
    text = " ".join(r.stdout.split())  # argparse wraps lines anywhere
    assert "--resize" in text and "brace patterns" in text and "URLs" in text


def test_demo_writes_and_streams_sample_data(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo"), "--shards", "2", "--samples-per-shard", "12", "--batch-size", "8", "--json",
            "--train-steps", "0")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["images"] == 24 and result["shards"] == 2
    assert result["stats"]["skipped_corrupt_image"] == 1
    assert result["stats"]["skipped_missing_caption"] == 1
    assert sum(result["languages"].values()) == 24 and len(result["languages"]) > 3
    assert result["images_per_second"] > 0
    # A second run reuses the shards.
    r = run("demo", "--out", str(tmp_path / "demo"), "--shards", "2", "--samples-per-shard", "12", "--train-steps", "0")
    assert r.returncode == 0 and "using the sample shards already" in r.stdout and "images/s" in r.stdout


def test_stream_reports_a_missing_shard_clearly(tmp_path):
    r = run("stream", str(tmp_path / "shard-{000..003}.tar"))
    assert r.returncode == 2
    assert "shard not found" in r.stderr and "shard-000.tar" in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_runs_and_reports_ratios(tmp_path):
    r = run("bench", "--data", str(tmp_path / "b"), "--num-shards", "2", "--per-shard", "24", "--batch-size", "8",
            "--repeat", "1", "--no-scaling", "--memory", "96", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    ips = result["images_per_second"]
    assert ips["webli-io (threads)"] > 0 and ips["webli-io (2 workers)"] > 0
    assert result["images"] == 48 and "scikit-image" in result["source"]
    # Every baseline either ran (with a ratio) or is listed as not run under the same name, with
    # the reason: whether or not the bench extra is installed (CI runs without it).
    not_run = result.get("not_run", {})
    for name in ("wds + PIL + torchvision", "wds + PIL draft()", "wds + simplejpeg scaled", "decode-only (yardstick)"):
        assert (name in result["webli_io_ratio_to"]) != (name in not_run), name
        if name in not_run:
            assert "not installed" in not_run[name] and "webli-io[bench]" in not_run[name]
    stages = result["webli_io_stages"]
    assert set(stages) == {"read", "decode", "resize", "batch"} and stages["decode"]["thread_seconds"] > 0
    assert result["memory"]["images"] >= 96 and result["memory"]["rss_mb_peak"] > 0
