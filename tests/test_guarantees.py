"""The guarantees of issue 19, each as it failed before: a resume on another layout with
selection on, a state loaded into other settings or edited, a forgotten observe(), equal batches
after selection, and a reader that cannot fill its share. Real shards, real DataLoader workers."""

from __future__ import annotations

import copy
import io
import json
from collections import Counter

import pytest
from PIL import Image
from torch.utils.data import DataLoader

from webli_io import ConfigError, Options, WebLIStream
from webli_io.stream import ObserveWarning


def keys_of(batches):
    return [k for b in batches for k in b["keys"]]


@pytest.fixture
def dup_shards(tmp_path, web_images):
    """3 shards of 20 pairs, with repeated image bytes inside each shard."""
    import webdataset as wds

    paths = []
    for s in range(3):
        path = str(tmp_path / f"d-{s}.tar")
        with wds.TarWriter(path) as w:
            for i in range(20):
                img = web_images[(s * 7 + i // 2) % len(web_images)]  # every image twice in a row
                w.write({"__key__": f"{s}{i:03d}", "jpg" if img[:2] == b"\xff\xd8" else "png" if img[:2] == b"\x89P" else "webp": img,
                         "txt": f"caption {s} {i}"})
        paths.append(path)
    return paths


def test_resume_with_selection_on_another_layout_loses_and_doubles_nothing(dup_shards):
    # The case: subset, dedup and shuffle on, 3 batches through 2 workers, the rest with
    # 0 workers. Before: of 60 samples 7 were lost and 19 came twice.
    kw = dict(batch_size=4, image_size=16, num_threads=1, subset=0.5, dedup=True, shuffle=True, seed=2)
    whole = Counter(keys_of(WebLIStream(dup_shards, **kw)))
    first = WebLIStream(dup_shards, **kw)
    consumed = []
    for i, b in enumerate(DataLoader(first, batch_size=None, num_workers=2)):
        if i == 3:
            break
        first.observe(b)
        consumed += b["keys"]
    state = json.loads(json.dumps(first.state_dict()))
    rest = WebLIStream(dup_shards, **kw)
    rest.load_state_dict(state)
    got = Counter(consumed + keys_of(rest))
    assert got == whole and max(got.values()) == 1
    assert 0 < len(consumed) < sum(whole.values())


def test_a_state_is_bound_to_its_settings_and_shards(dup_shards):
    s = WebLIStream(dup_shards, batch_size=4, image_size=16, subset=0.5)
    next(iter(s))
    state = s.state_dict()
    for other, says in [
        (dict(subset=0.1), "subset: state 0.5, stream 0.1"),
        (dict(subset=0.5, min_score={"clip_score": 0.3}), "min_score"),
        (dict(subset=0.5, mixture={"sw": 0.1}), "mixture"),
        (dict(subset=0.5, image_size=32), "image_size"),
    ]:
        with pytest.raises(ValueError, match=says):
            WebLIStream(dup_shards, batch_size=4, **{"image_size": 16, **other}).load_state_dict(state)
    with pytest.raises(ValueError, match="the shard list"):
        WebLIStream(dup_shards[:2], batch_size=4, image_size=16, subset=0.5).load_state_dict(state)
    # What only changes speed may differ.
    WebLIStream(dup_shards, batch_size=4, image_size=16, subset=0.5, num_threads=2, prefetch=4).load_state_dict(state)


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda st: st.update(epoch=-3), r"epoch must be an int in \[0"),
        (lambda st: st["positions"]["0"].update(seq=1e12), "seq must be an int"),
        (lambda st: st["positions"]["0"].update(seq="5"), "seq must be an int"),
        (lambda st: st.update(slots=0), "slots must be an int"),
        (lambda st: st["positions"].update({"7": {"seq": 1, "yielded": 1}}), "reader slot '7'"),
        (lambda st: st.update(version=1), "version 1"),
        (lambda st: st.update(positions=[]), "positions must be a dict"),
    ],
)
def test_an_edited_state_is_refused_with_the_reason(dup_shards, edit, says):
    s = WebLIStream(dup_shards, batch_size=4, image_size=16)
    next(iter(s))
    state = copy.deepcopy(s.state_dict())
    edit(state)
    with pytest.raises(ValueError, match=says):
        WebLIStream(dup_shards, batch_size=4, image_size=16).load_state_dict(state)


def test_a_position_past_the_end_is_an_error_not_an_empty_epoch(dup_shards):
    s = WebLIStream(dup_shards, batch_size=4, image_size=16)
    next(iter(s))
    state = s.state_dict()
    state["positions"]["0"]["seq"] = 10**12
    t = WebLIStream(dup_shards, batch_size=4, image_size=16)
    t.load_state_dict(state)
    with pytest.raises(ValueError, match="past the end"):
        list(t)


def test_state_dict_warns_when_observe_was_forgotten(dup_shards):
    s = WebLIStream(dup_shards, batch_size=4, image_size=16, num_threads=1)
    for i, _ in enumerate(DataLoader(s, batch_size=None, num_workers=2)):
        if i == 2:
            break
    with pytest.warns(ObserveWarning, match="observe"):
        state = s.state_dict()
    assert state["positions"] == {}
    # With observe, no warning.
    t = WebLIStream(dup_shards, batch_size=4, image_size=16, num_threads=1)
    for i, b in enumerate(DataLoader(t, batch_size=None, num_workers=2)):
        t.observe(b)
        if i == 2:
            break
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ObserveWarning)
        assert t.state_dict()["positions"]


@pytest.mark.parametrize("mode", ["drop", "pad"])
def test_equal_batches_are_counted_after_selection(make_shards, mode):
    # The case: with subset=0.1 two ranks got 3 and 0 batches (then a DDP job hangs).
    ds = make_shards(shards=4, per_shard=40)
    counts = []
    for rank in range(2):
        s = WebLIStream(ds["paths"], batch_size=2, image_size=16, num_threads=1, subset=0.1, equal_batches=mode,
                        rank=rank, world_size=2)
        counts.append(len(list(DataLoader(s, batch_size=None, num_workers=0))))
    assert counts[0] == counts[1] > 0


def small_jpeg(side):
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (side % 255, 40, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def test_a_reader_whose_samples_are_all_filtered_still_ends_with_its_share(tmp_path):
    # Before: with equal_batches="pad", a reader whose samples all fail the filter re-read its
    # shard forever at 100% CPU.
    import webdataset as wds

    paths = []
    for s, side in enumerate([24, 120, 120, 24]):
        path = str(tmp_path / f"s-{s}.tar")
        with wds.TarWriter(path) as w:
            for i in range(6):
                w.write({"__key__": f"{s}{i:02d}", "jpg": small_jpeg(side + i), "txt": "x"})
        paths.append(path)
    per_rank = []
    for rank in range(2):
        s = WebLIStream(paths, batch_size=3, image_size=16, num_threads=1, min_image_side=64, equal_batches="pad",
                        rank=rank, world_size=2)
        got = list(s)
        per_rank.append(len(got))
        assert all(k[0] in "12" for b in got for k in b["keys"]), "only samples that pass the filter"
    assert per_rank[0] == per_rank[1] > 0


def test_nothing_valid_in_the_epoch_is_a_clear_error_not_a_hang(tmp_path):
    import webdataset as wds

    path = str(tmp_path / "s.tar")
    with wds.TarWriter(path) as w:
        for i in range(4):
            w.write({"__key__": f"{i:02d}", "jpg": small_jpeg(20), "txt": "x"})
    s = WebLIStream(path, batch_size=2, image_size=16, min_image_side=64, equal_batches="pad")
    with pytest.raises(RuntimeError, match="cannot give its share"):
        list(s)


def test_options_are_one_validated_picklable_value():
    import pickle

    o = Options(batch_size=8, subset=0.5, mixture="webli-100b", drop_if={"NSFW": "NSFW"})
    assert o.batch_size == 8 and o.mixture["mi"] == 0.01 and o.drop_if == {"NSFW": ["NSFW"]}
    assert pickle.loads(pickle.dumps(o)) == o
    assert o.replace(batch_size=16).batch_size == 16 and o.batch_size == 8
    assert set(Options.names()) == set(Options.defaults()) and "equal_batches" in Options.names()
    with pytest.raises(ConfigError, match="^bach_size: unknown setting .*did you mean \"batch_size\"") as e:
        Options(bach_size=8)
    assert e.value.setting == "bach_size"
    for bad, setting in [(dict(subset=float("nan")), "subset"), (dict(min_score={"s": float("nan")}), "min_score"),
                         (dict(batch_size=10**9), "batch_size"), (dict(lang_fields="language"), "lang_fields"),
                         (dict(equal_batches="yes"), "equal_batches"), (dict(manifest="m.json"), "manifest")]:
        with pytest.raises(ConfigError) as e:
            Options(**bad)
        assert e.value.setting == setting, (bad, e.value)


def test_every_setting_is_documented_where_users_read():
    # The settings are defined once, in the core; the docstring users read must name each.
    doc = WebLIStream.__doc__ or ""
    assert [n for n in Options.names() if f"{n}" not in doc] == []
