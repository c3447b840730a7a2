"""The one invariant behind "exact", checked on generated cases (hypothesis): an epoch read by
some layout of ranks x DataLoader workers, interrupted, and resumed on a *different* layout gives
consumed ∪ rest = an uninterrupted epoch (as multisets, a mixture's copies included), with no
sample on two ranks; with ``equal_batches`` every reader yields the same number of batches, and
every run ends.

Generated: shard counts and sizes (uneven, empty shards too), batch sizes, 1-3 ranks, 0-3
workers, shuffle, selection (a subset, exact dedup with real duplicate images, a score filter, a
corrupt image, a mixture with a manifest), ``equal_batches`` None / "drop" / "pad", and the
interruption point; and where the shards are: local, local with a shard index (a resume then
passes what was consumed by the index, without reading it), or on loopback HTTP with the index
served beside them (the resume seeks by HTTP Range). Real shards written by webdataset, real
DataLoader worker processes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import multiprocessing
import os
import tempfile
import warnings
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from webli_io import WebLIStream
from webli_io.stream import ObserveWarning

LANGS = ["en", "es", "bn", "sw", "te"]
EXAMPLES = int(os.environ.get("WEBLI_IO_PROPERTY_EXAMPLES", "30"))


@functools.lru_cache(maxsize=1)
def small_jpegs():
    """Distinct small JPEGs made from the real photographs (fast to decode)."""
    import skimage

    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    out = []
    for i, name in enumerate(["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg"]):
        photo = Image.open(os.path.join(data, name)).convert("RGB")
        for side in (40, 56, 72):
            buf = io.BytesIO()
            photo.resize((side, side * 3 // 4)).save(buf, format="JPEG", quality=80 + i)
            out.append(buf.getvalue())
    return out


def write_dataset(d, sizes, jpegs, draw_dup, draw_score):
    """Shards of the given sizes with webdataset's TarWriter; returns paths, a manifest."""
    import webdataset as wds

    paths, langs, n = [], Counter(), 0
    for s, size in enumerate(sizes):
        path = os.path.join(d, f"shard-{s:03d}.tar")
        with wds.TarWriter(path) as sink:
            previous = None
            for i in range(size):
                key = f"{s:03d}{i:04d}"
                img = jpegs[n % len(jpegs)]
                if previous is not None and draw_dup():
                    img = previous  # the same bytes again in this shard: exact dedup drops it
                if n % 17 == 16:
                    img = b"\xff\xd8\xff\xe0 not a jpeg"  # fails to decode: skipped, counted
                lang = LANGS[n % len(LANGS)]
                meta = {"language": lang, "score": draw_score()}
                sink.write({"__key__": key, "jpg": img, "txt": f"caption {key}", "json": json.dumps(meta).encode()})
                langs[lang] += 1
                previous, n = img, n + 1
        paths.append(path)
    manifest = os.path.join(d, "manifest.json")
    with open(manifest, "w") as f:
        json.dump({"languages": dict(langs)}, f)
    return paths, manifest


def run(paths, layout, opts, *, steps=None, state=None):
    """Read with `layout` = (ranks, workers): every rank builds its stream (as each DDP process
    does), loads `state`, and reads `steps` batches (all ranks in step) or to the end. Returns
    the keys per rank, batches per reader slot, and the merged state of all ranks."""
    ranks, workers = layout
    keys, per_slot, states = [], Counter(), []
    for rank in range(ranks):
        stream = WebLIStream(paths, rank=rank, world_size=ranks, num_threads=1, **opts)
        if state is not None:
            stream.load_state_dict(state)
        kw = {"multiprocessing_context": multiprocessing.get_context("fork")} if workers else {}
        loader = DataLoader(stream, batch_size=None, num_workers=workers, **kw)
        mine = []
        # Take exactly `steps` batches (a batch taken from the loader counts as consumed).
        for batch in loader if steps is None else itertools.islice(loader, steps):
            stream.observe(batch)
            mine += batch["keys"]
            per_slot[batch["position"]["slot"]] += 1
        keys.append(mine)
        with warnings.catch_warnings():
            if steps == 0:  # workers prefetched, the loop took nothing: the warning is expected
                warnings.simplefilter("ignore", ObserveWarning)
            states.append(stream.state_dict())
    return keys, per_slot, WebLIStream.merge_states(states)


layouts = st.tuples(st.integers(1, 3), st.integers(0, 3))


PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + ([] if os.environ.get("WEBLI_IO_PROPERTY_NO_SHRINK") else [Phase.shrink])


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("WEBLI_IO_PROPERTY_RANDOM"), suppress_health_check=list(HealthCheck), phases=PHASES,
          database=None)
@given(
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=5),
    batch_size=st.integers(1, 5),
    before=layouts,
    after=layouts,
    shuffle=st.booleans(),
    subset=st.sampled_from([None, 0.6]),
    dedup=st.booleans(),
    min_score=st.sampled_from([None, 0.3]),
    mixture=st.booleans(),
    equal=st.sampled_from([None, "drop", "pad"]),
    in_flight=st.sampled_from([None, 1, 3]),
    steps=st.integers(0, 4),
    source=st.sampled_from(["local", "indexed", "http"]),
    data=st.data(),
)
def test_interrupted_and_resumed_on_another_layout_is_one_epoch(
    sizes, batch_size, before, after, shuffle, subset, dedup, min_score, mixture, equal, in_flight, steps, source, data
):
    from _helpers import ShardServer

    from webli_io.index import build_index

    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        paths, manifest = write_dataset(
            d, sizes, small_jpegs(),
            draw_dup=lambda: data.draw(st.booleans(), label="duplicate"),
            draw_score=lambda: data.draw(st.sampled_from([0.1, 0.5, 0.9]), label="score"),
        )
        index = None
        if source != "local":
            index = os.path.join(d, "ix")
            build_index(paths, index, fields=["score"], progress=False)
        if source == "http":
            server = ShardServer()
            stack.callback(server.close)
            for name in os.listdir(d) + [f"ix/{n}" for n in os.listdir(index)]:
                if name.endswith((".tar", ".json")) and os.path.isfile(os.path.join(d, name)):
                    with open(os.path.join(d, name), "rb") as f:
                        server.files[f"/{name}"] = f.read()
            paths = [f"{server.url}/{os.path.basename(p)}" for p in paths]
            index = f"{server.url}/ix/"
        opts = {"batch_size": batch_size, "image_size": 16, "shuffle": shuffle, "seed": 3, "subset": subset, "dedup": dedup,
                "min_score": {"score": min_score} if min_score else None, "equal_batches": equal,
                "shards_in_flight": in_flight, "index": index}
        if shuffle:
            opts["shuffle_buffer"] = 4
        if mixture:
            opts.update(mixture={"sw": 0.3, "te": 0.2}, manifest=manifest, mixture_window=5)

        # The epoch as one reader reads it, uninterrupted.
        (whole,), _, _ = run(paths, (1, 0), {**opts, "equal_batches": None})
        whole = Counter(whole)
        if equal and not whole:
            # Nothing in the whole epoch survives: a reader cannot fill a share that the counts
            # (taken before decoding and the mixture) promised; it says so rather than hang.
            try:
                consumed, _, _ = run(paths, before, opts)
            except RuntimeError as e:
                assert "cannot give its share" in str(e)
            else:
                assert not any(consumed), "nothing survives, and nothing was promised"
            return
        consumed, slots_before, state = run(paths, before, opts, steps=steps)
        rest, slots_after, _ = run(paths, after, opts, state=state)

        got = Counter(k for keys in consumed + rest for k in keys)
        if equal is None:
            for keys in (consumed, rest):  # no sample on two ranks (a mixture's copies stay on one)
                for a in range(len(keys)):
                    for b in range(a + 1, len(keys)):
                        assert not set(keys[a]) & set(keys[b])
            assert got == whole, (got - whole, whole - got)
        else:
            # Every reader yields the same number of batches (in the run that read to the end),
            # from the epoch's samples only; readers that fall short (decode failures, dedup,
            # too few shards) repeat samples to fill their share, and "pad" loses nothing.
            readers = after[0] * max(1, after[1])
            if readers == before[0] * max(1, before[1]):
                # The same number of readers: each continues its own share of the epoch.
                slots_after = slots_before + slots_after
            assert len(set(slots_after.values())) <= 1, slots_after
            assert not slots_after or len(slots_after) == readers, slots_after
            assert set(got) <= set(whole)
            if equal == "pad" and not mixture:
                assert set(whole) <= set(got), set(whole) - set(got)


def test_the_property_can_fail():
    """The check above catches a wrong resume: load a state into another stream without the
    mixture (refused), and a resume that forgets the state reads samples twice."""
    with tempfile.TemporaryDirectory() as d:
        paths, manifest = write_dataset(d, [6, 5], small_jpegs(), draw_dup=lambda: False, draw_score=lambda: 0.5)
        opts = {"batch_size": 2, "image_size": 16, "shuffle": True, "seed": 1}
        (whole,), _, _ = run(paths, (1, 0), opts)
        consumed, _, state = run(paths, (2, 1), opts, steps=2)
        rest, _, _ = run(paths, (1, 2), opts)  # the state not loaded: a restart
        assert Counter(k for ks in consumed + rest for k in ks) != Counter(whole)
        with pytest.raises(ValueError, match="mixture"):
            run(paths, (1, 2), {**opts, "mixture": {"sw": 0.5}, "manifest": manifest}, state=state)
