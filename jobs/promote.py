"""Promote a model version to `champion`: ``python -m jobs.promote --model NAME --candidate 7
--dataset data/cm/v0003``; undo the last promotion with ``--model NAME --rollback``.

The candidate and the current champion are evaluated on the same held-out dataset version; the
candidate becomes the champion only if it passes the gates (``--min-accuracy``,
``--max-latency-ms``) and beats the champion's accuracy by ``--margin``; the old champion becomes
`previous-champion`. Exit status: 0 promoted (or rolled back), 1 refused (nothing changed),
2 bad input or an unreachable service.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import uuid
from collections.abc import Sequence

from jobs.common import JobParser, run_main
from jobs.ops.promotion import Policy, PromotionRequest, promote, rollback
from jobs.ops.services import check_object_store, check_tracking_server
from jobs.preflight import positive_int
from pipelines.storage import resolve_version


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.promote", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--candidate", help="the candidate's version number, or `latest`")
    p.add_argument(
        "--dataset", help="held-out dataset version: <root>/<version>, or a root (its latest)"
    )
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--margin", type=float, default=0.01, help="accuracy gain needed (0.01)")
    p.add_argument("--min-accuracy", type=float, default=0.0, help="gate: accuracy floor")
    p.add_argument("--max-latency-ms", type=float, default=math.inf, help="gate: ms per image")
    p.add_argument(
        "--reuse-evaluations",
        action="store_true",
        help="use each version's newest recorded evaluation (jobs.evaluate) instead of evaluating",
    )
    p.add_argument("--rollback", action="store_true", help="restore the previous champion")
    p.add_argument("--batch-size", type=positive_int, default=16)
    args = p.parse_args(argv)
    if not args.rollback and args.candidate is None:
        p.error("--candidate is required (or --rollback)")
    if args.candidate is not None and not (args.candidate.isdigit() or args.candidate == "latest"):
        p.error(f"--candidate {args.candidate!r} is not a version number or `latest`")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    check_tracking_server()
    if args.rollback:
        demoted, restored = rollback(args.model, owner=owner)
        print(f"rolled back: models:/{args.model}/{restored} is @champion again (was {demoted})")
        return 0
    if args.dataset:
        check_object_store(args.dataset)
    request = PromotionRequest(
        model=args.model,
        candidate=args.candidate,
        dataset=resolve_version(args.dataset) if args.dataset else None,
        split=args.split,
        policy=Policy(
            margin=args.margin,
            min_accuracy=args.min_accuracy,
            max_latency_ms=args.max_latency_ms,
        ),
        reuse_evaluations=args.reuse_evaluations,
        batch_size=args.batch_size,
    )
    outcome = promote(request, owner=owner)
    print(outcome.format())
    return 0 if outcome.decision.promote else 1


if __name__ == "__main__":
    run_main(main)
