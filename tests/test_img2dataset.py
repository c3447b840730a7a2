"""Issue 24, item 6: img2dataset's output, as the real `img2dataset` package writes it (from a
loopback HTTP server, both output formats), read end to end: the stream takes its output folder
(or `out/*`) without its side files (`_stats.json`, a tar shard's metadata `.parquet`); Parquet
rows carry the metadata a tar shard's json carries; `prepare`, `score` and `index` read Parquet
shards; gzip members (`KEY.txt.gz`, webdataset's convention) are read decompressed."""

from __future__ import annotations

import os

import pytest

from webli_io import WebLIStream

KW = dict(batch_size=8, image_size=16)


def _read(spec, **kw):
    stream = WebLIStream(spec, **KW, **kw)
    got = {}
    for b in stream:
        for key, text, meta in zip(b["keys"], b["texts"], b["meta"]):
            got[key] = (text, meta)
    return got, stream.stats()


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
@pytest.mark.parametrize("spec", ["folder", "glob"])
def test_the_output_folder_is_read_whole_without_its_side_files(img2dataset_out, fmt, spec):
    out = img2dataset_out[fmt]
    names = sorted(os.listdir(out))
    assert any(n.endswith("_stats.json") for n in names), names
    if fmt == "webdataset":
        assert any(n.endswith(".parquet") for n in names), "img2dataset's metadata side files are there"
    got, stats = _read(str(out) if spec == "folder" else f"{out}/*")
    fetched = [r for r in img2dataset_out["rows"] if "gone" not in r["url"]]
    assert sorted(t for t, _ in got.values()) == sorted(r["caption"] for r in fetched), "every downloaded pair, once"
    assert stats["shard_corrupt"] == stats["shard_table_corrupt"] == stats["shard_truncated"] == 0, stats
    if fmt == "parquet":  # the row of the failed download has no image: counted, not lost silently
        assert stats["skipped_missing_image"] == 1


def test_parquet_rows_carry_the_fields_of_the_tar_json(img2dataset_out):
    tar, _ = _read(str(img2dataset_out["webdataset"]))
    table, _ = _read(str(img2dataset_out["parquet"]))
    assert tar.keys() == table.keys()
    for key, (_, meta) in tar.items():
        other = table[key][1]
        assert set(other) == set(meta), (sorted(meta), sorted(other))
        for field in ("caption", "key", "url", "status", "error_message", "original_width", "language"):
            assert other[field] == meta[field], field


def test_prepare_score_and_index_read_img2dataset_parquet(img2dataset_out, tmp_path):
    from webli_io.index import build_index
    from webli_io.prepare import prepare

    src = img2dataset_out["parquet"]
    m = prepare([str(src)], str(tmp_path / "prepared"), progress=False, dedup=True)
    rows = img2dataset_out["rows"]
    assert m["samples"] == len(rows), "every row annotated (the failed download's too: the stream skips it)"
    tagged = sum(r["language"] is not None for r in rows)
    assert m["from_metadata"] == tagged and m["from_lid"] == len(rows) - tagged
    written = sorted(n for n in os.listdir(tmp_path / "prepared") if not n.startswith((".", "_")))
    assert written == sorted([n for n in os.listdir(src) if n.endswith(".parquet")] + ["manifest.json"])
    got, _ = _read(str(tmp_path / "prepared"))
    langs = {meta["url"]: (meta["language"], meta["language_source"]) for _, meta in got.values()}
    for r in rows:
        if "gone" in r["url"]:
            continue
        lang, source = langs[r["url"]]
        assert source == ("metadata" if r["language"] else "lid")
        if r["language"]:
            assert lang == r["language"]
    # A rerun finds every shard done (its marker names this output).
    again = prepare([str(src)], str(tmp_path / "prepared"), progress=False, dedup=True)
    assert again["shards_done_now"] == 0 and again["samples"] == m["samples"]
    ix = build_index([str(tmp_path / "prepared")], progress=False)
    assert ix["parquet"] == {"shards": len(m["shards"]), "rows": len(rows)} and ix["failed"] == []


def test_gzip_members_are_read_as_webdataset_reads_them(tmp_path, web_images):
    """A caption stored as `KEY.txt.gz` (0 samples before); what webdataset's decoder reads."""
    import webdataset as wds

    path = str(tmp_path / "gz.tar")
    with wds.TarWriter(path) as w:
        for i in range(6):
            # webdataset's writer compresses a `.gz` member itself.
            w.write({"__key__": f"s{i:03d}", "jpg": web_images[3 * (i % 3)], "txt.gz": f"caption {i}", "json.gz": {"n": i}})
    with open(path, "rb") as f:
        assert f.read().count(b"\x1f\x8b") >= 12, "the members are gzip-compressed"
    ours, stats = _read(path)
    theirs = {s["__key__"]: s["txt.gz"] for s in wds.WebDataset(path, shardshuffle=False).decode()}
    assert {k: t for k, (t, _) in ours.items()} == theirs and len(theirs) == 6
    assert all(meta["n"] == int(k[1:]) for k, (_, meta) in ours.items()), "json.gz read too"
    assert stats["skipped_corrupt_member"] == 0
