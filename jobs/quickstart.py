"""The README's main command: everything end to end on the embedded defaults.

Builds a small two-digit cluttered MNIST dataset with Ray Data (local Ray, local directory) and
prints what was built. ``--out`` and ``RAY_ADDRESS`` point it elsewhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobs.common import init_ray, run_main
from pipelines.build import BuildConfig, build_dataset, preflight
from pipelines.storage import DatasetVersion, next_version


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.quickstart", description=__doc__)
    p.add_argument("--out", default="data/quickstart", help="dataset root (local path or s3://)")
    p.add_argument("--train", type=int, default=256, help="training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = BuildConfig(
        source="cluttered_mnist",
        out=args.out,
        version=next_version(args.out),
        seed=args.seed,
        counts={
            "train": args.train,
            "val": max(args.train // 8, 1),
            "test": max(args.train // 8, 1),
        },
        params={"original_size": 512},
    )
    preflight(config)
    init_ray(args.num_cpus)
    summary = build_dataset(config)
    manifest = DatasetVersion.open(summary.url).manifest
    print("\n== quickstart ==")
    print(summary.format())
    print(
        f"  classes: {manifest['num_classes']} ({manifest['source']}, "
        f"{manifest['params']['original_size']} px originals, {manifest['tile_format']} tiles)"
    )
    print(f"  manifest: {summary.url}/manifest.json")
    return 0


if __name__ == "__main__":
    run_main(main)
