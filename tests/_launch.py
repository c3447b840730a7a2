"""Entry points for the launcher tests (test_launchers.py): one DDP rank that builds a stream and
reads its share through a DataLoader, written as a plain module so that
`torch.multiprocessing.spawn`, spawn/forkserver DataLoader workers and torchrun can import it."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys


def read_share(shards, out_dir, rank, *, context, workers, build_before_init=False, epochs=1, persistent=False):
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from webli_io import WebLIStream

    def build():
        return WebLIStream(shards, batch_size=3, image_size=16, num_threads=1, shuffle=True, seed=7, equal_batches=None)

    stream = build() if build_before_init else None
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=int(os.environ.get("WORLD_SIZE", "2")))
    if stream is None:
        stream = build()
    kw = {"multiprocessing_context": multiprocessing.get_context(context)} if workers else {}
    loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=persistent and workers > 0, **kw)
    result = {"rank": dist.get_rank(), "epochs": []}
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        result["epochs"].append([k for b in loader for k in b["keys"]])
    # Where the stream was built before init_process_group, the topology is looked up again
    # where the loader is built (in this process): it reads the same as the workers used.
    result["topology"] = [stream.topology.rank, stream.topology.world_size, stream.topology.source]
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


def spawned(local_rank, shards, out_dir, port, options):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    read_share(shards, out_dir, local_rank, **options)


if __name__ == "__main__":  # under torchrun: RANK, WORLD_SIZE, MASTER_* come from the launcher
    shards_file, out_dir, context, workers = sys.argv[1:5]
    with open(shards_file) as f:
        shards = json.load(f)
    read_share(shards, out_dir, int(os.environ["RANK"]), context=context, workers=int(workers))
