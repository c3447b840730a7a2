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
    assert r.returncode == 0 and "using the sample shards already" in r.stderr and "images/s" in r.stdout


def test_stream_reports_a_missing_shard_clearly(tmp_path):
    r = run("stream", str(tmp_path / "shard-{000..003}.tar"))
    assert r.returncode == 2
    assert "shard not found" in r.stderr and "shard-000.tar" in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_runs_and_reports_ratios(tmp_path):
    r = run("bench", "--data", str(tmp_path / "b"), "--per-set", "3", "--batch-size", "8",
            "--repeat", "1", "--no-scaling", "--memory", "96", "--modes", "--json", "--export-jpegs", str(tmp_path / "j"))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    ips = result["images_per_second"]
    assert ips["webli-io (threads)"] > 0 and ips["webli-io (2 workers)"] > 0
    assert result["images"] == 27 and "scikit-image" in result["source"]
    # The realistic web set: quality 75/90/95 x three size bands, each reported, sizes as named;
    # then img2dataset's default output (256 px, border, q95) and 384/512 beside it, made by
    # img2dataset's own resizer.
    sets = result["sets"]
    assert len(sets) == 12 and {n.split()[0] for n in sets} == {"q75", "q90", "q95", "img2dataset"}
    for name, row in sets.items():
        assert row["images"] == 3 and row["webli_io"] > 0
        if name.startswith("img2dataset"):
            side = int(name.split()[1])
            assert row["mean_megapixels"] == round(side * side / 1e6, 2), (name, row)
            continue
        lo, hi = map(float, name.split()[1].split("-"))
        assert lo * 0.95 <= row["mean_megapixels"] <= hi * 1.05, (name, row)
    assert "img2dataset's Resizer" in result["source"]
    assert len(list((tmp_path / "j").glob("*/*.jpg"))) == 36
    modes = result["modes"]
    assert set(modes) >= {"squash", "center_crop", "center_crop, whole decode", "random_resized_crop",
                          "random_resized_crop, whole decode", "squash, fast_decode"} and min(modes.values()) > 0
    # Every baseline either ran (with a ratio) or is listed as not run under the same name, with
    # the reason: whether or not the bench extra is installed (CI runs without it).
    not_run = result.get("not_run", {})
    for name in ("wds + PIL + torchvision", "wds + PIL draft()", "wds + simplejpeg scaled", "SPDL", "DALI CPU",
                 "decode-only (yardstick)"):
        assert (name in result["webli_io_ratio_to"]) != (name in not_run), name
        if name in not_run:
            assert "not installed" in not_run[name] or "cannot decode here" in not_run[name], not_run[name]
    stages = result["webli_io_stages"]
    assert set(stages) == {"read", "decode", "resize", "batch"} and stages["decode"]["thread_seconds"] > 0
    assert result["memory"]["images"] >= 96 and result["memory"]["rss_mb_peak"] > 0


def test_help_imports_no_torch():
    # `webli-io --help` stays fast because nothing on its path imports torch (measured in the
    # closing note; a timing assertion here would be noise).
    code = "import sys; from webli_io.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("False"), "torch was imported by --help"


def test_verbose_works_before_and_after_the_verb():
    from webli_io.cli import build_parser

    p = build_parser()
    for argv in (["-v", "stream", "x.tar"], ["stream", "x.tar", "-v"], ["stream", "-v", "x.tar"]):
        assert p.parse_args(argv).verbose is True, argv
    assert getattr(p.parse_args(["stream", "x.tar"]), "verbose", False) is False


def test_bad_numbers_are_argument_errors_not_tracebacks(tmp_path):
    for argv in (["bench", "--repeat", "0"], ["stream", "x.tar", "--batch-size", "0"], ["demo", "--shards", "-1"]):
        r = run(*argv)
        assert r.returncode == 2, argv
        assert "must be at least 1" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_stream_json_is_alone_on_stdout_and_counts_normalised_languages(tmp_path):
    import io as _io

    import webdataset as wds
    from PIL import Image

    buf = _io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="JPEG")
    path = str(tmp_path / "s.tar")
    with wds.TarWriter(path) as w:
        for i in range(6):
            w.write({"__key__": f"k{i}", "jpg": buf.getvalue(), "txt": "שלום", "json": json.dumps({"language": "iw"}).encode()})
    r = run("stream", path, "--batch-size", "4", "--workers", "0", "--json", "-v")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert result["languages"] == {"he": 6}
    r = run("stream", path, "--batch-size", "4", "--workers", "0")
    assert "streamed 6 images" in r.stdout and "languages: he 6" in r.stdout


def test_prepare_says_when_lid_did_not_run(tmp_path):
    import io as _io

    import webdataset as wds
    from PIL import Image

    buf = _io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="JPEG")
    path = str(tmp_path / "in.tar")
    with wds.TarWriter(path) as w:
        for i in range(3):
            w.write({"__key__": f"k{i}", "jpg": buf.getvalue(), "txt": "hello", "json": json.dumps({"language": "en"}).encode()})
    r = run("prepare", path, "-o", str(tmp_path / "out"), "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "None" not in r.stdout and "LID not run" in r.stdout
    r = run("prepare", path, "-o", str(tmp_path / "out2"), "--workers", "1", "--json")
    assert json.loads(r.stdout)["samples"] == 3


def test_demo_json_is_one_document_with_the_training_result(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo"), "--shards", "2", "--samples-per-shard", "40", "--batch-size", "8",
            "--train-steps", "2", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["images"] == 80 and result["train"]["steps"] == 2
    assert "training the tiny SigLIP model" in r.stderr


def test_demo_study_runs_the_grid_on_the_sample_data(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo"), "--shards", "3", "--samples-per-shard", "40", "--batch-size", "8",
            "--train-steps", "0", "--study", "--study-steps", "2", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout)["study"]
    assert len(rows) == 8 and all({"multilingual_mean_r1", "retrieval_i2t_r1", "classify_top1", "groups_spread"} <= set(x) for x in rows)
    assert (tmp_path / "demo" / "study" / "study.md").exists() and (tmp_path / "demo" / "eval" / "classify" / "red").is_dir()
