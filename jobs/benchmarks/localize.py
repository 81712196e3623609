"""Does the saccader learn where to look? Hit-rate, accuracy and box placement on cluttered MNIST.

Plain PyTorch (no Ray): fresh training canvases every epoch from the train digit pool, a fixed test
set from the disjoint test pool, at a size where the proxy is too blurred to read the digits. The
saccader is compared with the proxy-only CNN and the every-pixel (patches) CNN trained on the same
canvases for the same epochs, and its glimpses with centred boxes of the same sizes (MODEL.md).

Shape legend: B batch, T glimpses, C channels, H height, W width, N objects, 4 = a normalised box.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jobs.benchmarks._common import goal, header, table, write_json
from jobs.training.recipes import SMALL_RESNET, SMALL_SACCADER
from model.interface import Batch
from model.loss import ObjectiveConfig
from model.registry import create_model
from model.step import BoxCurriculum, eval_step, train_step
from pipelines.digits import load_digits, split_digits
from pipelines.synthetic import (
    ClutteredMnistConfig,
    cluttered_class_names,
    cluttered_part_classes,
    generate_cluttered,
    sample_rng,
)

TENSORS = ("boxes_BT4", "labels_B")  # results kept for the picture, not written to the JSON
EDGE = 0.05  # a box centre this close to an image edge (fraction of the side) counts as "on edge"


@dataclass
class Canvases:
    """A set of generated canvases as tensors."""

    proxy_BCHW: torch.Tensor
    images_BCHW: torch.Tensor
    labels_B: torch.Tensor
    gt_boxes: list[torch.Tensor]  # per element N×4 (y0, x0, y1, x1)

    def batch(self, index: np.ndarray | slice) -> Batch:
        idx = np.arange(len(self.labels_B))[index]
        return Batch(
            proxy_BCHW=self.proxy_BCHW[idx],
            labels_B=self.labels_B[idx],
            images_BCHW=self.images_BCHW[idx],
            gt_boxes=[self.gt_boxes[i] for i in idx],
        )


def make_canvases(cfg: ClutteredMnistConfig, digits: Any, *, seed: int, split: str, n: int):
    samples = [generate_cluttered(cfg, digits, sample_rng(seed, split, i)) for i in range(n)]

    def stack(key: str) -> torch.Tensor:
        arrays = np.stack([getattr(s, key) for s in samples])  # B×H×W×C uint8
        return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255

    return Canvases(
        proxy_BCHW=stack("proxy"),
        images_BCHW=stack("image"),
        labels_B=torch.tensor([s.label for s in samples]),
        gt_boxes=[torch.tensor([[b[1], b[0], b[3], b[2]] for b in s.boxes]) for s in samples],
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.benchmark localize", description=__doc__)
    p.add_argument("--task", default="single", choices=["single", "pair", "sum"])
    p.add_argument("--canvas", type=int, default=100, help="canvas side, px")
    p.add_argument("--original", type=int, default=200, help="original side, px")
    p.add_argument("--downsample", type=int, default=10, help="proxy blur factor")
    p.add_argument("--proxy", type=int, default=40, help="proxy side, px")
    p.add_argument("--train-per-epoch", type=int, default=2000, help="fresh canvases per epoch")
    p.add_argument("--test", type=int, default=500, help="fixed test canvases")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--minutes", type=float, default=6.0, help="per-model training time cap")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--locator", default="heatmap", choices=["mlp", "heatmap"])
    p.add_argument("--objective", default="additive", choices=["additive", "product"])
    p.add_argument("--kl-weight", type=float, default=0.1)
    p.add_argument("--recon-weight", type=float, default=0.01)
    p.add_argument("--aux-weight", type=float, default=1.0)
    p.add_argument("--score-weight", type=float, default=1.0)
    p.add_argument("--glimpses", type=int, default=2)
    p.add_argument("--min-fraction", type=float, default=0.25)
    p.add_argument("--max-fraction", type=float, default=0.3)
    p.add_argument(
        "--start-fraction",
        type=float,
        default=None,
        help="curriculum: box sides start here (min and max) and shrink linearly to the final ones",
    )
    p.add_argument("--curriculum-epochs", type=int, default=4, help="epochs of the box curriculum")
    p.add_argument("--heatmap-stride", type=int, default=4, help="proxy pixels per locator cell")
    p.add_argument("--inhibit-return", action="store_true")
    p.add_argument("--feed-glimpse", action="store_true")
    p.add_argument(
        "--parts",
        action="store_true",
        help="per-glimpse targets are the label's digits (SaccaderConfig.part_classes)",
    )
    p.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further SaccaderConfig setting (e.g. heatmap_saliency=20)",
    )
    p.add_argument("--models", default="saccader,proxy_only,patches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--picture", default=None, help="PNG path for the glimpses on 12 test images")
    p.add_argument("--json", default=None)
    return p.parse_args(list(argv))


def build(name: str, args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    if name == "proxy_only":
        return create_model(
            "proxy_only",
            num_classes=num_classes,
            in_channels=1,
            proxy_size=args.proxy,
            **SMALL_RESNET,
        )
    if name == "patches":
        return create_model(
            "resnet18_patches",
            num_classes=num_classes,
            in_channels=1,
            patch_size=args.original // 2,
            checkpoint=False,
            **SMALL_RESNET,
        )
    return create_model(
        "saccader",
        num_classes=num_classes,
        in_channels=1,
        part_classes=cluttered_part_classes(args.task) if args.parts else (),
        **saccader_cfg(args),
    )


def saccader_cfg(args: argparse.Namespace) -> dict[str, Any]:
    """The saccader's settings (jobs/training/recipes.py's CPU recipes use the same network)."""
    return {
        **SMALL_SACCADER,
        "proxy_size": args.proxy,
        "glimpses": args.glimpses,
        "min_image_fraction": args.min_fraction,
        "max_image_fraction": args.max_fraction,
        "locator": args.locator,
        "heatmap_stride": args.heatmap_stride,
        "inhibit_return": args.inhibit_return,
        "feed_glimpse": args.feed_glimpse,
        **_model_settings(args.model_set),
    }


def _model_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``--model-set`` pairs parsed by the SaccaderConfig field types (as the train job's)."""
    from jobs.common import parse_key_values
    from jobs.training.recipes import model_setting_types, parse_setting

    types = model_setting_types("saccader")
    settings = {}
    for key, raw in parse_key_values(list(pairs), flag="--model-set").items():
        if key not in types:
            raise ValueError(f"--model-set {key}: not a SaccaderConfig setting")
        settings[key] = parse_setting(key, raw, types[key])
    return settings


def evaluate(model: torch.nn.Module, test: Canvases, batch: int) -> dict[str, Any]:
    correct, boxes, labels = 0, [], []
    for start in range(0, len(test.labels_B), batch):
        out = eval_step(model, test.batch(slice(start, start + batch)))
        correct += out["accuracy"] * len(out["prediction"].labels_B)
        labels.append(out["prediction"].labels_B)
        if out["prediction"].boxes_BT4 is not None:
            boxes.append(out["prediction"].boxes_BT4)
    result: dict[str, Any] = {
        "accuracy": correct / len(test.labels_B),
        "labels_B": torch.cat(labels),
    }
    if boxes:
        result.update(placement(torch.cat(boxes), test))
    return result


def placement(boxes_BT4: torch.Tensor, test: Canvases) -> dict[str, Any]:
    """Hit-rates, centre spread across images and the share of centres near an edge."""
    from model.step import centred_hit_rate, hit_rate

    cy_BT = (boxes_BT4[..., 0] + boxes_BT4[..., 2]) / 2
    cx_BT = (boxes_BT4[..., 1] + boxes_BT4[..., 3]) / 2
    near_edge = torch.minimum(torch.minimum(cx_BT, 1 - cx_BT), torch.minimum(cy_BT, 1 - cy_BT))
    return {
        "hit_rate": hit_rate(boxes_BT4, test.gt_boxes),
        "centred_hit_rate": centred_hit_rate(boxes_BT4, test.gt_boxes),
        # std over test images of the centre in [−1, 1] units, mean over glimpses and x, y
        "centre_spread": float(torch.stack([2 * cx_BT, 2 * cy_BT]).std(dim=1).mean()),
        "edge_share": float((near_edge < EDGE).float().mean()),
        "box_side": float((boxes_BT4[..., 2] - boxes_BT4[..., 0]).mean()),
        "boxes_BT4": boxes_BT4,
    }


def train(name: str, args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = build(name, args, data["cfg"].num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    objective = ObjectiveConfig(
        kind=args.objective,
        kl_weight=args.kl_weight,
        recon_weight=args.recon_weight,
        aux_weight=args.aux_weight,
        score_weight=args.score_weight,
    )
    # by epoch here (the Ray Train loop steps it by optimiser step)
    steps = 0 if args.start_fraction is None else args.curriculum_epochs
    curriculum = BoxCurriculum(args.start_fraction or 0.0, steps)
    start, epochs, history = time.perf_counter(), 0, []
    for epoch in range(args.epochs):
        if time.perf_counter() - start > 60 * args.minutes:
            break
        curriculum.apply(model, epoch)
        train_set = data["train"](epoch)
        order = np.random.default_rng([args.seed, epoch]).permutation(len(train_set.labels_B))
        parts = [
            train_step(model, train_set.batch(order[i : i + args.batch]), optimizer, objective)
            for i in range(0, len(order) - args.batch + 1, args.batch)
        ]
        epochs += 1
        result = evaluate(model, data["test"], 100)
        history.append(
            {
                "epoch": epochs,
                "train_acc": float(np.mean([p["accuracy"] for p in parts])),
                **{k: v for k, v in result.items() if k not in TENSORS},
            }
        )
        print(f"  {name} epoch {epochs}: " + ", ".join(_fmt(history[-1])), flush=True)
    seconds = time.perf_counter() - start
    out = {"model": model, "seconds": seconds, "epochs": epochs, "history": history, **result}
    if name == "saccader":
        out["location_grad"] = location_gradients(model, data["test"], args.batch)
    return out


def location_gradients(model: torch.nn.Module, test: Canvases, batch: int) -> dict[str, float]:
    """Σ|∂CE/∂θ| of the classification loss alone over the location's parameters, on one test
    batch drawn as in training: the cell scores (heat map: keys, query) and the posterior MLP
    (the paper's Gaussian; for the heat map, the box's scale and sub-cell offset). Zero on the
    cell scores unless a pathwise gradient reaches them (`straight_through`); the score-function
    term, not measured here, is their other teacher."""
    import torch.nn.functional as F

    groups = {"posterior_mlp": list(model.posterior.parameters())}
    if model.heatmap is not None:
        groups["cell_scores"] = [*model.heatmap.keys.parameters(), model.heatmap.query.weight]
    model.train()
    model.zero_grad()
    sample = test.batch(slice(0, batch))
    out = model(sample.proxy_BCHW, sample.region_reader())
    F.cross_entropy(out.logits_BK, sample.labels_B).backward()
    norms = {
        name: sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
        for name, params in groups.items()
    }
    model.zero_grad()
    model.eval()
    return norms


def _fmt(row: dict[str, Any]) -> list[str]:
    return [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()]


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    info = header("localize", argv)
    torch.set_num_threads(args.threads)
    cfg = ClutteredMnistConfig(
        task=args.task,
        canvas_size=args.canvas,
        original_size=args.original,
        downsample_scale=args.downsample,
        proxy_size=args.proxy,
    )
    pools = split_digits(load_digits(), seed=args.seed)
    data = {
        "cfg": cfg,
        "train": lambda epoch: make_canvases(
            cfg,
            pools["train"],
            seed=args.seed * 1000 + epoch,
            split="train",
            n=args.train_per_epoch,
        ),
        "test": make_canvases(cfg, pools["test"], seed=args.seed, split="test", n=args.test),
    }
    results = {name: train(name, args, data) for name in args.models.split(",")}
    rows = [
        [
            name,
            r["accuracy"],
            r.get("hit_rate", "-"),
            r.get("centred_hit_rate", "-"),
            r.get("centre_spread", "-"),
            r.get("edge_share", "-"),
            r["epochs"],
            r["seconds"],
        ]
        for name, r in results.items()
    ]
    print(
        table(
            ["model", "test acc", "hit", "centred hit", "spread", "edge", "epochs", "train s"], rows
        )
    )
    if "saccader" in results:
        grads = results["saccader"]["location_grad"]
        print(
            "classification loss's gradient on the location (Σ|∂CE/∂θ|, one test batch): "
            + ", ".join(f"{k} {v:.3g}" for k, v in grads.items())
        )
    figures = {**info, "args": vars(args), "results": {}}
    for name, r in results.items():
        figures["results"][name] = {
            k: v for k, v in r.items() if k != "model" and k not in TENSORS and not callable(v)
        }
    figures["goals"] = _goals(results)
    if args.picture and "saccader" in results:
        _picture(results["saccader"], data["test"], args.picture, cluttered_class_names(args.task))
    write_json(args.json, figures)
    return 0


def _goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    goals = []
    sac = results.get("saccader")
    if sac is not None:
        ratio = sac["hit_rate"] / max(sac["centred_hit_rate"], 1e-9)
        goals.append(goal("hit-rate / centred hit-rate", ratio, 2.0, "x"))
        if "proxy_only" in results:
            gap = 100 * (sac["accuracy"] - results["proxy_only"]["accuracy"])
            goals.append(goal("saccader − proxy-only accuracy", gap, 20.0, " pts"))
    return goals


def _picture(result: dict[str, Any], test: Canvases, path: str, names: list[str]) -> None:
    from jobs.training.pictures import class_name, glimpse_picture

    batch = test.batch(slice(0, 12))
    glimpse_picture(
        batch,
        result["boxes_BT4"][:12],
        predicted=[class_name(int(k), names) for k in result["labels_B"][:12]],
        truth=[class_name(int(k), names) for k in batch.labels_B],
        title=f"saccader · epoch {result['epochs']} · test accuracy {result['accuracy']:.3f}",
        side=160,
    ).save(path)
    print(f"picture written to {path}")
