"""Parquet shards (img2dataset's layout), read with pyarrow and handed to the core without a copy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import CAPTIONS

from webli_io import WebLIStream, _core


def img2dataset_table(web_images, start: int, n: int) -> pa.Table:
    """Rows as img2dataset's parquet writer lays them out: key, url, caption, the image bytes
    in a column named after the encode format, status and size columns, plus a score."""
    rows = []
    for i in range(start, start + n):
        lang, text = CAPTIONS[i % len(CAPTIONS)]
        rows.append({
            "key": f"{i // 100:05d}{i % 100:04d}", "url": f"https://example.org/{i}", "caption": text,
            "jpg": web_images[i % len(web_images)], "status": "success", "error_message": None,
            "width": 224, "height": 224, "language": lang, "clip_score": 0.2 + (i % 5) * 0.05,
        })
    schema = pa.schema([
        ("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("jpg", pa.binary()),
        ("status", pa.string()), ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("language", pa.string()), ("clip_score", pa.float64()),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.fixture
def parquet_and_tar(tmp_path, web_images, make_shards):
    """The same 3 × 10 pairs as Parquet shards (row groups of 4) and as tar shards."""
    tars = make_shards(shards=3, per_shard=10)
    paths = []
    for s in range(3):
        p = tmp_path / f"part-{s:05d}.parquet"
        t = img2dataset_table(web_images, s * 10, 10)
        # Same keys as the tar fixture's.
        t = t.set_column(0, "key", pa.array([f"{s:05d}{i:04d}" for i in range(10)]))
        pq.write_table(t, p, row_group_size=4)
        paths.append(str(p))
    return paths, tars


def test_import_shares_the_image_buffer(tmp_path, web_images):
    t = img2dataset_table(web_images, 0, 6)
    batch = t.to_batches()[0]
    rows = _core.table_rows(batch)
    col = batch.column(batch.schema.get_field_index("jpg"))
    _, offsets_buf, data_buf = col.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)
    assert len(rows) == 6
    for i, (key, addr, n, text, meta) in enumerate(rows):
        # The address Rust reads the image from is inside pyarrow's own data buffer: no copy.
        assert addr == data_buf.address + int(offsets[col.offset + i])
        assert n == len(web_images[i % len(web_images)])
        assert key == t.column("key")[i].as_py() and text == t.column("caption")[i].as_py()
        assert meta["clip_score"] == pytest.approx(t.column("clip_score")[i].as_py())
        assert meta["width"] == 224 and meta["status"] == "success"
        # A null is kept as null, as a tar json's: a filter on it fails closed (issue 28).
        assert "error_message" in meta and meta["error_message"] is None
    # A slice keeps its offset: still the same bytes.
    sl = batch.slice(2, 3)
    assert [r[0] for r in _core.table_rows(sl)] == [r[0] for r in rows[2:5]]
    assert [r[1] for r in _core.table_rows(sl)] == [r[1] for r in rows[2:5]]


def test_parquet_streams_what_the_tar_streams(parquet_and_tar):
    paths, tars = parquet_and_tar
    def collect(shards):
        s = WebLIStream(shards, batch_size=7, image_size=64, num_threads=2)
        out = {}
        for b in s:
            for k, t, lang, img in zip(b["keys"], b["texts"], b["langs"], b["images"]):
                out[k] = (t, lang, np.asarray(img).copy())
        return out, s.stats()
    pq_out, pq_stats = collect(paths)
    tar_out, _ = collect(tars["pattern"])
    assert sorted(pq_out) == sorted(tar_out) and len(pq_out) == 30
    for k in pq_out:
        assert pq_out[k][0] == tar_out[k][0]
        assert pq_out[k][1] == tar_out[k][1]  # the language column, as the tar's json field
        np.testing.assert_array_equal(pq_out[k][2], tar_out[k][2])  # the same bytes decoded alike
    assert pq_stats["shards_opened"] == 3 and pq_stats["samples_read"] == 30


def test_parquet_bad_rows_and_files_are_counted(tmp_path, web_images):
    t = img2dataset_table(web_images, 0, 8)
    jpg = t.column("jpg").to_pylist()
    jpg[1] = None          # a failed download: no image
    jpg[2] = b""           # zero bytes
    jpg[3] = jpg[3][: len(jpg[3]) // 2]  # a JPEG cut in half
    cap = t.column("caption").to_pylist()
    cap[4] = "   "          # empty caption
    t = t.set_column(3, "jpg", pa.array(jpg, pa.binary())).set_column(2, "caption", pa.array(cap))
    good = tmp_path / "good.parquet"
    pq.write_table(t, good)
    noimg = tmp_path / "noimg.parquet"
    pq.write_table(t.drop_columns(["jpg"]), noimg)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    s = WebLIStream([str(good), str(noimg), str(junk)], batch_size=4, image_size=32)
    keys = [k for b in s for k in b["keys"]]
    st = s.stats()
    assert len(keys) == 4
    assert st["skipped_missing_image"] == 1 and st["skipped_empty_image"] == 1
    assert st["skipped_corrupt_image"] == 1 and st["skipped_missing_caption"] == 1
    assert st["shard_table_corrupt"] == 1 and st["shard_unreadable"] == 1
    reasons = {p["reason"]: p["message"] for p in s.problems()}
    assert "no binary image column" in reasons["shard_table_corrupt"]


def test_parquet_columns_feed_filters_and_projection(parquet_and_tar):
    paths, _ = parquet_and_tar
    s = WebLIStream(paths, batch_size=8, image_size=32, min_score={"clip_score": 0.3})
    kept = sum(len(b["keys"]) for b in s)
    assert kept == 18 and s.stats()["skipped_filtered"] == 12  # scores 0.2, 0.25 dropped
    # Projection: only the language column besides image/caption/key.
    s = WebLIStream(paths, batch_size=8, image_size=32, columns=["language"])
    b = next(iter(s))
    assert set(b["langs"]) <= {lang for lang, _ in CAPTIONS}


def test_parquet_in_dataloader_workers_and_equal_batches(parquet_and_tar):
    paths, _ = parquet_and_tar
    s = WebLIStream(paths, batch_size=4, image_size=32, equal_batches="drop")
    dl = torch.utils.data.DataLoader(s, batch_size=None, num_workers=2)
    batches = list(dl)
    # 3 shards over 2 workers: 20 and 10 rows → 2 full batches of 4 each (drop).
    assert len(batches) == 4 and all(len(b["keys"]) == 4 for b in batches)
    assert len({k for b in batches for k in b["keys"]}) == 16


def test_parquet_resume_exact_and_across_layouts(parquet_and_tar):
    paths, _ = parquet_and_tar
    kw = dict(batch_size=3, image_size=16, num_threads=1, shuffle=True, shuffle_buffer=5, seed=3)
    full = [list(b["keys"]) for b in WebLIStream(paths, **kw)]
    first = WebLIStream(paths, **kw)
    got = []
    for b in first:
        got.append(list(b["keys"]))
        if len(got) == 4:
            break
    again = WebLIStream(paths, **kw)
    again.load_state_dict(first.state_dict())
    assert got + [list(b["keys"]) for b in again] == full  # same layout: exact
    # Another layout (2 workers → in-process): the consumed rows are replayed through pyarrow
    # and excluded; nothing lost, nothing doubled.
    first = WebLIStream(paths, **kw)
    seen = []
    for b in torch.utils.data.DataLoader(first, batch_size=None, num_workers=2):
        first.observe(b)
        seen += list(b["keys"])
        if len(seen) >= 9:
            break
    rest = WebLIStream(paths, **kw)
    rest.load_state_dict(first.state_dict())
    after = [k for b in rest for k in b["keys"]]
    assert sorted(seen + after) == sorted(k for b in full for k in b)
