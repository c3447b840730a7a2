"""decode_device="cuda": the core leaves JPEGs encoded (headers read, crops chosen) and the
Python layer decodes them with torchvision's decode_jpeg, crops, resizes and flips on the device.

CI has no GPU: the CPU fallback is tested as users meet it (a warning, the CPU's batches), and
the GPU code path itself runs here on CPU tensors (torchvision's decode_jpeg on the CPU), so
everything but nvJPEG is exercised. On a GPU machine the last test runs it on CUDA."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import webli_io.gpu as gpu
from tests._helpers import write_tar
from webli_io import WebLIStream

pytest.importorskip("torchvision")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture
def shard(tmp_path, photos):
    """JPEGs of 0.3-1.5 MP from real photos, plus one PNG (which the core decodes itself)."""
    members = []
    for i, photo in enumerate(photos * 2):
        s = (0.6 + 0.25 * (i % 5)) * 1000 / max(photo.size)
        img = photo.resize((max(8, int(photo.width * s)), max(8, int(photo.height * s))), Image.BICUBIC)
        buf = io.BytesIO()
        fmt = "PNG" if i == 3 else "JPEG"
        img.save(buf, format=fmt, quality=90)
        members += [(f"{i:05d}.{'png' if fmt == 'PNG' else 'jpg'}", buf.getvalue()), (f"{i:05d}.txt", b"a photo")]
    return write_tar(tmp_path / "s.tar", members)


@pytest.fixture
def on_cpu(monkeypatch):
    """Run the GPU path on the CPU: CUDA reported usable, decode_batch's device set to "cpu".
    Records each call's encoded list."""
    calls = []
    real = gpu.decode_batch

    def decode_batch(images, encoded, *args, **kwargs):
        calls.append(list(encoded))
        kwargs["device"] = "cpu"
        return real(images, encoded, *args, **kwargs)

    monkeypatch.setattr(gpu, "cuda_usable", lambda: None)
    monkeypatch.setattr(gpu, "decode_batch", decode_batch)
    return calls


def _images(stream) -> np.ndarray:
    out = []
    for b in stream:
        x = b["images"]
        out.append(x.cpu().numpy() if isinstance(x, torch.Tensor) else x)
    return np.concatenate(out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback of a machine without CUDA")
def test_without_cuda_it_warns_and_decodes_on_the_cpu(shard, caplog):
    with caplog.at_level(logging.WARNING, logger="webli_io"):
        s = WebLIStream(shard, batch_size=4, image_size=64, decode_device="cuda")
    assert "no CUDA device" in caplog.text and s.options.decode_device == "cpu"
    np.testing.assert_array_equal(_images(s), _images(WebLIStream(shard, batch_size=4, image_size=64)))


@pytest.mark.parametrize("resize,hflip", [("squash", 0.0), ("center_crop", 0.0), ("random_resized_crop", 0.5)])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_the_gpu_path_gives_the_cpu_tiles_within_psnr(shard, on_cpu, resize, hflip, layout):
    kw = dict(batch_size=4, image_size=64, resize=resize, hflip=hflip, layout=layout, seed=3)
    ours = _images(WebLIStream(shard, decode_device="cuda", **kw))
    ref = _images(WebLIStream(shard, **kw))
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.uint8
    encoded = [e for call in on_cpu for e in call]
    assert sum(e is not None for e in encoded) == len(ref) - 1, "every JPEG left encoded, the PNG decoded by the core"
    values = [psnr(a, b) for a, b in zip(ours, ref)]
    # Same crop boxes and flips (rounded to whole pixels), torch's antialiased bilinear vs
    # Pillow's: measured 31-48 dB here; a wrong crop or a missed flip gives 10-20 dB.
    assert min(values) >= 25.0 and np.mean(values) >= 30.0, values
    assert values.count(float("inf")) == 1, "the PNG's tile is the core's own, exactly"


def test_float_output_is_normalised_like_the_core(shard, on_cpu):
    kw = dict(batch_size=4, image_size=32, output="float", mean="clip", std="clip")
    ours = _images(WebLIStream(shard, decode_device="cuda", **kw))
    ref = _images(WebLIStream(shard, **kw))
    assert ours.dtype == ref.dtype == np.float32
    assert np.abs(ours - ref).mean() < 0.05 and np.abs(ours - ref).max() < 2.0


def test_cuda_decode_refuses_dataloader_workers_with_the_fix(shard, on_cpu):
    from torch.utils.data import DataLoader

    with pytest.raises(Exception, match="num_workers=0"):
        list(DataLoader(WebLIStream(shard, batch_size=4, image_size=32, decode_device="cuda"), batch_size=None, num_workers=1))


def test_a_bad_setting_value_is_a_clear_error():
    from webli_io import ConfigError

    with pytest.raises(ConfigError, match="decode_device"):
        WebLIStream("x.tar", decode_device="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_real_gpu(shard):
    s = WebLIStream(shard, batch_size=4, image_size=64, decode_device="cuda")
    batches = list(s)
    assert all(b["images"].is_cuda for b in batches)
    ours = np.concatenate([b["images"].cpu().numpy() for b in batches])
    ref = _images(WebLIStream(shard, batch_size=4, image_size=64))
    assert np.mean([psnr(a, b) for a, b in zip(ours, ref)]) >= 30.0


def test_a_jpeg_the_device_decoder_refuses_is_decoded_by_the_core_and_counted(tmp_path, photos, on_cpu):
    """A stray marker in the entropy data: torchvision's decode_jpeg raises, libjpeg-turbo in the
    core decodes it with a warning. The batch goes on; that sample's tile comes from the core's
    pixels (close to the CPU stream's), counted as a fallback."""
    from torchvision.io import decode_jpeg

    buf = io.BytesIO()
    photos[0].save(buf, format="JPEG", quality=90)
    good = buf.getvalue()
    sos = good.find(b"\xff\xda")
    bad = good[: sos + 400] + b"\xff\xc8" + good[sos + 402:]
    with pytest.raises(RuntimeError):
        decode_jpeg(torch.frombuffer(bytearray(bad), dtype=torch.uint8))
    shard = write_tar(tmp_path / "b.tar", [("a.jpg", good), ("a.txt", b"x"), ("b.jpg", bad), ("b.txt", b"y")])
    s = WebLIStream(shard, batch_size=2, image_size=32, decode_device="cuda")
    ours = _images(s)
    ref = _images(WebLIStream(shard, batch_size=2, image_size=32))
    assert s.stats()["gpu_decode_fallbacks"] == 1 and "gpu_decode_failed" not in s.stats()
    assert min(psnr(a, b) for a, b in zip(ours, ref)) >= 25.0
