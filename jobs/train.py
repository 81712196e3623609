"""Train a model with Ray Train: ``python -m jobs.train --recipe tiny_cpu --dataset data/cm/v0001``.

Data-parallel `TorchTrainer` over Ray Data shards of a published dataset version (local or s3://),
gloo on CPU and NCCL on GPU (from the recipe's `use_gpu`). One MLflow run per training; the final
model is logged as a pyfunc and registered. Re-running with the same ``--name`` resumes the run from
its last checkpoint (and continues the same MLflow run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

from jobs import console
from jobs.common import JobParser, parse_key_values, run_main
from jobs.ops.services import check_object_store
from jobs.preflight import positive_int, start_ray, training_demand
from jobs.training.progress import epoch_bar
from jobs.training.recipes import RECIPES, make_recipe
from jobs.training.trainer import TrainRequest, train
from pipelines.storage import resolve_version


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.train", description=__doc__)
    p.add_argument("--recipe", required=True, help=f"one of {sorted(RECIPES)}")
    p.add_argument(
        "--dataset",
        help="a published version (<root>/<version>), or a dataset root: the version its "
        "latest.json names",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set epochs=3 --set model_cfg.glimpses=2",
    )
    p.add_argument("--name", help="run name; the same name resumes (default: recipe-timestamp)")
    p.add_argument(
        "--storage",
        default=os.environ.get("SACCADE_CHECKPOINTS", "checkpoints"),
        help="where Ray Train keeps checkpoints (local path or s3://)",
    )
    p.add_argument("--experiment", default="saccade", help="MLflow experiment")
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (the recipe after --set) as JSON and exit",
    )
    p.add_argument("--verbose", action="store_true", help=console.VERBOSE_HELP)
    args = p.parse_args(argv)
    if not args.dataset and not args.print_config:
        p.error("the following arguments are required: --dataset")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = parse_key_values(args.set, flag="--set")
    if args.print_config:
        config = make_recipe(args.recipe, args.dataset or "", overrides)
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    for url in (args.dataset, args.storage):
        if url:
            check_object_store(url)
    config = make_recipe(args.recipe, resolve_version(args.dataset), overrides)
    name = args.name or f"{args.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    request = TrainRequest(
        config=config, name=name, storage=args.storage, experiment=args.experiment
    )
    version = request.check()  # bad dataset, schema or model settings fail here, before Ray starts
    demand = training_demand(config.num_workers, config.cpus_per_worker, config.use_gpu)
    console.start("train", verbose=args.verbose)
    start_ray(args.num_cpus, demand)
    images = config.images_per_epoch(version.manifest.counts["train"])
    with epoch_bar(f"train {name}", images, config.epochs) as progress:
        outcome = train(request, progress=progress)
    console.current().say(outcome.format())
    return 0


if __name__ == "__main__":
    run_main(main)
