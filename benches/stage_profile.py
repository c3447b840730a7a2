"""Where a sample's time goes, per stage, in CPU time: the stream's per-stage counters
(``stats()["ns_read"]``, ``ns_decode``, ``ns_resize``, ``ns_batch``: the threads' own CPU
clocks) per image, beside libjpeg-turbo's bare decode of the same bytes (simplejpeg, one thread,
bytes in memory) at full scale and at the DCT scale the tile needs, on each set of
``webli-io bench`` (the web photos and img2dataset's 256/384/512 output).

    python benches/stage_profile.py --per-set 200 --size 224 --rounds 3

One decode thread, so the counters and the yardsticks measure the same work; rounds interleaved
(webli-io, full, scaled, webli-io, ...), the best of each kept. Prints a table and, with
``--json``, the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Dict, List


def cpu_per_image(fn, jpegs: List[bytes]) -> float:
    """Microseconds of this thread's CPU per image of ``fn`` over ``jpegs``."""
    t = time.thread_time_ns()
    for d in jpegs:
        fn(d)
    return (time.thread_time_ns() - t) / 1e3 / len(jpegs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-set", type=int, default=200)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=None, help="folder for the sets (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import simplejpeg

    from webli_io import WebLIStream
    from webli_io.bench import jpeg_members, write_web_set

    data = args.data or tempfile.mkdtemp(prefix="webli-profile-")
    sets, source = write_web_set(data, args.per_set)
    rows: Dict[str, Dict[str, float]] = {}
    for name, paths in sets.items():
        jpegs = jpeg_members(paths)
        best: Dict[str, float] = {}
        for _ in range(args.rounds):
            s = WebLIStream(paths, batch_size=64, image_size=args.size, num_threads=1, resize="squash", drop_last=False)
            n = sum(len(b["keys"]) for b in s)
            st = s.stats()
            got = {k: st[k] / 1e3 / n for k in ("ns_read", "ns_decode", "ns_resize", "ns_batch")}
            full = cpu_per_image(lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"), jpegs)
            scaled = cpu_per_image(lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB", min_height=args.size, min_width=args.size), jpegs)
            for k, v in {**got, "bare_full": full, "bare_scaled": scaled}.items():
                best[k] = min(best.get(k, float("inf")), v)
        best["total"] = sum(best[k] for k in ("ns_read", "ns_decode", "ns_resize", "ns_batch"))
        rows[name] = {k: round(v, 1) for k, v in best.items()}
    if args.json:
        print(json.dumps({"source": source, "size": args.size, "per_set": args.per_set, "rows": rows}, indent=2))
        return
    print(f"CPU microseconds per image, to {args.size} px, one thread, best of {args.rounds} interleaved rounds ({source})")
    cols = ("ns_read", "ns_decode", "ns_resize", "ns_batch", "total", "bare_full", "bare_scaled")
    print(f"{'set':<28}" + "".join(f"{c:>12}" for c in cols))
    for name, r in rows.items():
        print(f"{name:<28}" + "".join(f"{r[c]:>12.1f}" for c in cols))
    if not args.data:
        import shutil

        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
