"""End-to-end images/s of webli-io against webdataset + PIL + torchvision, PIL draft(),
simplejpeg and a decode-only yardstick, on the same shards and CPUs: the same as
`webli-io bench` (see python/webli_io/bench.py), kept here beside the other benches.

    pip install '.[bench]' && python benches/bench_stream.py [--memory 20000] [--json]
"""

import sys

from webli_io.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
