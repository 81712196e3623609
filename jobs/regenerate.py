"""Regenerate the datasets a spec names: ``python -m jobs.regenerate --spec infra/regenerate.yaml``.

Unchanged datasets (same content hash of inputs and parameters as the version `latest` names) are
skipped; changed ones are rebuilt as a new version, published atomically, and `latest` moves only
after that succeeded; versions beyond each dataset's retention count are deleted. Every outcome is
a run of the MLflow experiment `saccade-datasets`. Exit status: 0 all done, 1 a dataset failed
(its `latest` is where it was), 2 bad spec or an unreachable service. Run it on a schedule
(infra/k8s/cronjob-regenerate.yaml) or by hand, locally or through ``ray job submit``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobs.common import JobParser, run_main
from jobs.ops.regeneration import load_spec, record_in_mlflow, regenerate
from jobs.ops.services import check_object_store, check_tracking_server
from jobs.preflight import BUILD_DEMAND, positive_int, start_ray


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.regenerate", description=__doc__)
    p.add_argument("--spec", required=True, help="YAML/JSON spec file (local path or URL)")
    p.add_argument("--only", action="append", help="regenerate only this dataset (repeatable)")
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    specs = load_spec(args.spec)
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"--only {unknown}: not in {args.spec} ({[s.name for s in specs]})")
        specs = [s for s in specs if s.name in args.only]
    check_tracking_server()  # before any work: every outcome must be recorded
    for spec in specs:
        check_object_store(spec.out)
    results = regenerate(
        specs,
        record=lambda result: record_in_mlflow(result, spec_url=args.spec),
        before_build=lambda: start_ray(args.num_cpus, BUILD_DEMAND),
    )
    for result in results:
        print(result.format())
    return 1 if any(r.action == "failed" for r in results) else 0


if __name__ == "__main__":
    run_main(main)
