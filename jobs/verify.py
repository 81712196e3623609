"""Check a dataset version's integrity: ``python -m jobs.verify --dataset data/cm/v0001``.

Every row's stored digest is recomputed from its bytes (tiles, pooled level, proxy); each split's
row count and data digest are compared with the manifest; ``--decode`` also decodes every tile
and proxy. Prints one line per problem (file, row, image id, reason). Exit status: 0 intact,
1 problems found, 2 bad input (no such version, another schema version). Runs in this process,
without Ray, reading the version (local or s3://) file by file.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobs.common import JobParser, run_main
from jobs.ops.services import check_object_store
from jobs.preflight import positive_int
from pipelines.integrity import verify_version
from pipelines.storage import DatasetVersion


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.verify", description=__doc__)
    p.add_argument("--dataset", required=True, help="a published version: <root>/<version>")
    p.add_argument("--decode", action="store_true", help="also decode every tile and proxy")
    p.add_argument("--batch-size", type=positive_int, default=64, help="rows read at a time")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_object_store(args.dataset)
    report = verify_version(
        DatasetVersion.open(args.dataset), decode=args.decode, batch_size=args.batch_size
    )
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    run_main(main)
