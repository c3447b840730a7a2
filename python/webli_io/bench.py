"""`webli-io bench`: images/s of webli-io against the pipelines users run today, in one run, on
the same shards and the same CPUs, as ratios (machines are shared and noisy: absolute numbers
from different runs do not compare).

  webli-io (threads)       DataLoader(WebLIStream(..., num_threads=CPUs), batch_size=None,
                           num_workers=0): the recommended set-up, native threads, no worker
                           processes and no inter-process copies of the batches
  webli-io (W workers)     DataLoader(WebLIStream(...), batch_size=None, num_workers=W),
                           CPUs / W threads each: the drop-in set-up
  wds + PIL + torchvision  webdataset, PIL decode, torchvision Resize + PILToTensor (what most run)
  wds + PIL draft()        the same, with Pillow's DCT-domain downscale (Image.draft) first
  wds + simplejpeg scaled  simplejpeg (libjpeg-turbo) scaled decode + PIL resize
  SPDL                     spdl.io.load_image_batch (FFmpeg decode + resize, GIL released) on
                           W threads, tars read with spdl.io.iter_tarfile (when installed)
  DALI CPU                 NVIDIA DALI's CPU pipeline: fn.readers.webdataset,
                           fn.decoders.image(device="cpu"), fn.resize, W threads (when installed)
  decode-only (yardstick)  simplejpeg full-scale decode of in-memory JPEGs on W threads: what
                           decoding alone costs, with no reading, resizing or batching

The default data is the realistic web set: JPEGs made from real photographs (scikit-image's
bundled photos, plus any folder given with --photos: large camera photos are best, e.g. Debian's
mate-backgrounds), 4:2:0 baseline, at quality 75, 90 and 95 and in three size bands from 0.3 to
2 MP: nine sets, reported each, and all together for the table of pipelines.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

SKIMAGE_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]


def load_photos(extra_dir: Optional[str] = None) -> Tuple[list, str]:
    """Real photographs as RGB PIL images, and a description of where they came from."""
    from PIL import Image

    photos, sources = [], []
    try:
        import skimage

        d = os.path.join(os.path.dirname(skimage.__file__), "data")
        photos += [Image.open(os.path.join(d, n)).convert("RGB") for n in SKIMAGE_PHOTOS if os.path.exists(os.path.join(d, n))]
        sources.append(f"{len(photos)} scikit-image photos")
    except ImportError:
        pass
    if extra_dir:
        n0 = len(photos)
        for root, _, files in os.walk(extra_dir):
            for f in sorted(files):
                if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
                    photos.append(Image.open(os.path.join(root, f)).convert("RGB"))
        sources.append(f"{len(photos) - n0} photos from {extra_dir}")
    return photos, ", ".join(sources)


def web_jpeg(photo, rng: np.random.Generator) -> bytes:
    """A random crop (60–100% a side) of `photo`, resized to 300–1600 px on its long side and
    saved at JPEG quality 70–95, as images on web pages are."""
    from PIL import Image

    img = _random_crop(photo, rng)
    cw, ch = img.size
    s = int(rng.integers(300, 1601)) / max(cw, ch)
    img = img.resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    return buf.getvalue()


def _add_pair(t: tarfile.TarFile, key: str, jpeg: bytes) -> None:
    """A JPEG and its caption, as webdataset members of `key`."""
    for ext, data in (("jpg", jpeg), ("txt", f"photo {key}".encode())):
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))


def _random_crop(photo, rng: np.random.Generator):
    """A random crop of `photo`, 60–100% of each side."""
    w, h = photo.size
    cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return photo.crop((x, y, x + cw, y + ch))


QUALITIES = (75, 90, 95)
BANDS = ((0.3, 0.6), (0.6, 1.2), (1.2, 2.0))  # megapixels


def web_photo_jpeg(photo, rng: np.random.Generator, quality: int, megapixels: Tuple[float, float]) -> Tuple[bytes, bool]:
    """A random crop (60–100% a side) of `photo`, resized to an area drawn from `megapixels`,
    saved as a baseline 4:2:0 JPEG at `quality` (as photo sites serve them). Also says whether
    the crop was enlarged (a photo smaller than the target: such JPEGs decode faster than a
    camera's)."""
    from PIL import Image

    img = _random_crop(photo, rng)
    cw, ch = img.size
    s = (rng.uniform(*megapixels) * 1e6 / (cw * ch)) ** 0.5
    img = img.resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.Resampling.LANCZOS if s < 1 else Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling=2)
    return buf.getvalue(), s > 1


def set_name(quality: int, band: Tuple[float, float]) -> str:
    return f"q{quality} {band[0]}-{band[1]} MP"


#: img2dataset's defaults (`image_size=256`, `resize_mode="border"`, `encode_quality=95`): what
#: most image-text shards in use hold; 384 and 512 beside it.
I2D_SIZES = (256, 384, 512)


def i2d_set_name(size: int) -> str:
    return f"img2dataset {size} border q95"


def _i2d_resizer(size: int) -> Any:
    """img2dataset's own Resizer with its defaults (border mode, area downscale, Lanczos
    upscale, white padding, JPEG q95), when the package is installed."""
    try:
        from img2dataset.resizer import Resizer
    except ImportError:
        return None
    return Resizer(image_size=size, resize_mode="border", resize_only_if_bigger=False)


def img2dataset_jpeg(photo, rng: np.random.Generator, size: int, resizer: Any = None) -> bytes:
    """A random crop of `photo` as img2dataset writes it: the long side to `size`, padded to
    `size` x `size` with white, JPEG quality 95 (4:2:0). With `resizer` (img2dataset's), made
    by img2dataset itself; else the same steps in Pillow."""
    from PIL import Image

    img = _random_crop(photo, rng)
    if resizer is not None:
        src = io.BytesIO()
        img.save(src, format="JPEG", quality=92)
        out = resizer(io.BytesIO(src.getvalue()))
        if out[0] is None:
            raise RuntimeError(f"img2dataset's resizer failed: {out[-1]}")
        return out[0]
    w, h = img.size
    s = size / max(w, h)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BOX if s < 1 else Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=95, subsampling=2)
    return buf.getvalue()


def write_web_set(out_dir: str, per_set: int, seed: int = 0, photos_dir: Optional[str] = None,
                  progress: Optional[Any] = None) -> Tuple[Dict[str, List[str]], str]:
    """Write (or reuse) the realistic set: one WebDataset shard of `per_set` JPEGs for each
    quality in QUALITIES and size band in BANDS, then one of img2dataset's output per size in
    I2D_SIZES. Returns {set name: [shard]} (the web sets first) and the source."""
    os.makedirs(out_dir, exist_ok=True)
    sets = {set_name(q, b): [os.path.join(out_dir, f"web-q{q}-{b[0]}-{b[1]}mp-{per_set}.tar")] for q in QUALITIES for b in BANDS}
    sets.update({i2d_set_name(n): [os.path.join(out_dir, f"i2d-{n}-border-q95-{per_set}.tar")] for n in I2D_SIZES})
    marker = os.path.join(out_dir, f"SOURCE-{per_set}")
    if all(os.path.exists(p[0]) for p in sets.values()) and os.path.exists(marker):
        return sets, open(marker).read().strip()
    photos, source = load_photos(photos_dir)
    if not photos:
        raise RuntimeError("no real photographs found: pip install 'webli-io[bench]' (scikit-image ships some) "
                           "or pass --photos DIR")
    rng = np.random.default_rng(seed)
    enlarged = 0
    for (q, band), (path,) in zip([(q, b) for q in QUALITIES for b in BANDS], sets.values()):
        with tarfile.open(path + ".tmp", "w") as t:
            for i in range(per_set):
                img, up = web_photo_jpeg(photos[int(rng.integers(len(photos)))], rng, q, band)
                enlarged += up
                _add_pair(t, f"q{q}mp{round(band[0] * 10):02d}-{i:05d}", img)  # no dots: they end a key
                if progress is not None:
                    progress.update(1)
        os.replace(path + ".tmp", path)
    made_by = "Pillow (img2dataset's steps)"
    for n in I2D_SIZES:
        resizer = _i2d_resizer(n)
        made_by = "img2dataset's Resizer" if resizer is not None else made_by
        (path,) = sets[i2d_set_name(n)]
        with tarfile.open(path + ".tmp", "w") as t:
            for i in range(per_set):
                _add_pair(t, f"i2d{n}-{i:05d}", img2dataset_jpeg(photos[int(rng.integers(len(photos)))], rng, n, resizer))
                if progress is not None:
                    progress.update(1)
        os.replace(path + ".tmp", path)
    web = per_set * len(QUALITIES) * len(BANDS)
    source += f"; {enlarged} of {web} web JPEGs enlarged from a smaller photo; img2dataset sets made by {made_by}"
    with open(marker, "w") as f:
        f.write(source + "\n")
    return sets, source


def export_jpegs(sets: Dict[str, List[str]], out_dir: str) -> Dict[str, str]:
    """Write each set's JPEGs as files, one folder per set (for `cargo bench --bench
    decode_stages`, which reads a folder: WEBLI_BENCH_JPEGS=DIR)."""
    folders = {}
    for name, paths in sets.items():
        d = os.path.join(out_dir, name.replace(" ", "_"))
        os.makedirs(d, exist_ok=True)
        for i, data in enumerate(jpeg_members(paths)):
            with open(os.path.join(d, f"{i:05d}.jpg"), "wb") as f:
                f.write(data)
        folders[name] = d
    return folders


def write_bench_shards(out_dir: str, shards: int, per_shard: int, seed: int = 0, photos_dir: Optional[str] = None,
                       progress: Optional[Any] = None) -> Tuple[List[str], str]:
    """Write (or reuse) `shards` WebDataset shards of web-like JPEGs. Returns paths and source."""
    from .sample_data import draw_picture, encode

    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"bench-{i:06d}.tar") for i in range(shards)]
    photos, source = load_photos(photos_dir)
    if not photos:
        warnings.warn("no real photographs found (pip install 'webli-io[bench]' brings scikit-image's): "
                      "using drawn pictures, which decode unlike photographs", stacklevel=2)
        source = "drawn pictures (no real photos found)"
    marker = os.path.join(out_dir, "SOURCE")
    if all(os.path.exists(p) for p in paths) and os.path.exists(marker):
        return paths, open(marker).read().strip()
    rng = np.random.default_rng(seed)
    for s, path in enumerate(paths):
        with tarfile.open(path + ".tmp", "w") as t:
            for i in range(per_shard):
                key = f"{s:05d}{i:04d}"
                if photos:
                    img = web_jpeg(photos[int(rng.integers(len(photos)))], rng)
                else:
                    side = int(rng.integers(300, 1601))
                    img = encode(draw_picture(rng, side, int(side * 0.75)), "jpg", int(rng.integers(70, 96)))
                _add_pair(t, key, img)
                if progress is not None:
                    progress.update(1)
        os.replace(path + ".tmp", path)
    with open(marker, "w") as f:
        f.write(source + "\n")
    return paths, source


def jpeg_members(paths: List[str]) -> List[bytes]:
    out = []
    for p in paths:
        with tarfile.open(p) as t:
            for m in t.getmembers():
                if m.name.endswith(".jpg"):
                    out.append(t.extractfile(m).read())  # type: ignore[union-attr]
    return out


# -- the pipelines ---------------------------------------------------------------------------

def webli_loader(paths, size, batch, workers, threads=None, stream_out: Optional[list] = None):
    """webli-io in a DataLoader: `workers` processes (0: in this process) of `threads` threads."""
    from torch.utils.data import DataLoader

    from .stream import WebLIStream

    stream = WebLIStream(paths, batch_size=batch, image_size=size, num_threads=threads)
    if stream_out is not None:
        stream_out.append(stream)
    return DataLoader(stream, batch_size=None, num_workers=workers)


def _collate(samples):
    import torch

    imgs, texts = zip(*samples)
    return {"images": torch.stack(imgs), "keys": list(texts)}


def _decoder(kind: str, size: int) -> Callable[[bytes], Any]:
    import torch
    from PIL import Image

    if kind == "torchvision":
        from torchvision import transforms

        tf = transforms.Compose([transforms.Resize((size, size)), transforms.PILToTensor()])

        def decode(data: bytes):
            return tf(Image.open(io.BytesIO(data)).convert("RGB"))
    elif kind == "draft":
        def decode(data: bytes):
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (size, size))  # libjpeg decodes at 1/2, 1/4 or 1/8 scale
            arr = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
            return torch.from_numpy(arr.copy()).permute(2, 0, 1)
    elif kind == "simplejpeg":
        import simplejpeg

        def decode(data: bytes):
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size, min_width=size)
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR))
            return torch.from_numpy(arr.copy()).permute(2, 0, 1)
    else:
        raise ValueError(kind)
    return decode


def wds_loader(paths, size, batch, workers, kind: str):
    import webdataset as wds
    from torch.utils.data import DataLoader

    decode = _decoder(kind, size)
    ds = (
        wds.WebDataset(paths, shardshuffle=False, workersplitter=wds.split_by_worker, empty_check=False)
        .to_tuple("jpg", "txt")
        .map_tuple(decode, lambda b: b.decode())
        .batched(batch, collation_fn=_collate)
    )
    return DataLoader(ds, batch_size=None, num_workers=workers)


def spdl_loader(paths, size, batch, threads):
    """SPDL as its docs use it: tars split with `spdl.io.iter_tarfile`, each batch of JPEGs
    decoded and resized by `spdl.io.load_image_batch` (FFmpeg, GIL released) on `threads`
    threads, several batches in flight."""
    import spdl.io
    import torch

    def chunks():
        keys, data = [], []
        for path in paths:
            with open(path, "rb") as f:
                for name, member in spdl.io.iter_tarfile(f.read()):
                    if name.endswith(".jpg"):
                        keys.append(name)
                        data.append(bytes(member))
                        if len(data) == batch:
                            yield keys, data
                            keys, data = [], []
        if data:
            yield keys, data

    def load(chunk):
        keys, data = chunk
        arr = spdl.io.to_numpy(spdl.io.load_image_batch(data, width=size, height=size, pix_fmt="rgb24"))
        return {"images": torch.from_numpy(arr).permute(0, 3, 1, 2), "keys": keys}

    def batches():
        with ThreadPoolExecutor(threads) as ex:
            yield from ex.map(load, chunks())

    return batches()


def dali_loader(paths, size, batch, threads, index_dir: str):
    """NVIDIA DALI's CPU pipeline (`device_id=None`): its webdataset reader (index files from
    its `wds2idx`, made once), CPU decoder (libjpeg-turbo) and resize, `threads` threads."""
    import subprocess
    import sys

    import torch
    from nvidia.dali import fn, pipeline_def, types

    os.makedirs(index_dir, exist_ok=True)
    index = []
    for p in paths:
        # Named by the shard's path, size and mtime with a stable hash (str's hash() changes with
        # every process), so an index is made once per shard version and reused.
        st = os.stat(p)
        key = zlib.crc32(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
        ix = os.path.join(index_dir, f"{os.path.basename(p)}.{key:08x}.idx")
        if not os.path.exists(ix):
            code = "import sys; from wds2idx import main; sys.argv = ['wds2idx', sys.argv[1], sys.argv[2]]; main()"
            subprocess.run([sys.executable, "-c", code, p, ix], check=True, capture_output=True, timeout=600)
        index.append(ix)

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, prefetch_queue_depth=2)
    def pipe():
        jpg = fn.readers.webdataset(paths=list(paths), index_paths=index, ext=["jpg"], name="reader")
        return fn.resize(fn.decoders.image(jpg, device="cpu", output_type=types.RGB), resize_x=size, resize_y=size)

    p = pipe()
    p.build()
    total = p.epoch_size("reader")

    def batches():
        n = 0
        while n < total:
            (out,) = p.run()
            arr = out.as_array()[: total - n]
            n += len(arr)
            yield {"images": torch.from_numpy(arr).permute(0, 3, 1, 2), "keys": [""] * len(arr)}

    return batches()


def time_loader(loader: Iterable, progress: Optional[Any] = None) -> Tuple[int, float]:
    """Images and seconds, timed from the first batch on (worker start-up excluded)."""
    it = iter(loader)
    first = next(it)
    if progress is not None:
        progress.update(len(first["keys"]))
    n, start = 0, time.perf_counter()
    for batch in it:
        k = len(batch["keys"])
        n += k
        if progress is not None:
            progress.update(k)
    return n, time.perf_counter() - start


def decode_only(jpegs: List[bytes], threads: int, rounds: int = 1) -> float:
    """images/s of a full-scale simplejpeg decode on `threads` threads (GIL released)."""
    import simplejpeg

    work = jpegs * rounds
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"), jpegs[: threads * 4]))  # warm up
        start = time.perf_counter()
        for _ in ex.map(lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"), work, chunksize=8):
            pass
        return len(work) / (time.perf_counter() - start)


def decode_scaled(jpegs: List[bytes], threads: int, size: int, rounds: int = 1) -> float:
    """images/s of simplejpeg's decode at the smallest DCT scale that keeps both sides >= `size`
    (libjpeg-turbo's M/8 scaling: the scale a tile of `size` needs), on `threads` threads."""
    import simplejpeg

    def one(d: bytes) -> Any:
        return simplejpeg.decode_jpeg(d, colorspace="RGB", min_height=size, min_width=size)

    work = jpegs * rounds
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, jpegs[: threads * 4]))
        start = time.perf_counter()
        for _ in ex.map(one, work, chunksize=8):
            pass
        return len(work) / (time.perf_counter() - start)


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stream_in_process(paths, size, batch, threads, images: int, sample_rss: bool = False, **settings: Any) -> Dict[str, Any]:
    """Stream in this process (no DataLoader) with `threads` decode threads for `images` images,
    looping over epochs; images/s, timed from the first batch on (the start-up of the first
    epoch excluded, the later epochs' included, as a training run sees them) and, optionally,
    RSS per batch."""
    from .stream import WebLIStream

    stream = WebLIStream(paths, batch_size=batch, image_size=size, num_threads=threads, **settings)
    n, epoch, rss, timed = 0, 0, [], 0
    before = rss_mb()
    start = None
    while n < images:
        stream.set_epoch(epoch)
        for b in stream:
            k = len(b["keys"])
            n += k
            if start is None:
                start = time.perf_counter()
            else:
                timed += k
            if sample_rss:
                rss.append(rss_mb())
            if n >= images:
                break
        epoch += 1
    seconds = time.perf_counter() - (start or time.perf_counter())
    out: Dict[str, Any] = {"images": n, "images_per_second": timed / seconds if seconds > 0 else 0.0, "epochs": epoch}
    if rss:
        tenth = max(1, len(rss) // 10)
        out.update(rss_mb_before=round(before, 1), rss_mb_after_10pct=round(rss[tenth - 1], 1), rss_mb_peak=round(max(rss), 1),
                   rss_mb_end=round(rss[-1], 1), rss_mb_peak_after_10pct=round(max(rss[tenth:] or rss), 1))
    return out


PEERS = ("wds + PIL draft()", "SPDL", "DALI CPU")
INSTALL = "pip install 'webli-io[bench]'"


def _probe_spdl(jpeg: bytes, size: int) -> None:
    import spdl.io

    spdl.io.to_numpy(spdl.io.load_image_batch([jpeg], width=size, height=size, pix_fmt="rgb24"))


def _probe_dali() -> None:
    import nvidia.dali  # noqa: F401
    import wds2idx  # noqa: F401


def run(paths: List[str], size: int, batch: int, workers: int, repeat: int, skip: Iterable[str] = (),
        scaling: bool = True, memory_images: int = 0, progress: Optional[Any] = None,
        sets: Optional[Dict[str, List[str]]] = None, modes: bool = False, index_dir: Optional[str] = None) -> Dict[str, Any]:
    """Run every pipeline `repeat` times, interleaved; keep the best images/s of each. With
    `sets`, also webli-io and the decode-only yardstick on each set alone; with `modes`,
    webli-io's resize modes with and without region decoding (`crop_decode`)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cpus // max(1, workers))
    pipelines: Dict[str, Callable[[], Iterable]] = {}
    streams: list = []
    pipelines["webli-io (threads)"] = lambda: webli_loader(paths, size, batch, 0, cpus, streams)
    if workers > 0:
        pipelines[f"webli-io ({workers} workers)"] = lambda: webli_loader(paths, size, batch, workers, threads)
    available = {"wds + PIL + torchvision": "torchvision", "wds + PIL draft()": "draft", "wds + simplejpeg scaled": "simplejpeg"}
    # Baselines that could not run, by the same name they have when they run: name -> reason.
    missing: Dict[str, str] = {}
    for name, kind in available.items():
        if name in skip:
            continue
        try:
            _decoder(kind, size)
            import webdataset  # noqa: F401

            pipelines[name] = (lambda k: (lambda: wds_loader(paths, size, batch, workers, k)))(kind)
        except ImportError as e:
            missing[name] = f"{e.name} not installed ({INSTALL})"
    jpegs = jpeg_members(paths)
    if "SPDL" not in skip:
        try:
            _probe_spdl(jpegs[0], size)
            pipelines["SPDL"] = lambda: spdl_loader(paths, size, batch, cpus)
        except ImportError as e:
            missing["SPDL"] = f"{e.name} not installed ({INSTALL}; SPDL also needs FFmpeg's shared libraries)"
        except Exception as e:  # noqa: BLE001 - SPDL reports missing FFmpeg libraries as RuntimeError
            missing["SPDL"] = f"SPDL cannot decode here: {str(e).splitlines()[0][:200]} (it needs FFmpeg's shared libraries)"
    if "DALI CPU" not in skip:
        try:
            _probe_dali()
            import tempfile

            idx = index_dir or os.path.join(tempfile.gettempdir(), "webli-io-bench-dali-index")
            pipelines["DALI CPU"] = lambda: dali_loader(paths, size, batch, cpus, idx)
        except ImportError as e:
            missing["DALI CPU"] = f"{e.name} not installed (pip install nvidia-dali-cuda120: its CPU pipeline needs no GPU)"
    best: Dict[str, float] = {k: 0.0 for k in pipelines}
    for _ in range(repeat):
        for name, make in pipelines.items():
            if progress is not None:
                progress.set_description(name)
            n, dt = time_loader(make(), progress)
            best[name] = max(best[name], n / dt)
    result: Dict[str, Any] = {"cpus": cpus, "workers": workers, "threads_per_worker": threads, "repeat": repeat}
    result["mean_megapixels"] = round(float(np.mean([_dims(j) for j in jpegs[:200]])) / 1e6, 3)
    try:
        if progress is not None:
            progress.set_description("decode-only")
        best["decode-only (yardstick)"] = max(decode_only(jpegs, workers) for _ in range(repeat))
    except ImportError as e:
        missing["decode-only (yardstick)"] = f"{e.name} not installed ({INSTALL})"
    result["images_per_second"] = {k: round(v, 1) for k, v in best.items()}
    peers = {k: best[k] for k in PEERS if best.get(k)}
    if peers:
        name = max(peers, key=lambda k: peers[k])
        result["best_peer"] = {"pipeline": name, "images_per_second": round(peers[name], 1),
                               "webli_io_ratio": round(best["webli-io (threads)"] / peers[name], 2)}
    ours = best["webli-io (threads)"]
    result["webli_io_ratio_to"] = {k: round(ours / v, 2) for k, v in best.items() if not k.startswith("webli-io") and v > 0}
    if workers > 0:
        w = best[f"webli-io ({workers} workers)"]
        result["webli_io_workers_ratio_to"] = {k: round(w / v, 2) for k, v in best.items() if not k.startswith("webli-io") and v > 0}
    if streams:
        st = streams[-1].stats()
        total = sum(st[k] for k in ("ns_read", "ns_decode", "ns_resize", "ns_batch")) or 1
        result["webli_io_stages"] = {k[3:]: {"thread_seconds": round(st[k] / 1e9, 3), "share": round(st[k] / total, 3)}
                                     for k in ("ns_read", "ns_decode", "ns_resize", "ns_batch")}
    if scaling and cpus > 1:
        if progress is not None:
            progress.set_description(f"scaling 1 vs {cpus} threads")
        n_img = 3 * len(jpegs)  # three epochs: the steady state
        one = max(stream_in_process(paths, size, batch, 1, n_img)["images_per_second"] for _ in range(repeat))
        many = max(stream_in_process(paths, size, batch, cpus, n_img)["images_per_second"] for _ in range(repeat))
        result["scaling"] = {"threads": cpus, "images_per_second_1": round(one, 1), f"images_per_second_{cpus}": round(many, 1),
                             "efficiency": round(many / (one * cpus), 3)}
    if sets:
        result["sets"] = per_set(sets, size, batch, cpus, repeat, progress)
    if modes:
        result["modes"] = resize_modes(paths, size, batch, cpus, len(jpegs), repeat, progress)
    if memory_images:
        if progress is not None:
            progress.set_description("memory")
        result["memory"] = stream_in_process(paths, size, batch, cpus, memory_images, sample_rss=True)
    if missing:
        result["not_run"] = missing
    return result


def per_set(sets: Dict[str, List[str]], size: int, batch: int, threads: int, repeat: int,
            progress: Optional[Any] = None) -> Dict[str, Dict[str, Any]]:
    """webli-io (in this process, `threads` threads, one resampled stream over the set for at
    least three passes and 16 batches: the steady state, whatever the set's size) and the
    decode-only yardsticks (full, and at the tile's DCT scale) on each set, in interleaved
    rounds."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, paths in sets.items():
        if progress is not None:
            progress.set_description(f"set {name}")
        jpegs = jpeg_members(paths)
        images = max(3 * len(jpegs), 16 * batch)
        try:
            import simplejpeg  # noqa: F401

            yardsticks = True
        except ImportError:
            yardsticks = False
        # Interleaved rounds (A B C A B C ...), best of each: drift hits all alike.
        ours = full = scaled = 0.0
        for _ in range(repeat):
            ours = max(ours, stream_in_process(paths, size, batch, threads, images, resampled=True)["images_per_second"])
            if yardsticks:
                full = max(full, decode_only(jpegs, threads, rounds=max(1, images // len(jpegs))))
                scaled = max(scaled, decode_scaled(jpegs, threads, size, rounds=max(1, images // len(jpegs))))
        row: Dict[str, Any] = {"images": len(jpegs), "mean_megapixels": round(float(np.mean([_dims(j) for j in jpegs])) / 1e6, 2),
                               "mean_kb": round(float(np.mean([len(j) for j in jpegs])) / 1e3, 1), "webli_io": round(ours, 1)}
        if yardsticks:
            row.update(decode_only=round(full, 1), ratio=round(ours / full, 2), decode_scaled=round(scaled, 1),
                       ratio_scaled=round(ours / scaled, 2))
        out[name] = row
    return out


MODES: Tuple[Tuple[str, Dict[str, Any]], ...] = (("squash", {}), ("squash, fast_decode", {"fast_decode": True}),
         ("center_crop, whole decode", {"resize": "center_crop", "crop_decode": False}),
         ("center_crop", {"resize": "center_crop"}),
         ("random_resized_crop, whole decode", {"resize": "random_resized_crop", "crop_decode": False}),
         ("random_resized_crop", {"resize": "random_resized_crop"}))


def resize_modes(paths: List[str], size: int, batch: int, threads: int, images: int, repeat: int,
                 progress: Optional[Any] = None) -> Dict[str, float]:
    """webli-io's images/s per resize mode, the crop modes with and without region decoding."""
    best = {name: 0.0 for name, _ in MODES}
    for _ in range(repeat):
        for name, settings in MODES:
            if progress is not None:
                progress.set_description(f"mode {name}")
            best[name] = max(best[name], stream_in_process(paths, size, batch, threads, images, **settings)["images_per_second"])
    return {k: round(v, 1) for k, v in best.items()}


def _dims(jpeg: bytes) -> int:
    from PIL import Image

    w, h = Image.open(io.BytesIO(jpeg)).size
    return w * h


def format_table(result: Dict[str, Any]) -> str:
    workers = [k for k in result["images_per_second"] if k.startswith("webli-io (") and "workers" in k]
    head = f"{'pipeline':<28}{'images/s':>10}{'webli-io (threads) is':>24}"
    if workers:
        head += f"{workers[0] + ' is':>26}"
    lines = [head]
    for k, v in result["images_per_second"].items():
        line = f"{k:<28}{v:>10.1f}"
        if not k.startswith("webli-io"):
            line += f"{result['webli_io_ratio_to'].get(k, float('nan')):>23.2f}x"
            if workers:
                line += f"{result['webli_io_workers_ratio_to'].get(k, float('nan')):>25.2f}x"
        lines.append(line)
    if "best_peer" in result:
        b = result["best_peer"]
        lines.append(f"\nbest of PIL draft(), SPDL, DALI CPU: {b['pipeline']} ({b['images_per_second']:.0f} img/s); "
                     f"webli-io (threads) is {b['webli_io_ratio']:.2f}x")
    if "sets" in result:
        lines.append(f"\nper set (one process, {result['cpus']} threads, rounds interleaved; decode-only: simplejpeg's full "
                     f"decode and its decode at the DCT scale the tile needs, same threads):")
        lines.append(f"  {'set':<28}{'MP':>6}{'KB':>7}{'webli-io':>10}{'full':>8}{'ratio':>7}{'scaled':>8}{'ratio':>7}")
        for name, r in result["sets"].items():
            extra = (f"{r['decode_only']:>8.0f}{r['ratio']:>6.2f}x{r['decode_scaled']:>8.0f}{r['ratio_scaled']:>6.2f}x"
                     if "ratio" in r else f"{'-':>8}{'-':>7}{'-':>8}{'-':>7}")
            lines.append(f"  {name:<28}{r['mean_megapixels']:>6.2f}{r['mean_kb']:>7.0f}{r['webli_io']:>10.0f}{extra}")
    if "modes" in result:
        m = result["modes"]
        lines.append(f"\nwebli-io per resize mode (one process, {result['cpus']} threads, all sets):")
        for name, v in m.items():
            gain = ""
            if name in ("center_crop", "random_resized_crop") and m.get(f"{name}, whole decode"):
                gain = f"  ({v / m[name + ', whole decode']:.2f}x the whole decode: crops decoded as crops)"
            elif name == "squash, fast_decode" and m.get("squash"):
                gain = f"  ({v / m['squash']:.2f}x exact)"
            lines.append(f"  {name:<36}{v:>8.0f} img/s{gain}")
    if "webli_io_stages" in result:
        lines.append("\nwebli-io time per stage (thread time, all threads):")
        for k, v in result["webli_io_stages"].items():
            lines.append(f"  {k:<8}{v['thread_seconds']:>8.2f} s {100 * v['share']:>6.1f}%")
    if "scaling" in result:
        s = result["scaling"]
        many = [v for k, v in s.items() if k.startswith("images_per_second_") and not k.endswith("_1")][0]
        lines.append(f"\nscaling (one process): 1 thread {s['images_per_second_1']:.0f} img/s, {s['threads']} threads "
                     f"{many:.0f} img/s: {100 * s['efficiency']:.0f}% of linear")
    if "memory" in result:
        m = result["memory"]
        lines.append(f"memory over {m['images']} images ({m['epochs']} epochs): RSS {m['rss_mb_before']} MB before, "
                     f"{m['rss_mb_after_10pct']} MB after 10%, "
                     f"peak {m['rss_mb_peak_after_10pct']} MB after that, {m['rss_mb_end']} MB at the end")
    for name, why in result.get("not_run", {}).items():
        lines.append(f"not run: {name}: {why}")
    return "\n".join(lines)
