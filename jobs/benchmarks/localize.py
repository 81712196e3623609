"""Does the saccader learn where to look? Hit-rate, accuracy and box placement on cluttered MNIST.

Plain PyTorch (no Ray): fresh training canvases every epoch from the train digit pool, a fixed test
set from the disjoint test pool, at a size where the proxy is too blurred to read the digits. The
saccader is a training recipe's (`--recipe`, with the train job's `--set` overrides): its model
settings, objective, per-glimpse targets, box curriculum, batch and learning rate. It is compared
with the proxy-only CNN and the every-pixel (patches) CNN trained on the same canvases for the same
epochs, and its glimpses with centred boxes of the same sizes (MODEL.md).

Shape legend: B batch, T glimpses, C channels, H height, W width, N objects, 4 = a normalised box.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jobs.benchmarks._common import goal, header, table, write_json
from jobs.common import parse_key_values
from jobs.core.pictures import class_name, glimpse_picture
from jobs.training.recipes import SMALL_RESNET, DataSpec, TrainConfig, build_model, make_recipe
from model.interface import Batch
from model.step import BoxCurriculum, centred_hit_rate, eval_step, hit_rate, train_step
from model.variants import create_model
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
    p.add_argument(
        "--recipe",
        default="cluttered_cpu",
        help="the training recipe whose saccader, objective, per-glimpse targets, box "
        "curriculum, batch and learning rate are used (not its epochs, warm-up or scale)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe setting as the train job does, e.g. --set model_cfg.glimpses=2 "
        "--set objective.score_weight=0",
    )
    p.add_argument("--models", default="saccader,proxy_only,patches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--picture", default=None, help="PNG path for the glimpses on 12 test images")
    p.add_argument("--json", default=None)
    return p.parse_args(list(argv))


def recipe_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe after `--set`, for the saccader, its objective, curriculum, batch and lr."""
    return make_recipe(args.recipe, "-", parse_key_values(list(args.set), flag="--set"))


def build(
    name: str, args: argparse.Namespace, cfg: TrainConfig, num_classes: int
) -> torch.nn.Module:
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
    parts = [list(p) for p in cluttered_part_classes(args.task)]
    return build_model(cfg, DataSpec(num_classes=num_classes, channels=1, class_parts=parts))


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


def train(
    name: str, args: argparse.Namespace, cfg: TrainConfig, data: dict[str, Any]
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = build(name, args, cfg, data["cfg"].num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # the recipe's schedule in optimiser steps, sampled at each epoch's first step here (the Ray
    # Train loop applies it at every step)
    curriculum = BoxCurriculum(cfg.curriculum_start, cfg.curriculum_steps)
    batch = cfg.batch_size
    start, epochs, history, step = time.perf_counter(), 0, [], 0
    for epoch in range(args.epochs):
        if time.perf_counter() - start > 60 * args.minutes:
            break
        curriculum.apply(model, step)
        train_set = data["train"](epoch)
        order = np.random.default_rng([args.seed, epoch]).permutation(len(train_set.labels_B))
        parts = [
            train_step(model, train_set.batch(order[i : i + batch]), optimizer, cfg.objective)
            for i in range(0, len(order) - batch + 1, batch)
        ]
        step += len(parts)
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
        out["location_grad"] = location_gradients(model, data["test"], batch)
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


def recipe_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What the benchmark takes of the recipe (printed and recorded with the figures)."""
    keys = ("model", "model_cfg", "objective", "glimpse_parts", "curriculum_start")
    values = {k: v for k, v in cfg.to_dict().items() if k in keys}
    values.update(curriculum_steps=cfg.curriculum_steps, batch_size=cfg.batch_size, lr=cfg.lr)
    return values


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
    recipe = recipe_config(args)
    print(f"saccader: recipe {args.recipe}, " + json.dumps(recipe_settings(recipe)), flush=True)
    results = {name: train(name, args, recipe, data) for name in args.models.split(",")}
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
    figures = {**info, "args": vars(args), "recipe": recipe_settings(recipe), "results": {}}
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
