"""Batch inference: ``python -m jobs.predict --model models:/saccade@champion --dataset D --out
preds.parquet`` or ``--images photos/`` (a folder or bucket of image files, tiled on the fly).

Writes one Parquet file: per image its id (or path), the predicted label and name, the class
probabilities and the glimpse boxes; an image that cannot be read is a row with its `error`.
``--annotate DIR`` also writes one PNG per image with the glimpse boxes drawn. The alias is
resolved to a version once, before any work, so every worker uses the same model. Works locally
and through ``ray job submit``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jobs import store
from jobs.common import JobParser, run_main
from jobs.core.data import open_dataset
from jobs.ops.prediction import PredictRequest, load_pyfunc, model_channels, predict
from jobs.ops.services import check_object_store, check_tracking_server
from jobs.preflight import positive_float, positive_int, prediction_demand, start_ray
from pipelines.storage import resolve_version, url_scheme


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = JobParser(prog="python -m jobs.predict", description=__doc__)
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    source = p.add_mutually_exclusive_group(required=True)  # exactly one input
    source.add_argument(
        "--dataset", help="a dataset version <root>/<version>, or a root (its latest)"
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    source.add_argument("--images", help="a folder or s3:// prefix of image files")
    p.add_argument("--out", required=True, help="predictions Parquet file (local or s3://)")
    p.add_argument("--annotate", help="folder for annotated PNGs (local or s3://)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--tile-size", type=positive_int, default=256, help="raw images: tile edge")
    p.add_argument("--tile-format", default="jpeg", choices=["raw", "png", "jpeg"])
    p.add_argument("--proxy-side", type=positive_int, default=256, help="raw images: proxy side")
    p.add_argument("--actors", type=positive_int, default=1, help="model replicas (Ray actors)")
    p.add_argument("--actor-cpus", type=positive_float, default=1.0, help="CPUs per model actor")
    p.add_argument(
        "--actor-gpus",
        type=positive_float,
        default=0.0,
        help="GPUs per model actor; the model then runs on its GPU (default: none, the CPU)",
    )
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray (default: all)")
    return p.parse_args(argv)


def check_out(url: str) -> None:
    """A local --out must be a file name whose folder can exist: found after all the work, an
    existing directory (or a file where its folder should be) would lose every prediction."""
    if url_scheme(url):  # an object key can always be written
        return
    path = os.path.abspath(url)
    if os.path.isdir(path):
        raise ValueError(
            f"--out {url} is a directory; give the predictions file, e.g. "
            f"{os.path.join(url, 'predictions.parquet')}"
        )
    parent = next(p for p in _ancestors(path) if os.path.exists(p))
    if not os.path.isdir(parent):
        raise ValueError(f"--out {url}: {parent} is a file, so no folder can be made under it")


def _ancestors(path: str) -> list[str]:
    out = []
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_out(args.out)
    check_tracking_server()
    ref = store.resolve(args.model)  # no such model, version or alias: fails here
    for url in (args.dataset, args.images, args.out, args.annotate):
        if url:
            check_object_store(url)
    # Raw images are decoded to the model's channels: load it once here (which also proves it
    # loads before any worker starts).
    channels = model_channels(load_pyfunc(ref.uri)) if args.images else 3
    dataset = resolve_version(args.dataset) if args.dataset else None
    request = PredictRequest(
        model_uri=ref.uri,
        out=args.out,
        dataset=dataset,
        split=args.split,
        images=args.images,
        annotate=args.annotate,
        batch_size=args.batch_size,
        tile_size=args.tile_size,
        tile_format=args.tile_format,
        proxy_max_side=args.proxy_side,
        channels=channels,
        actors=args.actors,
        actor_cpus=args.actor_cpus,
        actor_gpus=args.actor_gpus,
    )
    if dataset:
        open_dataset(dataset, args.split)  # missing version, split or schema: fails before Ray
    print(f"model {args.model} -> {ref.uri}; input {dataset or args.images}", flush=True)
    start_ray(args.num_cpus, prediction_demand(args.actors, args.actor_cpus, args.actor_gpus))
    summary = predict(request, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(summary.format())
    return 0


if __name__ == "__main__":
    run_main(main)
