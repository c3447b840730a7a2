"""Time and bytes to the first batch, fresh and resumed, as the data grows (docs/SCALE.md).

    python benches/first_batch.py [--shards 1000 10000] [--per-shard 4] [--json]

For each size, tiny tar shards (``--per-shard`` JPEGs of real photographs, 64 px) are served on
loopback HTTP (Range and HEAD, every body byte counted at the server) and indexed with
``webli-io index``. Then, on 2 ranks (rank 0 measured) with ``equal_batches="pad"`` and shuffle
on (``--subset 0.5``: selection too), the bench times ``WebLIStream(...)`` plus its first batch:

- fresh (epoch start);
- resumed at 10%, 50% and 90% of the epoch on the same layout (a state taken after one batch,
  its positions moved to that share of the epoch: a state is plain data);
- resumed at 50% on another layout (1 rank instead of 2: the old readers are replayed from the
  index, nothing of the shards is read for it).

and reports, per case, the seconds and the shard bytes the server sent before the first batch,
as a share of the dataset. Flat means: the same seconds and bytes at 1k and 10k shards, whatever
the position. The comparison is against the same stream without an index (``index`` pointing at
an empty folder, and no ``equal_batches``, which cannot count remote shards without one: the
resume re-reads what was consumed), measured in the same run, interleaved.
Nothing here is a timed assertion; the figures go to docs/SCALE.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List


class Server:
    """Serves a folder's files with Range and HEAD; counts body bytes per suffix."""

    def __init__(self, root: str) -> None:
        self.root, self.sent, self.requests = root, 0, 0
        lock = threading.Lock()
        me = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _file(self) -> Any:
                p = os.path.join(me.root, self.path.lstrip("/").split("?")[0])
                return p if os.path.isfile(p) else None

            def do_HEAD(self) -> None:  # noqa: N802
                p = self._file()
                self.send_response(200 if p else 404)
                self.send_header("Content-Length", str(os.path.getsize(p)) if p else "0")
                if p:
                    self.send_header("ETag", f'"{int(os.path.getmtime(p))}-{os.path.getsize(p)}"')
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                p = self._file()
                if p is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = os.path.getsize(p)
                m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                start = int(m.group(1)) if m else 0
                last = min(int(m.group(2)), size - 1) if m and m.group(2) else size - 1
                with open(p, "rb") as f:
                    f.seek(start)
                    body = f.read(last + 1 - start)
                self.send_response(206 if m else 200)
                self.send_header("ETag", f'"{int(os.path.getmtime(p))}-{size}"')
                if m:
                    self.send_header("Content-Range", f"bytes {start}-{last}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    return
                if p.endswith(".tar"):
                    with lock:
                        me.sent += len(body)
                        me.requests += 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def photos(n: int) -> List[bytes]:
    from PIL import Image
    from skimage import data as skdata

    imgs = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    out = []
    for i in range(n):
        im = Image.fromarray(imgs[i % len(imgs)]).resize((64, 64))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=70 + i % 20)
        out.append(buf.getvalue())
    return out


def write_shards(folder: str, shards: int, per_shard: int) -> int:
    pics = photos(16)
    total = 0
    for s in range(shards):
        path = os.path.join(folder, f"shard-{s:06d}.tar")
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
            for j in range(per_shard):
                key = f"{s:06d}{j:04d}"
                for ext, data in (("jpg", pics[(s + j) % 16]), ("txt", f"caption {key}".encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        total += os.path.getsize(path)
    return total


def measure(make, server: Server) -> Dict[str, float]:
    before = server.sent
    t = time.perf_counter()
    stream = make()
    it = iter(stream)
    next(it)
    seconds = time.perf_counter() - t
    it.close()
    return {"seconds": round(seconds, 3), "bytes": server.sent - before}


def run(shards: int, per_shard: int, rounds: int, subset: float | None) -> Dict[str, Any]:
    from webli_io import WebLIStream
    from webli_io.index import build_index

    root = tempfile.mkdtemp(prefix="webli-first-batch-")
    data = os.path.join(root, "d")
    os.makedirs(data)
    total = write_shards(data, shards, per_shard)
    server = Server(root)
    urls = [f"{server.url}/d/shard-{s:06d}.tar" for s in range(shards)]
    t = time.perf_counter()
    build_index(urls, os.path.join(root, "ix"), progress=False)
    index_seconds = time.perf_counter() - t
    empty = os.path.join(root, "none")
    os.makedirs(empty)
    base: Dict[str, Any] = dict(batch_size=8, image_size=32, shuffle=True, seed=0, equal_batches="pad", num_threads=2)
    if subset is not None:
        base["subset"] = subset
    with_ix = dict(base, index=os.path.join(root, "ix"))
    # Without an index, equal_batches cannot count remote shards at all: the baseline streams
    # without it (a resume then re-reads what was consumed).
    without = dict(base, index=empty, equal_batches=None)
    states = {}
    for label, opts in (("index", with_ix), ("no index", without)):
        first = WebLIStream(urls, rank=0, world_size=2, **opts)
        it = iter(first)
        next(it)
        states[label] = first.state_dict()
        it.close()
        if label == "index":
            epoch_samples = sum(first._counts or []) // 2  # this rank's share

    def at(share: float, opts: Dict[str, Any]) -> Dict[str, Any]:
        st = json.loads(json.dumps(states["index" if opts is with_ix else "no index"]))
        (slot,) = st["positions"]
        n = int(epoch_samples * share) // 8 * 8
        st["positions"][slot] = {"seq": n, "yielded": n}
        return st

    def resumed(opts: Dict[str, Any], st: Dict[str, Any], rank: int = 0, world: int = 2):
        def make() -> Any:
            s = WebLIStream(urls, rank=rank, world_size=world, **opts)
            s.load_state_dict(st)
            return s
        return make

    cases = {
        "fresh": lambda o: (lambda: WebLIStream(urls, rank=0, world_size=2, **o)),
        "resume 10%": lambda o: resumed(o, at(0.1, o)),
        "resume 50%": lambda o: resumed(o, at(0.5, o)),
        "resume 90%": lambda o: resumed(o, at(0.9, o)),
        "resume 50%, 2 ranks -> 1": lambda o: resumed(o, at(0.5, o), 0, 1),
    }
    out: Dict[str, Any] = {"shards": shards, "samples": shards * per_shard, "dataset_bytes": total, "subset": subset,
                           "index_seconds": round(index_seconds, 1), "cases": {}}
    for name, case in cases.items():
        best: Dict[str, Dict[str, float]] = {}
        for _ in range(rounds):  # interleaved: A B A B
            for label, opts in (("index", with_ix), ("no index", without)):
                try:
                    r = measure(case(opts), server)
                except Exception as e:  # noqa: BLE001 - reported, the bench goes on
                    r = {"seconds": float("nan"), "bytes": 0, "error": str(e)[:120]}
                if label not in best or r["seconds"] < best[label]["seconds"]:
                    best[label] = r
        for r in best.values():
            r["share_of_dataset"] = round(r["bytes"] / total, 4)
        out["cases"][name] = best
    server.httpd.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--per-shard", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--subset", type=float, default=None,
                    help="selection on (e.g. 0.5): the count then loads every shard's index file, not just the summary")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(n, args.per_shard, args.rounds, args.subset) for n in args.shards]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"\n{r['shards']} shards, {r['samples']} samples, {r['dataset_bytes'] / 1e6:.1f} MB "
              f"(index built in {r['index_seconds']} s)")
        print(f"{'case':28} {'index: s':>9} {'bytes':>8} {'share':>7} | {'no index: s':>11} {'bytes':>10} {'share':>7}")
        for name, c in r["cases"].items():
            a, b = c["index"], c["no index"]
            print(f"{name:28} {a['seconds']:9.2f} {a['bytes']:8d} {a['share_of_dataset']:7.2%} | "
                  f"{b['seconds']:11.2f} {b['bytes']:10d} {b['share_of_dataset']:7.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
