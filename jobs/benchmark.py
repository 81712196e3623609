"""Run a benchmark: ``python -m jobs.benchmark NAME [args]`` (``NAME --help`` for its options).

Each benchmark is a module ``jobs.benchmarks.NAME`` with ``main(argv) -> int``; it prints a
header (command, date, machine), a table and PASS/FAIL against its goal, and ``--json FILE``
writes the figures. Results are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHMARKS: dict[str, str] = {
    "ingest": "images/s of building each synthetic source; photo tiling against its floor",
    "region": "region-read latency of a glimpse against decoding the whole image",
    "inference": "saccader inference against the full-image baseline",
    "localize": "saccader hit-rate and accuracy on cluttered MNIST vs centred boxes, baselines",
    "dslr": "DSLR photo ingest (real stage and Ray Data build) against its decode + encode floor",
    "tradeoff": "train, evaluate and time each recipe on one dataset: accuracy against cost",
    "scale": "glimpse jumps where the pooling factor changes, one factor against blended",
    "reader": "how many steps a recipe's glimpse encoder needs to read centred objects",
}


def usage() -> str:
    """The list of benchmarks, one per line."""
    lines = [f"  {name:<10} {what}" for name, what in BENCHMARKS.items()]
    return "usage: python -m jobs.benchmark NAME [args]\nbenchmarks:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in BENCHMARKS:
        print(
            f"error: unknown benchmark {name!r}; use one of {sorted(BENCHMARKS)}", file=sys.stderr
        )
        print(usage(), file=sys.stderr)
        return 2
    module_name = f"jobs.benchmarks.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # a missing dependency inside the benchmark: keep its traceback
        print(
            f"error: benchmark {name!r} is listed but {module_name} does not exist yet",
            file=sys.stderr,
        )
        return 2
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
