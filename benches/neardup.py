"""Near-duplicate detection, measured on real photographs copied the way the web copies them.

    python benches/neardup.py [--photos DIR ...] [--copies 10] [--distractors 1000000] [--json]

Photos: scikit-image's bundled ones plus every folder given (e.g. Debian's mate-backgrounds and
opencv-doc: `apt-get download mate-backgrounds opencv-doc && dpkg-deb -x ...`). Each photo is a
blocklist entry (its 36 crop-variant fingerprints, as `webli-io index-eval` stores them); each
copy is the photo cropped by up to 10% a side, rescaled 0.5x-2x, brightened or darkened up to
10%, re-encoded at JPEG quality 30-95, and fingerprinted once, as the stream does.

Reports, for radii (pHash, dHash): recall (a copy matches one of its own photo's variants) and
false matches against a blocklist of ~1 M hashes made of crop variants of random crops of the
*other* photos (a query never meets distractors cut from its own photo). The plain 64-bit
pHash of whole images is reported beside, as the baseline the issue describes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageEnhance

from webli_io._core import fingerprints
from webli_io.bench import load_photos


def collect(dirs):
    photos, _ = load_photos()
    names = [f"skimage-{i}" for i in range(len(photos))]
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in sorted(files):
                if f.lower().endswith((".jpg", ".jpeg", ".png")):
                    try:
                        img = Image.open(os.path.join(root, f))
                        if img.mode not in ("RGB", "RGBA", "P") or min(img.size) < 200:
                            continue  # grey charts, tiny icons: not photographs
                        photos.append(img.convert("RGB"))
                        names.append(f)
                    except OSError:
                        pass
    return photos, names


def encode(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def web_copy(photo: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = photo.size
    cut_x, cut_y = rng.uniform(0, 0.1), rng.uniform(0, 0.1)
    sx, sy = rng.uniform(0, 1), rng.uniform(0, 1)
    box = (cut_x * sx * w, cut_y * sy * h, w - cut_x * (1 - sx) * w, h - cut_y * (1 - sy) * h)
    img = photo.crop(tuple(int(round(v)) for v in box))
    f = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    img = img.resize((max(16, int(img.width * f)), max(16, int(img.height * f))), Image.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(1.0 + rng.uniform(-0.1, 0.1))
    return encode(img, int(rng.integers(30, 96)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", nargs="*", default=[])
    p.add_argument("--copies", type=int, default=10)
    p.add_argument("--distractors", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    photos, names = collect(a.photos)
    t0 = time.perf_counter()
    # The blocklist: 36 variants of each photo.
    block = [np.array(fingerprints(encode(ph, 95), variants=True), dtype=np.uint64) for ph in photos]
    # Distinct photos only: the sets hold stereo pairs and several shots of one scene (opencv's
    # aloeL/aloeR, skimage's motorcycle_left/right), which are near-duplicates of each other for
    # real. Keep the first of each group (any variant within (12, 16) of the other's whole image).
    keep = []
    for i, b in enumerate(block):
        same = any(((np.bitwise_count(block[j][:, 0] ^ b[0, 0]) <= 12) & (np.bitwise_count(block[j][:, 1] ^ b[0, 1]) <= 16)).any()
                   or ((np.bitwise_count(b[:, 0] ^ block[j][0, 0]) <= 12) & (np.bitwise_count(b[:, 1] ^ block[j][0, 1]) <= 16)).any()
                   for j in keep)
        if not same:
            keep.append(i)
    dropped = len(photos) - len(keep)
    photos, names, block = [photos[i] for i in keep], [names[i] for i in keep], [block[i] for i in keep]
    whole = np.array([b[0] for b in block])
    # Queries: web-like copies, fingerprinted once.
    queries, owner = [], []
    for i, ph in enumerate(photos):
        for _ in range(a.copies):
            queries.append(fingerprints(web_copy(ph, rng))[0])
            owner.append(i)
    q = np.array(queries, dtype=np.uint64)
    owner = np.array(owner)
    # Distractors: crop variants of random crops (30-100% of each side) of the photos.
    dis, dis_owner = [], []
    per = 36
    while len(dis) * per < a.distractors:
        i = int(rng.integers(len(photos)))
        ph = photos[i]
        w, h = ph.size
        cw, ch = int(w * rng.uniform(0.3, 1.0)), int(h * rng.uniform(0.3, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        dis.append(np.array(fingerprints(encode(ph.crop((x, y, x + cw, y + ch)), 90), variants=True), dtype=np.uint64))
        dis_owner.append(np.full(per, i))
    d = np.concatenate(dis)[: a.distractors]
    d_owner = np.concatenate(dis_owner)[: a.distractors]
    t_build = time.perf_counter() - t0

    def dist(x, y):
        return np.bitwise_count(np.bitwise_xor(x, y))

    # Own-variant distances (recall) and the nearest other-photo distractor per query (false matches).
    own_p = np.array([dist(block[o][:, 0], qq[0]) for qq, o in zip(q, owner)])   # [Q, 36]
    own_d = np.array([dist(block[o][:, 1], qq[1]) for qq, o in zip(q, owner)])
    grid = [(rp, rd) for rp in (4, 5, 6, 7, 8, 10) for rd in (8, 10, 12, 14, 16, 18)]
    false = {g: 0 for g in grid}
    pair_false = {g: 0 for g in grid}
    for qq, o in zip(q, owner):
        keep = d_owner != o
        dp, dd = dist(d[keep, 0], qq[0]), dist(d[keep, 1], qq[1])
        for g in grid:
            hit = int(np.count_nonzero((dp <= g[0]) & (dd <= g[1])))
            pair_false[g] += hit
            false[g] += hit > 0
    n_pairs = sum(int(np.count_nonzero(d_owner != o)) for o in owner)
    rows = []
    for g in grid:
        recall = float(np.mean(((own_p <= g[0]) & (own_d <= g[1])).any(axis=1)))
        rows.append({"phash_radius": g[0], "dhash_radius": g[1], "recall": round(recall, 4),
                     "false_match_rate_vs_blocklist": round(false[g] / len(q), 5), "false_pair_rate": pair_false[g] / n_pairs})
    # Baseline: one whole-image pHash per photo and per copy, pHash radius only, 67-style index.
    base = []
    for r in (8, 12, 16):
        rec = float(np.mean(dist(whole[owner, 0], q[:, 0]) <= r))
        fm = float(np.mean([(np.delete(dist(whole[:, 0], qq[0]), o) <= r).any() for qq, o in zip(q, owner)]))
        base.append({"phash_radius": r, "recall": round(rec, 4), "false_match_rate_vs_photos": round(fm, 4)})
    ok = [r for r in rows if r["recall"] >= 0.95 and r["false_match_rate_vs_blocklist"] <= 0.001]
    result = {"photos": len(photos), "photos_dropped_as_same_scene": dropped, "queries": len(q), "blocklist_hashes": int(len(d)), "build_seconds": round(t_build, 1),
              "baseline_whole_image_phash": base, "grid": rows,
              "meets_target": sorted(ok, key=lambda r: (-r["recall"], r["false_match_rate_vs_blocklist"]))[:5]}
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{len(photos)} distinct photos ({dropped} dropped as the same scene), {len(q)} web-like copies, "
              f"distractor blocklist of {len(d)} hashes")
        print("baseline (whole-image 64-bit pHash):", base)
        print(f"{'pHash r':>8}{'dHash r':>8}{'recall':>8}{'false/1M':>10}")
        for r in rows:
            print(f"{r['phash_radius']:>8}{r['dhash_radius']:>8}{r['recall']:>8.3f}{r['false_match_rate_vs_blocklist']:>10.4f}")
        print("meeting recall >= 0.95 and false matches <= 0.1%:", result["meets_target"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
