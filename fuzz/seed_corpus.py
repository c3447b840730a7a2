"""Write seed corpora for the fuzz targets: small real images (JPEG baseline and progressive,
PNG, WebP, GIF, BMP, grey, RGBA) and small WebDataset shards. Run before `cargo fuzz run`:

    python fuzz/seed_corpus.py && cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time=600
"""

import io
import os
import sys
import tarfile

from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests"))


def photo():
    import skimage

    return Image.open(os.path.join(os.path.dirname(skimage.__file__), "data", "chelsea.png")).convert("RGB")


def main():
    img = photo()
    dec = os.path.join(here, "corpus", "decode")
    tar = os.path.join(here, "corpus", "tar_reader")
    os.makedirs(dec, exist_ok=True)
    os.makedirs(tar, exist_ok=True)
    seeds = {}
    for size in (8, 33, 120):
        small = img.resize((size, max(1, size * 2 // 3)))
        for name, kw in [("jpg", dict(format="JPEG", quality=80)), ("prog.jpg", dict(format="JPEG", progressive=True)),
                         ("png", dict(format="PNG")), ("webp", dict(format="WEBP")), ("gif", dict(format="GIF")),
                         ("bmp", dict(format="BMP"))]:
            buf = io.BytesIO()
            small.save(buf, **kw)
            seeds[f"{size}.{name}"] = buf.getvalue()
        for mode in ("L", "RGBA", "CMYK"):
            buf = io.BytesIO()
            small.convert(mode).save(buf, format="JPEG" if mode == "CMYK" else "PNG")
            seeds[f"{size}.{mode}"] = buf.getvalue()
    for name, data in seeds.items():
        open(os.path.join(dec, name), "wb").write(data)
    for n in (1, 3):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for i in range(n):
                for ext, data in (("jpg", seeds["33.jpg"]), ("txt", b"a caption"), ("json", b'{"language": "en"}')):
                    info = tarfile.TarInfo(f"dir/{i:04d}.{ext}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        open(os.path.join(tar, f"shard{n}.tar"), "wb").write(buf.getvalue())
    print(f"{len(seeds)} image seeds, 2 tar seeds")


if __name__ == "__main__":
    main()
