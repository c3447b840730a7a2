"""Hostile input, second round (issue 28, items 5, 8 and 9): filters that must fail closed on
every Parquet type and json shape, metadata that claims gigabytes, and a cut that looks like
an end. Each case failed on the main before it: a flagged row yielded, memory grown by the
claim, samples lost uncounted."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
import zlib
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
from _helpers import write_tar
from PIL import Image

from webli_io import WebLIStream, _core


def a_jpeg(web_images):
    return next(b for b in web_images if b[:2] == b"\xff\xd8")


def keys_of(spec, **kw):
    s = WebLIStream(spec, batch_size=4, image_size=16, **kw)
    return sorted(k for b in s for k in b["keys"]), s.stats(), s.problems()


# -- 5. filters fail closed --------------------------------------------------------------------

def parquet_with(path, web_images, columns: dict) -> None:
    n = len(next(iter(columns.values())))
    jpg = a_jpeg(web_images)
    table = pa.table({"key": [f"{i:04d}" for i in range(n)], "caption": ["a caption"] * n, "jpg": [jpg] * n, **columns})
    pq.write_table(table, path)


def test_dictionary_parquet_columns_feed_drop_if_and_the_language(tmp_path, web_images):
    # A pandas/Polars Categorical is a dictionary column: 4 of 8 rows flagged.
    flags = ["NSFW", "UNLIKELY"] * 4
    langs = ["bn", "en"] * 4
    nsfw = pa.array(flags).dictionary_encode()
    lang = pa.array(langs).dictionary_encode()
    parquet_with(tmp_path / "cat.parquet", web_images, {"NSFW": nsfw, "language": lang})
    assert pq.read_table(tmp_path / "cat.parquet").schema.field("NSFW").type == pa.dictionary(pa.int32(), pa.string())
    keys, stats, _ = keys_of(str(tmp_path / "cat.parquet"), drop_if={"NSFW": "NSFW"})
    assert keys == [f"{i:04d}" for i in range(8) if flags[i] != "NSFW"]
    assert stats["skipped_filtered"] == 4
    s = WebLIStream(str(tmp_path / "cat.parquet"), batch_size=8, image_size=16)
    batch = next(iter(s))
    assert list(batch["langs"]) == langs


def test_float16_and_decimal_scores_are_read_not_missing(tmp_path, web_images):
    scores = [0.1, 0.3, 0.5, 0.2]
    parquet_with(tmp_path / "s.parquet", web_images, {
        "half": pa.array(scores, type=pa.float32()).cast(pa.float16()),
        "dec": pa.array([Decimal(str(x)) for x in scores], type=pa.decimal128(5, 3)),
    })
    for field in ("half", "dec"):
        keys, stats, _ = keys_of(str(tmp_path / "s.parquet"), min_score={field: 0.25})
        assert keys == ["0001", "0002"], field
        assert stats["skipped_filtered"] == 2


def test_a_parquet_column_of_another_type_fails_a_filter_closed(tmp_path, web_images):
    parquet_with(tmp_path / "t.parquet", web_images, {
        "NSFW": pa.array([1, 2], type=pa.timestamp("s")),
        "tags": pa.array([["UNLIKELY"], ["x", "NSFW"]]),
        "maybe": pa.array(["UNLIKELY", None]),
    })
    keys, stats, problems = keys_of(str(tmp_path / "t.parquet"), drop_if={"NSFW": "NSFW"})
    assert keys == [] and stats["skipped_filtered"] == 2
    assert "cannot tell" in problems[0]["message"]
    keys, _, _ = keys_of(str(tmp_path / "t.parquet"), drop_if={"tags": "NSFW"})
    assert keys == ["0000"], "a list column matches on any element"
    keys, _, _ = keys_of(str(tmp_path / "t.parquet"), drop_if={"maybe": "NSFW"})
    assert keys == ["0000"], "a null is not known to be clean"


def test_tar_json_shapes_that_passed_drop_if(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    values = [["NSFW"], None, " NSFW", {"label": "NSFW"}, [["NSFW"]], "UNLIKELY", ["UNLIKELY"]]
    members = []
    for i, v in enumerate(values):
        members += [(f"{i:04d}.jpg", jpg), (f"{i:04d}.txt", b"cap"), (f"{i:04d}.json", json.dumps({"NSFW": v}).encode())]
    members += [("0099.jpg", jpg), ("0099.txt", b"cap"), ("0099.json", b"{}")]
    write_tar(tmp_path / "j.tar", members)
    keys, stats, _ = keys_of(str(tmp_path / "j.tar"), drop_if={"NSFW": "nsfw"})
    assert keys == ["0005", "0006", "0099"]
    assert stats["skipped_filtered"] == 5


# -- 8. memory bombs ---------------------------------------------------------------------------

def peak_growth_mb(code: str) -> tuple[float, str]:
    """Run `code` in a fresh interpreter (webli_io imported first); the growth of its peak RSS
    over the peak after the import, in MB, and what it printed."""
    script = textwrap.dedent("""
        import resource, sys
        import webli_io, webli_io._core
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    """) + textwrap.dedent(code) + textwrap.dedent("""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("GROWTH", (peak - base) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    growth = float(out.stdout.rsplit("GROWTH", 1)[1])
    return growth, out.stdout


def gnu_header(kind: bytes, claim: int) -> bytes:
    info = tarfile.TarInfo("././@LongLink")
    info.type = kind
    info.size = claim
    return info.tobuf(format=tarfile.GNU_FORMAT)


def test_a_long_name_or_pax_header_claiming_gigabytes_is_refused_unread(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    write_tar(tmp_path / "good.tar", [("0000.jpg", jpg), ("0000.txt", b"cap"), ("0001.jpg", jpg), ("0001.txt", b"cap")])
    good = (tmp_path / "good.tar").read_bytes()
    for kind in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE):
        prefix = tmp_path / "prefix.tar"
        # The good members, no end blocks, then a header claiming 8 GiB and 300 MB of zeros.
        with tarfile.open(tmp_path / "good.tar") as t:
            end = max(m.offset_data + -(-m.size // 512) * 512 for m in t.getmembers())
        prefix.write_bytes(good[:end] + gnu_header(kind, 8 << 30))
        spec = f"pipe:cat {prefix}; head -c 300000000 /dev/zero"
        growth, out = peak_growth_mb(f"""
            from webli_io import WebLIStream
            s = WebLIStream({spec!r}, batch_size=4, image_size=16, allow_pipe=True)
            keys = [k for b in s for k in b["keys"]]
            print("KEYS", keys, "CORRUPT", s.stats()["shard_corrupt"], "WHY", s.problems()[-1]["message"])
        """)
        assert "CORRUPT 1" in out and "claims 8589934592 bytes" in out, out
        assert "KEYS ['0000']" in out, "the sample before the damage may be incomplete: left out, named"
        assert growth < 100, f"{kind}: the peak grew {growth:.0f} MB"


def png_with_iccp(inflated: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    png = buf.getvalue()
    z = zlib.compressobj(9)
    chunk = 16 << 20
    body = b"".join(z.compress(bytes(chunk)) for _ in range(inflated // chunk)) + z.flush()
    data = b"bomb\0\0" + body
    iccp = len(data).to_bytes(4, "big") + b"iCCP" + data + zlib.crc32(b"iCCP" + data).to_bytes(4, "big")
    return png[:33] + iccp + png[33:]  # after the signature and IHDR


def test_a_png_whose_profile_inflates_to_256_mb_costs_no_memory(tmp_path):
    # Under the image crate's default limit (512 MiB) the profile was inflated whole.
    (tmp_path / "bomb.png").write_bytes(png_with_iccp(256 << 20))
    growth, out = peak_growth_mb(f"""
        data = open({str(tmp_path / 'bomb.png')!r}, "rb").read()
        img = webli_io._core.decode_image(data)
        print("SHAPE", img.shape, img[0, 0].tolist())
    """)
    # The profile is ignored (profiles are never applied), the pixels decode.
    assert "SHAPE (64, 64, 3) [200, 30, 30]" in out, out
    assert growth < 64, f"the peak grew {growth:.0f} MB"


def test_a_progressive_jpeg_with_too_many_scans_is_refused(web_images, photos):
    buf = io.BytesIO()
    photos[0].convert("RGB").resize((1024, 768)).save(buf, format="JPEG", progressive=True, quality=90)
    jpg = buf.getvalue()
    assert _core.decode_image(jpg).shape == (768, 1024, 3)
    last = jpg.rindex(b"\xff\xda")
    bomb = jpg[:-2] + jpg[last:-2] * 150 + b"\xff\xd9"
    try:
        _core.decode_image(bomb)
        raise AssertionError("a 160-scan JPEG decoded")
    except ValueError as e:
        assert "scans" in str(e), e


# -- 9. a cut that looks like an end -----------------------------------------------------------

def test_a_shard_cut_after_a_member_ending_in_zeros_is_truncated(tmp_path, web_images):
    jpg = a_jpeg(web_images)
    members = []
    for i in range(10):
        members += [(f"{i:04d}.jpg", jpg), (f"{i:04d}.txt", b"cap"), (f"{i:04d}.npy", bytes(1024))]
    write_tar(tmp_path / "whole.tar", members)
    with tarfile.open(tmp_path / "whole.tar") as t:
        m = next(m for m in t.getmembers() if m.name == "0003.npy")
    cut = m.offset_data + m.size
    (tmp_path / "cut.tar").write_bytes((tmp_path / "whole.tar").read_bytes()[:cut])
    keys, stats, problems = keys_of(str(tmp_path / "cut.tar"))
    assert keys == ["0000", "0001", "0002"]
    assert stats["shard_truncated"] == 1, problems


def test_a_gzip_content_encoding_body_resumes_where_it_was_cut(server, make_shards):
    """A server that compresses the transfer (`Content-Encoding: gzip`) and drops the connection:
    the resume asks for the encoded bytes it has not had, so the shard comes out whole."""
    import gzip

    ds = make_shards(shards=1, per_shard=12)
    raw = open(ds["paths"][0], "rb").read()
    server.files["/z.tar"] = gzip.compress(raw)
    server.encoding["/z.tar"] = "gzip"
    server.drops["/z.tar"] = 1
    keys, stats, problems = keys_of(f"{server.url}/z.tar")
    assert len(keys) == 12, problems
    assert stats["shard_truncated"] == 0 and stats["remote_retries"] >= 1
    assert all(rng is None or rng.startswith("bytes=") for _, rng, _ in server.log)
