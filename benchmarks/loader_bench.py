"""Mixture loader speed per worker and memory over a long stream.

    python benchmarks/loader_bench.py [--samples 3000 --long 20000]

Builds a 224x224 two-camera robot mixture from a generated RLDS dataset (as build_bench.py),
then prints, in one run: samples/s of ``MixtureDataset`` in one process (decode, tokens, meta),
next to the floor: decoding the same samples' JPEGs alone; and the peak RSS after 1/4 and after
all of ``--long`` samples (it must stay flat). Record results on its topic page in docs/results/.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import build_bench  # noqa: E402

from kidata.loader.mixture import MixtureDataset, MixtureSettings  # noqa: E402
from kidata.manifest import BuildDir  # noqa: E402
from kidata.pipelines.build import build  # noqa: E402
from kidata.pipelines.recipe import load_recipe  # noqa: E402
from kidata.pipelines.shards import iter_tar  # noqa: E402


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--long", type=int, default=20000)
    args = parser.parse_args()
    import simplejpeg

    print(f"kidata loader benchmark, {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        dataset = build_bench.write_dataset(root / "data", 24, 50)
        build(load_recipe(build_bench.recipe(root / "r.toml", dataset)), str(root / "out"), progress=False)
        manifest = str(root / "out" / "manifest.json")
        shards = sorted((root / "out" / "bench").glob("*.tar"))
        start = time.perf_counter()
        floor_count = 0
        for shard in itertools.cycle(shards):
            with open(shard, "rb") as handle:
                for _, members in iter_tar(handle):
                    for name, data in members.items():
                        if name.endswith(".jpg"):
                            simplejpeg.decode_jpeg(data, colorspace="RGB")
                    floor_count += 1
                    if floor_count == args.samples:
                        break
            if floor_count == args.samples:
                break
        floor = time.perf_counter() - start
        loader = iter(MixtureDataset(BuildDir(manifest), MixtureSettings(seed=0)))
        next(loader)
        start = time.perf_counter()
        for _ in itertools.islice(loader, args.samples):
            pass
        ours = time.perf_counter() - start
        print(f"{args.samples} samples of two 224x224 cameras, one process:")
        print(f"  floor (read tar + decode the JPEGs): {args.samples / floor:8.0f} samples/s")
        print(f"  MixtureDataset:                      {args.samples / ours:8.0f} samples/s "
              f"({floor / ours * 100:.0f}% of the floor)")
        long = iter(MixtureDataset(BuildDir(manifest), MixtureSettings(seed=1)))
        for _ in itertools.islice(long, args.long // 4):
            pass
        quarter = rss_mib()
        for _ in itertools.islice(long, args.long - args.long // 4):
            pass
        print(f"  peak RSS after {args.long // 4} samples: {quarter:.0f} MiB; after {args.long}: {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
