"""Issue 24, item 7: OpenCLIP's preprocessing, matched. The reference is the real
``open_clip.transform.image_transform`` (its eval transform, as ``create_model_and_transforms``
builds it: Pillow decode, torchvision's ``Resize``/``CenterCrop`` or OpenCLIP's
``ResizeKeepRatio``/``CenterCropOrPad``, bicubic by default), on real photographs as JPEG.

The stated bounds (per channel, 0-255; docs/howto/openclip.md), with OpenCLIP's ``resize_mode``
names given to the stream as they are:

- a full decode (``scaled_decode=False, crop_decode=False``): max <= FULL_MAX[interpolation], mean
  <= FULL_MEAN on every image (what is left is rounding: Pillow's and fast_image_resize's
  fixed-point filter weights; bicubic's negative lobes carry it further). Measured: bilinear max
  1, bicubic max 6, worst image mean 0.21.
- the default (DCT-scaled, region decode): per image mean <= SCALED_MEAN and PSNR >=
  SCALED_PSNR dB, on photos 2x larger than they are stored (where the scaled decode is used).
  Measured: worst image mean 3.8 levels, worst PSNR 30.6 dB (letterbox), most images 0.2-0.5.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from webli_io import decode_resize

SIZE = 224
# area and lanczos (against Pillow's BOX and LANCZOS): the same means, a few pixels further off
# where a box edge or a lobe falls on a sharp edge (measured max 17 and 10).
FULL_MAX, FULL_MEAN = {"bilinear": 1, "bicubic": 6, "area": 20, "lanczos": 12}, 0.25
SCALED_MEAN, SCALED_PSNR = 4.0, 30.0


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _reference(transform, data: bytes) -> np.ndarray:
    x = transform(Image.open(io.BytesIO(data)))  # [3, S, S] float in 0..1 (mean 0, std 1)
    return (x * 255).round().to(dtype=__import__("torch").uint8).permute(1, 2, 0).numpy().astype(int)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("mode", ["squash", "shortest", "longest"])
def test_the_stream_matches_openclips_eval_transform(photos, mode, interpolation):
    from open_clip.transform import image_transform

    transform = image_transform(SIZE, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3, resize_mode=mode,
                                interpolation=interpolation)
    full, scaled = [], []
    for photo in photos:
        for upscale in (1, 2):
            img = photo if upscale == 1 else photo.resize((photo.width * 2, photo.height * 2), Image.BICUBIC)
            data = _jpeg(img)
            ref = _reference(transform, data)
            ours = decode_resize(data, SIZE, mode, interpolation=interpolation, scaled_decode=False, crop_decode=False)
            full.append(np.abs(ours.astype(int) - ref))
            if upscale == 2:
                scaled.append((np.abs(decode_resize(data, SIZE, mode, interpolation=interpolation).astype(int) - ref),
                               _psnr(decode_resize(data, SIZE, mode, interpolation=interpolation), ref)))
    worst = max(int(d.max()) for d in full)
    mean = max(float(d.mean()) for d in full)
    print(f"{mode}/{interpolation}: full decode max {worst}, worst image mean {mean:.3f}; scaled decode worst mean "
          f"{max(float(d.mean()) for d, _ in scaled):.3f}, worst PSNR {min(p for _, p in scaled):.1f} dB")
    assert worst <= FULL_MAX[interpolation] and mean <= FULL_MEAN, (worst, mean)
    assert all(d.mean() <= SCALED_MEAN and p >= SCALED_PSNR for d, p in scaled), [(round(float(d.mean()), 2), round(p, 1))
                                                                                  for d, p in scaled]


def test_a_different_filter_misses_the_bound(photos):
    """The bound tells the filters apart: bilinear against OpenCLIP's bicubic fails it."""
    from open_clip.transform import image_transform

    transform = image_transform(SIZE, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3, resize_mode="squash")
    data = _jpeg(photos[0])
    diff = np.abs(decode_resize(data, SIZE, "squash", interpolation="bilinear", scaled_decode=False).astype(int)
                  - _reference(transform, data))
    assert diff.max() > FULL_MAX["bicubic"]


@pytest.mark.parametrize("interpolation,pillow", [("area", Image.BOX), ("lanczos", Image.LANCZOS), ("bicubic", Image.BICUBIC)])
def test_each_filter_is_pillows(photos, interpolation, pillow):
    for photo in photos:
        data = _jpeg(photo)
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((96, 96), pillow), dtype=int)
        diff = np.abs(decode_resize(data, 96, "squash", interpolation=interpolation, scaled_decode=False).astype(int) - ref)
        assert diff.max() <= FULL_MAX[interpolation] and diff.mean() <= FULL_MEAN, (interpolation, photo.size, diff.max(), diff.mean())
