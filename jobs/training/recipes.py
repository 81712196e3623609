"""Training configuration and the named recipes (`python -m jobs.train --recipe NAME`).

A recipe is a function returning a complete `TrainConfig`; the command line picks one and applies a
few `--set key=value` overrides. The smallest recipe (`tiny_cpu`) trains in seconds and is what the
tests use; the `*_gpu` recipes are the paper-scale runs (MODEL.md).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from model.interface import BatchClassifier
from model.loss import ObjectiveConfig
from model.variants import config_type, create_model, current_settings, variant_settings
from pipelines.schema import Manifest


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """What a model is built for, read from its dataset: saved with every checkpoint and
    registered model (`to_dict`), so the model can be rebuilt without the dataset."""

    num_classes: int
    channels: int  # of the images and the proxies
    class_names: list[str] = field(default_factory=list)  # index = label
    class_parts: list[list[int]] = field(default_factory=list)  # per class, its object classes
    label_counts: list[int] | None = None  # a count label: what each class counts

    @classmethod
    def of(cls, manifest: Manifest, channels: int) -> DataSpec:
        return cls(
            num_classes=manifest.num_classes,
            class_names=list(manifest.class_names),
            channels=channels,
            class_parts=[list(parts) for parts in manifest.class_parts or []],
            label_counts=manifest.label_counts,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataSpec:
        """From `to_dict`'s layout (models saved before a field existed lack it)."""
        return cls(**{k: v for k, v in values.items() if k in _DATA_FIELDS})


_DATA_FIELDS = {f.name for f in dataclasses.fields(DataSpec)}


@dataclass(kw_only=True)
class TrainConfig:
    """One training run: data, model, objective, optimiser, scale and bookkeeping."""

    dataset: str  # a published dataset version URL: <root>/<version> (local or s3://)
    model: str  # a name from model.variants.list_models()
    # settings of the model's config dataclass (model.variants.config_type(model)), each of its
    # field's type; the dataset supplies the rest (classes, channels: `model_settings`)
    model_cfg: dict[str, Any] = field(default_factory=dict)
    # the loss: the bound's kind and weights, and the training-only terms that are not the
    # paper's (location from boxes, per-glimpse object targets, guided glimpses)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # saccader: each glimpse's targets are its class's object classes (the manifest's
    # `class_parts`, e.g. a pair's two digits, into SaccaderConfig.class_parts), not the label
    glimpse_parts: bool = False
    curriculum_steps: int = 0  # box sides shrink from curriculum_start to the model's over these
    curriculum_start: float = 0.6  # box side (fraction of the image side) at epoch 1
    epochs: int = 10  # passes over the training split
    # images of the training split each epoch reads (its first N, in file order); None: all.
    # A budget for the costly every-pixel baseline, whose one epoch can outlast the others' runs
    train_images: int | None = None
    batch_size: int = 32  # images per worker per step
    lr: float = 1e-3  # Adam learning rate
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    clip_value: float = 0.25  # gradient clipping by value (the paper's)
    seed: int = 0  # model init and sampling; data order is Ray Data's, seeded per epoch
    num_workers: int = 1  # data-parallel Ray Train workers
    cpus_per_worker: float = 0.5  # fractional on 2 cores: the Ray Data read needs a CPU too
    use_gpu: bool = False  # one GPU per worker and NCCL; False: CPU and gloo
    max_failures: int = 2  # worker-failure restarts from the last checkpoint
    picture_every: int = 5  # epochs between glimpse pictures (and always the last epoch)
    picture_images: int = 8  # fixed validation images drawn in each picture
    # MLflow registry name for the final model; `make_recipe` names it after the recipe, so a
    # smoke run is never a candidate for the production name (`saccade`) unless told so
    registered_model: str = "saccade"

    def __post_init__(self) -> None:
        if isinstance(self.objective, Mapping):  # from a dict (a checkpoint, JSON)
            self.objective = ObjectiveConfig(**self.objective)
        self.model_cfg = _typed_model_settings(self.model, self.model_cfg)
        for name in ("epochs", "batch_size", "num_workers", "picture_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # max_failures=-1 would be Ray's "retry forever": a deterministic failure then never ends
        for name in ("warmup_steps", "seed", "max_failures", "picture_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.train_images is not None and self.train_images < 1:
            raise ValueError(f"train_images must be >= 1 or none, got {self.train_images}")
        if self.curriculum_steps < 0 or not 0 < self.curriculum_start <= 1:
            raise ValueError(
                f"need curriculum_steps >= 0 and 0 < curriculum_start <= 1, got "
                f"{self.curriculum_steps}, {self.curriculum_start}"
            )
        for name in ("lr", "cpus_per_worker", "clip_value"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not self.registered_model.strip():
            raise ValueError("registered_model must be a non-empty name")
        self._check_locator_signal()

    def _check_locator_signal(self) -> None:
        """The heat-map cell is a discrete draw: without the score-function term (or the
        straight-through gradient) nothing teaches it where to look, and it would only follow
        the KL to its prior (MODEL.md; BENCHMARKS.md "Localization", run B)."""
        cfg, objective = {**variant_settings(self.model), **self.model_cfg}, self.objective
        unguided = (
            objective.score_weight == 0
            and objective.locate_weight == 0
            and not cfg.get("straight_through")
        )
        if cfg.get("locator") == "heatmap" and unguided:
            raise ValueError(
                "model_cfg.locator=heatmap learns where to look only from the score-function "
                "term: set objective.score_weight > 0 (the CPU recipes use 1.0), "
                "objective.locate_weight > 0 (from the dataset's boxes) or "
                "model_cfg.straight_through=true"
            )
        if objective.locate_weight > 0 and cfg.get("locator") != "heatmap":
            raise ValueError(
                "objective.locate_weight > 0 trains the heat-map locator: it needs a saccader "
                "with model_cfg.locator=heatmap"
            )

    def model_settings(self, data: DataSpec) -> dict[str, Any]:
        """`model_cfg` with what the dataset sets: its classes and channels and, with
        `glimpse_parts`, each class's parts (for `create_model(self.model, ...)`)."""
        settings = {"num_classes": data.num_classes, "in_channels": data.channels}
        settings.update(self.model_cfg)
        if self.glimpse_parts:
            if not data.class_parts:
                raise ValueError(
                    "the recipe sets glimpse_parts but the dataset's manifest has no class_parts "
                    "(its classes have no object parts, e.g. a digit sum): --set "
                    "glimpse_parts=false"
                )
            settings["class_parts"] = data.class_parts
        return settings

    def images_per_epoch(self, split_images: int) -> int:
        """What one epoch reads of a training split of `split_images` images."""
        return split_images if self.train_images is None else min(split_images, self.train_images)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From `to_dict`'s layout, or the flat one of models and checkpoints saved before the
        objective had its own dataclass (`RENAMED`)."""
        values = dict(values)
        objective = values.pop("objective", {})
        objective = dict(objective) if isinstance(objective, Mapping) else {"kind": objective}
        for old, new in RENAMED.items():
            if old in values:
                objective[new.removeprefix("objective.")] = values.pop(old)
        return cls(**values, objective=ObjectiveConfig(**objective))


# Settings that moved into `objective` (their old flat names: --set, MLflow params, checkpoints)
RENAMED = {
    "objective": "objective.kind",
    "kl_weight": "objective.kl_weight",
    "recon_weight": "objective.recon_weight",
    "aux_weight": "objective.aux_weight",
    "score_weight": "objective.score_weight",
    "locate_weight": "objective.locate_weight",
    "glimpse_objects": "objective.object_targets",
    "guide_glimpses": "objective.guide_glimpses",
}


def _typed_model_settings(model: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` checked against the fields of `model`'s config dataclass: unknown names and
    values of another type are refused (ints pass as floats, lists as tuples, e.g. from JSON)."""
    types = model_setting_types(model)
    settings = current_settings(settings)
    unknown = sorted(set(settings) - set(types))
    if unknown:
        raise ValueError(f"unknown {model} settings {unknown}; known: {sorted(types)}")
    return {key: _of_type(f"model_cfg.{key}", value, types[key]) for key, value in settings.items()}


def _of_type(key: str, value: Any, annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if type(None) in args:
        if value is None:
            return None
        (annotation,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, list | tuple):
        inner = typing.get_args(annotation)[0]
        return tuple(_of_type(key, v, inner) for v in value)
    if annotation is float and type(value) is int:
        return float(value)
    # bool is an int in Python: a bool where an int goes (or the reverse) is a mistake
    plain = origin is None and isinstance(annotation, type)
    if plain and isinstance(value, annotation) and (annotation is bool) == isinstance(value, bool):
        return value
    raise ValueError(f"{key}={value!r} is not of type {_type_name(annotation)}")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


# The bound of every saccader recipe: additive, small β and λ (BENCHMARKS.md, "Localization")
SMALL_BOUND = {"kind": "additive", "kl_weight": 0.1, "recon_weight": 0.01}


def _score_trained() -> ObjectiveConfig:
    """The location trained by the score-function term, the per-glimpse classifier its reward."""
    return ObjectiveConfig(**SMALL_BOUND, aux_weight=1.0, score_weight=1.0)


def _box_taught(*, object_targets: bool) -> ObjectiveConfig:
    """The location taught from the dataset's boxes, training glimpses guided to objects (not
    the paper's: README, "How this model differs from the paper")."""
    return ObjectiveConfig(
        **SMALL_BOUND,
        aux_weight=1.0,
        locate_weight=5.0,
        object_targets=object_targets,
        guide_glimpses=True,
    )


# A baseline reads no glimpse: the terms beyond the cross-entropy are off
CLASSIFIER_ONLY = {
    "aux_weight": 0.0,
    "score_weight": 0.0,
    "locate_weight": 0.0,
    "object_targets": False,
    "guide_glimpses": False,
    "guide_radius": 0,
    "glimpse_counts": False,
}


# The CPU recipes' saccader network: what `python -m jobs.benchmark localize` measured it with
SMALL_SACCADER = {"hidden": 64, "window": 32, "encoder_width": 16, "encoder_blocks": (1, 1, 1)}


def tiny_cpu(dataset: str) -> TrainConfig:
    """Seconds on a laptop CPU: the tests' recipe (a shrunk saccader, 2 epochs)."""
    return TrainConfig(
        dataset=dataset,
        model="saccader_test",
        epochs=2,
        batch_size=8,
        lr=3e-3,
        picture_every=1,
        picture_images=4,
    )


def cluttered_cpu(dataset: str) -> TrainConfig:
    """The CPU benchmark: two-digit cluttered MNIST at a reduced size, a small saccader.

    Made for the benchmark dataset of BENCHMARKS.md ("Accuracy through Ray Train": 100-px canvas,
    200-px originals, proxy blurred ×10, 60,000 training images): 2 epochs are 120,000 images.
    The settings are what made the glimpses land on the digits in `python -m jobs.benchmark
    localize` (BENCHMARKS.md, "Localization (issue 7)"): a heat-map posterior over proxy cells
    trained by the score-function term, with the per-glimpse classifier as its reward and the
    pair's digits as that classifier's targets, boxes of 0.25–0.3 of the side, small KL and
    reconstruction weights, and boxes shrinking from 0.6 of the side over the first 250 steps
    (the curriculum), without which the boxes collapsed.
    """
    return TrainConfig(
        dataset=dataset,
        model="saccader",
        model_cfg={
            **SMALL_SACCADER,
            "proxy_size": 40,
            "glimpses": 3,
            "min_image_fraction": 0.25,
            "max_image_fraction": 0.3,
            "locator": "heatmap",
            "heatmap_stride": 4,
            "inhibit_return": True,  # two digits: the next glimpse goes elsewhere
        },
        epochs=2,
        batch_size=32,
        lr=2e-3,
        warmup_steps=100,
        objective=_score_trained(),
        glimpse_parts=True,  # one glimpse sees one digit: its target is one of the pair's digits
        curriculum_steps=250,  # ~8,000 images: the benchmark's 4 epochs of 2,000
    )


# The reference trains one process on batches of 100: data-parallel workers share that batch.
REFERENCE_BATCH = 100
GPU_WORKERS = 4


def _paper_scale_gpu(dataset: str, sizes: dict[str, Any], parts: bool) -> TrainConfig:
    """The paper's network sizes (`sizes`: T, W, L, the largest box) on GPU workers whose batches
    add up to the reference's 100, with the locator that learnt where to look here (the
    heat map with the score-function term and the pathwise sub-cell offset, inhibition of
    return, GroupNorm in the glimpse encoder; BENCHMARKS.md, "Localization") and its objective
    (additive, small β and λ), not the
    paper's Gaussian posterior and product objective (README, "How this model differs from the
    paper"). Not yet run at this scale: no GPU cluster has been lent to the project."""
    return TrainConfig(
        dataset=dataset,
        model="saccader",
        model_cfg={
            **sizes,
            "hidden": 256,
            "window": 64,
            "locator": "heatmap",
            "heatmap_stride": 4,
            "inhibit_return": True,
            "glimpse_norm": "group",
            "glimpse_blend": True,  # the box's side is learnt: no jump where its factor changes
            # the paper's pathwise x, y beside the score term on the cell: as good or better on
            # the localize tasks (BENCHMARKS.md, "What trains the location")
            "heatmap_offset": True,
        },
        objective=_score_trained(),
        glimpse_parts=parts,
        epochs=2000,
        batch_size=REFERENCE_BATCH // GPU_WORKERS,
        lr=1e-3,
        warmup_steps=100,
        num_workers=GPU_WORKERS,
        cpus_per_worker=4,
        use_gpu=True,
    )


def cluttered_2528_gpu(dataset: str) -> TrainConfig:
    """The paper's 2528×2528 cluttered MNIST pair run at its sizes (T=4, W=64, L=256, largest
    box 0.3 of the side; the paper: Gaussian posterior, β=5, lr 1e-5, batch 100), a pair's two
    digits as the per-glimpse targets and the box curriculum of `cluttered_cpu`."""
    config = _paper_scale_gpu(
        dataset, {"glimpses": 4, "min_image_fraction": 0.25, "max_image_fraction": 0.3}, True
    )
    return dataclasses.replace(config, curriculum_steps=250)


def sc2_gpu(dataset: str) -> TrainConfig:
    """The paper's StarCraft II run at its sizes (T=6, W=64, L=256, largest box 0.1 of the side;
    the paper: β=1.8, lr 1e-5, batch 100); the label is a count, so no per-glimpse parts."""
    return _paper_scale_gpu(
        dataset, {"glimpses": 6, "min_image_fraction": 0.05, "max_image_fraction": 0.1}, False
    )


def detail_cpu(dataset: str) -> TrainConfig:
    """Where detail matters, on 2 CPU cores: one digit (10 classes) with clutter on a 1000-px
    canvas, the original at full resolution and the proxy blurred ×10 to 100 px (cluttered MNIST
    ``task=single canvas_size=1000 original_size=1000 downsample_scale=10 proxy_size=100``).
    The digit is 28 px in the original, under 3 px in the proxy and 6 px once the image is resized
    to 224, so only a model that reads full-resolution pixels can tell it.

    Two glimpses of 32 px over boxes of 0.045–0.05 of the side (45–50 px: the whole digit at
    ~0.65 scale). The heat-map locator works on a 50×50 grid (stride 2 on the proxy) whose cell
    scores start from a brightness prior (`heatmap_saliency`): with 2,500 cells a random glimpse
    almost never holds the digit, so neither the glimpse classifier nor the score-function
    reward gets a signal (MODEL.md); with the prior the first glimpse holds it from step 0 and
    the learned scores start at zero. Inhibition of return sends the second glimpse elsewhere.
    No box curriculum: at this scale a large box shrinks the digit below what a 32-px window
    can read. Measured in BENCHMARKS.md ("Headline").
    """
    return TrainConfig(
        dataset=dataset,
        model="saccader",
        model_cfg={
            **SMALL_SACCADER,
            "proxy_size": 100,
            "glimpses": 2,
            "min_image_fraction": 0.045,
            "max_image_fraction": 0.05,
            "locator": "heatmap",
            "heatmap_stride": 2,
            "heatmap_saliency": 12.0,
            "inhibit_return": True,
            "glimpse_norm": "group",  # the second glimpse is mostly background
        },
        epochs=6,
        batch_size=32,
        lr=2e-3,
        warmup_steps=100,
        objective=_score_trained(),
        picture_every=2,
    )


def quickstart_cpu(dataset: str) -> TrainConfig:
    """The quickstart's saccader: `detail_cpu` at the quickstart's size, one 20-px digit with
    clutter on a 700-px original (``jobs.quickstart``'s dataset: the proxy blurred ×10 to 70 px,
    the digit 2 px there and 6 px once the image is resized to 224, as in `detail_cpu`'s 1000-px
    images). The boxes keep their fraction of the side (31–35 px around a 20-px digit).

    One glimpse, centred on the brightest blob of the chosen cell (`heatmap_refine`): on the
    cell's centre the digit sat anywhere within 10 px of the glimpse's middle, often cut, and the
    glimpse classifier learnt slowly (plain PyTorch on this data, 9,000 samples: test accuracy
    0.68 with one refined glimpse against 0.44–0.50 for two glimpses, refined or not;
    BENCHMARKS.md, "Quickstart"). Four epochs of 3,000 images take about the training seconds
    of resize-224's three (each model pays what an image costs it): what fits the quickstart's
    15 minutes with the three baselines."""
    base = detail_cpu(dataset)
    return dataclasses.replace(
        base,
        model_cfg={**base.model_cfg, "proxy_size": 70, "glimpses": 1, "heatmap_refine": True},
        epochs=4,
        picture_every=2,
    )


def signs_cpu(dataset: str) -> TrainConfig:
    """Street signs at 4000×3000 on 2 CPU cores (``street_signs`` scenes exported as JPEG photos and
    ingested with ``--source dslr`` and their labels CSV, whose boxes are the signs): the speed
    limit's sign is 40–112 px wide among ten other traffic signs of its shape and colours, 3–7 px
    in the 256-px proxy, its number unreadable there and once resized to 224.

    What trains the location differs from the paper: the heat map's posterior is taught the cell
    of the sign's centre from the dataset's box (`locate_weight`), not by the label alone. No
    prior like `detail_cpu`'s brightness finds a sign among sky, windows and distractors, and with
    16,384 cells a label-driven locator gets no signal (MODEL.md, "Known difficulties").

    The locator reads the whole 256-px proxy (`heatmap_size`) on a 128×128 grid (cells of 31×23
    px in the original); one 64-px glimpse over a 135-px box (0.045 of the height), so the largest
    sign fits whatever its offset in the cell and the smallest one's digits are ~8 px in the
    window. In training the glimpse is drawn near the sign (`guide_glimpses`: uniformly among the
    3×3 cells around its centre's, `guide_radius`), so the glimpse classifier reads signs from the
    first step, each epoch at a new offset. Alone on such glimpses the glimpse encoder sits at
    chance for ~750 steps of 32 and reads 0.95 of test signs after ~3,000 (`jobs.benchmark
    reader`): hence 40 epochs of the 2,000 photos (2,480 steps) on two workers. Measured in
    BENCHMARKS.md ("Headline")."""
    return TrainConfig(
        dataset=dataset,
        model="saccader",
        model_cfg={
            **SMALL_SACCADER,
            "window": 64,
            "proxy_size": 64,
            "heatmap_size": 256,
            "glimpses": 1,
            "min_image_fraction": 0.045,
            "max_image_fraction": 0.045,
            "locator": "heatmap",
            "heatmap_stride": 2,
            "glimpse_norm": "group",
            "glimpse_norm_eps": 0.1,  # a glimpse of sky or wall is near-uniform
        },
        epochs=40,
        batch_size=16,
        num_workers=2,
        lr=2e-3,
        warmup_steps=100,
        objective=dataclasses.replace(_box_taught(object_targets=False), guide_radius=1),
        picture_every=8,
    )


def megapixel_cpu(dataset: str) -> TrainConfig:
    """Megapixel MNIST at 1500×1500 on 2 CPU cores (``megapixel_mnist``'s defaults: attention
    sampling's generator, 5 digits of which 3 share the label, 50 line-noise patches drawn over
    them; the proxy is 180 px, a digit 3–4 px there).

    Five glimpses, one per digit: the heat map reads the whole proxy on a 90×90 grid (cells of
    17 px in the original) and is taught from the dataset's digit boxes (`locate_weight`; not
    the paper's, see `signs_cpu`): each glimpse's target is any digit an earlier glimpse has not
    covered (inhibition of return). A 45-px box (0.03 of the side) holds a 28-px digit whatever
    its offset in the cell, at 0.7 scale in the 32-px window. The final classifier reads the
    mean of the five glimpses' features: what a majority vote needs. The proxy encoder and
    decoder work at 64 px. Six epochs: validation accuracy was still rising at three (the
    learning rate is constant after warm-up, so a run resumed from three with ``--set
    epochs=6`` trains as one of six). Measured in BENCHMARKS.md ("Headline")."""
    return TrainConfig(
        dataset=dataset,
        model="saccader",
        model_cfg={
            **SMALL_SACCADER,
            "proxy_size": 64,
            "heatmap_size": 180,
            "glimpses": 5,
            "min_image_fraction": 0.03,
            "max_image_fraction": 0.03,
            "locator": "heatmap",
            "heatmap_stride": 2,
            "inhibit_return": True,
            "heatmap_refine": True,
            "glimpse_norm": "group",
            "glimpse_norm_eps": 0.1,  # most glimpses of a black canvas are blank
        },
        epochs=6,
        batch_size=32,
        lr=2e-3,
        warmup_steps=100,
        objective=_box_taught(object_targets=True),
        picture_every=2,
    )


def signs_cpu_3g(dataset: str) -> TrainConfig:
    """`signs_cpu` with three glimpses and inhibition of return. With one glimpse the locator's
    first choice held the sign in about half the test photos (hit-rate 0.503): in the 256-px
    proxy the speed-limit sign is 3–7 px and looks like the other white signs with a red ring,
    so its first guess is often one of those. Three glimpses read the three likeliest signs; the
    final classifier reads the mean of their features. In training the first glimpse is guided
    to the sign (`guide_radius`), the others drawn from the posterior elsewhere."""
    base = signs_cpu(dataset)
    return dataclasses.replace(
        base, model_cfg={**base.model_cfg, "glimpses": 3, "inhibit_return": True}
    )


def sc2_cpu(dataset: str) -> TrainConfig:
    """StarCraft II marine counts on 2 CPU cores (``sc2_sim``'s defaults: a 128-cell map rendered
    at 16 px a cell, 2048×2048, and its 128-px mini-map as the proxy). A marine is a 12-px
    sprite, a marauder 18 px; in the mini-map both are the same one-pixel dot, so the proxy shows
    where the Terran army is but not what it is made of.

    Four glimpses with inhibition of return, each a 64-px window over a 123-px box (0.06 of the
    side: marines ~6 px and marauders ~9 px in the window), to cover an army of up to 22 marines
    spread over ~10 cells. The heat map reads the whole mini-map on a 64×64 grid (cells of 32 px
    in the original) and is taught from the marines' boxes (`locate_weight`; not the paper's, see
    `signs_cpu`); training glimpses are drawn near a marine (`guide_radius`). Each glimpse is
    asked how many marines' centres its box holds (`glimpse_counts`), the final classifier the
    scene's count from the mean of the four glimpses' features. 40 epochs of the 3,000 scenes
    (3,750 steps of 32): validation counts stayed near chance for the first ~9 epochs and were
    still improving at 22 (measured in BENCHMARKS.md, "StarCraft II")."""
    return TrainConfig(
        dataset=dataset,
        model="saccader",
        model_cfg={
            **SMALL_SACCADER,
            "window": 64,
            "proxy_size": 64,
            "heatmap_size": 128,
            "glimpses": 4,
            "min_image_fraction": 0.06,
            "max_image_fraction": 0.06,
            "locator": "heatmap",
            "heatmap_stride": 2,
            "inhibit_return": True,
            "glimpse_norm": "group",
            "glimpse_norm_eps": 0.1,  # a glimpse of bare ground is near-uniform
        },
        epochs=40,
        batch_size=16,
        num_workers=2,
        lr=2e-3,
        warmup_steps=100,
        objective=dataclasses.replace(
            _box_taught(object_targets=False), glimpse_counts=True, guide_radius=1
        ),
        picture_every=4,
    )


# The baselines' ResNet-18 narrowed for CPU recipes (the paper-scale recipes use the full width),
# as in `python -m jobs.benchmark localize`; every pixel in 100-px patches (2×2 of the CPU
# datasets' 200-px originals; 224-px patches would be mostly zero padding), the proxy at 40 px.
SMALL_RESNET = {"width": 16, "blocks": (1, 1, 1, 1)}
CPU_PATCHES = {**SMALL_RESNET, "patch_size": 100, "checkpoint": False}
CPU_PROXY = {**SMALL_RESNET, "proxy_size": 40}


def _baseline(
    name: str,
    base: Callable[[str], TrainConfig],
    model_cfg: dict[str, Any] | None = None,
    **changes: Any,
) -> Callable[[str], TrainConfig]:
    def recipe(dataset: str) -> TrainConfig:
        config = base(dataset)
        return dataclasses.replace(
            config,
            **changes,
            model=name,
            model_cfg=dict(model_cfg or {}),
            warmup_steps=0,
            curriculum_steps=0,
            objective=dataclasses.replace(config.objective, **CLASSIFIER_ONLY),
            glimpse_parts=False,
        )

    recipe.__doc__ = f"{base.__name__} with the {name} model instead of the saccader."
    return recipe


def _patches_500(
    base: Callable[[str], TrainConfig],
    *,
    train_images: int,
    epochs: int = 1,
    **changes: Any,
) -> Callable[[str], TrainConfig]:
    """Every pixel at these sizes: 500-px patches, a budget of images (`epochs` of the same
    first `train_images`), batches of 4 with activations recomputed in backward (held, a
    32-image step's were what Ray's memory monitor killed beside other trainings)."""
    return _baseline(
        "resnet18_patches",
        base,
        {**CPU_PATCHES, "patch_size": 500, "checkpoint": True},
        epochs=epochs,
        batch_size=4,
        train_images=train_images,
        **changes,
    )


RECIPES: dict[str, Callable[[str], TrainConfig]] = {
    "tiny_cpu": tiny_cpu,
    "tiny_cpu_resize224": _baseline("resnet18_resize224_test", tiny_cpu),
    "tiny_cpu_patches": _baseline("resnet18_patches_test", tiny_cpu),
    "tiny_cpu_proxy_only": _baseline("proxy_only_test", tiny_cpu),
    "quickstart_cpu": quickstart_cpu,
    "quickstart_cpu_resize224": _baseline(
        "resnet18_resize224", quickstart_cpu, SMALL_RESNET, epochs=3
    ),
    # 2×2 patches of 350 px; every pixel reads 600 images, what fits beside the others' training
    # time (BENCHMARKS.md, "Quickstart", was measured so)
    "quickstart_cpu_patches": _baseline(
        "resnet18_patches",
        quickstart_cpu,
        {**CPU_PATCHES, "patch_size": 350},
        epochs=1,
        train_images=600,
    ),
    "quickstart_cpu_proxy_only": _baseline(
        "proxy_only", quickstart_cpu, {**SMALL_RESNET, "proxy_size": 70}, epochs=3
    ),
    "cluttered_cpu": cluttered_cpu,
    "cluttered_cpu_resize224": _baseline("resnet18_resize224", cluttered_cpu, SMALL_RESNET),
    "cluttered_cpu_patches": _baseline("resnet18_patches", cluttered_cpu, CPU_PATCHES),
    "cluttered_cpu_proxy_only": _baseline("proxy_only", cluttered_cpu, CPU_PROXY),
    "detail_cpu": detail_cpu,
    "detail_cpu_resize224": _baseline("resnet18_resize224", detail_cpu, SMALL_RESNET),
    # 16 patches of 250 px; one epoch of every pixel costs about the saccader's whole training
    "detail_cpu_patches": _baseline(
        "resnet18_patches", detail_cpu, {**CPU_PATCHES, "patch_size": 250}, epochs=1
    ),
    "detail_cpu_proxy_only": _baseline(
        "proxy_only", detail_cpu, {**SMALL_RESNET, "proxy_size": 100}
    ),
    "signs_cpu": signs_cpu,
    "signs_cpu_3g": signs_cpu_3g,
    # at 224 px the sign is 2–6 px and its number under 2 px, nothing to read: a budget of 400
    # photos (each step decodes every tile of 12 MP photos) gives its accuracy and its cost
    "signs_cpu_resize224": _baseline(
        "resnet18_resize224", signs_cpu, SMALL_RESNET, epochs=1, train_images=400, num_workers=1
    ),
    "signs_cpu_proxy_only": _baseline(
        "proxy_only", signs_cpu, {**SMALL_RESNET, "proxy_size": 256}, epochs=8, num_workers=1
    ),
    # 8×6 patches: ~12 MP an image, a short budget (BENCHMARKS.md, "Street signs")
    "signs_cpu_patches": _patches_500(signs_cpu, train_images=80, num_workers=1),
    "megapixel_cpu": megapixel_cpu,
    "megapixel_cpu_resize224": _baseline(
        "resnet18_resize224", megapixel_cpu, SMALL_RESNET, epochs=2
    ),
    "megapixel_cpu_proxy_only": _baseline(
        "proxy_only", megapixel_cpu, {**SMALL_RESNET, "proxy_size": 180}, epochs=6
    ),
    # 3×3 patches; 3,600 images at ~1 image/s: the wall-clock budget of the saccader's six
    # epochs (BENCHMARKS.md, "Megapixel MNIST")
    "megapixel_cpu_patches": _patches_500(megapixel_cpu, train_images=3600),
    "sc2_cpu": sc2_cpu,
    "sc2_cpu_resize224": _baseline("resnet18_resize224", sc2_cpu, SMALL_RESNET, epochs=4),
    "sc2_cpu_proxy_only": _baseline(
        "proxy_only", sc2_cpu, {**SMALL_RESNET, "proxy_size": 128}, epochs=12
    ),
    # 5×5 patches of 500 px, ~0.84 images/s on two workers: three epochs of 850 images took
    # 3,049 s, near the saccader's 3,633 s, with a validation curve (BENCHMARKS.md,
    # "StarCraft II")
    "sc2_cpu_patches": _patches_500(sc2_cpu, train_images=850, epochs=3),
    "cluttered_2528_gpu": cluttered_2528_gpu,
    "sc2_gpu": sc2_gpu,
}


def build_model(cfg: TrainConfig, data: DataSpec) -> BatchClassifier:
    """The configured model for this dataset's classes and channels (what training, the
    registered pyfunc and the benchmarks build)."""
    return create_model(cfg.model, **cfg.model_settings(data))


def make_recipe(name: str, dataset: str, overrides: Mapping[str, str]) -> TrainConfig:
    """The recipe `name` for `dataset` with `key=value` overrides (``model_cfg.key`` reaches the
    model's config, ``objective.key`` the loss's). Each value is parsed by the annotated type of
    its field (TrainConfig's, ObjectiveConfig's, or the model's config dataclass's); unknown
    recipes and keys, and values of the wrong type, are named in the error."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; use one of {sorted(RECIPES)}")
    values = RECIPES[name](dataset).to_dict()
    values["registered_model"] = name  # --set registered_model=saccade: a production candidate
    model_keys = {k: v for k, v in overrides.items() if k.startswith("model_cfg.")}
    for key, raw in overrides.items():
        if key not in model_keys:
            _set(values, key, raw)
    if model_keys:
        # after the plain settings: `--set model=...` decides which config the keys belong to
        model_types = model_setting_types(values["model"])
        for key, raw in model_keys.items():
            unknown = f"unknown {values['model']} settings [{key.removeprefix('model_cfg.')!r}]"
            _set_field(values["model_cfg"], key, raw, model_types, unknown)
    return TrainConfig.from_dict(values)


def _set(values: dict[str, Any], key: str, raw: str) -> None:
    """One ``key=value`` override of a TrainConfig field or of an ``objective.`` field."""
    if key in RENAMED:
        raise ValueError(f"setting {key!r} is now {RENAMED[key]!r}: --set {RENAMED[key]}=...")
    types = typing.get_type_hints(TrainConfig)
    if key.startswith("objective."):
        objective_types = typing.get_type_hints(ObjectiveConfig)
        _set_field(values["objective"], key, raw, objective_types, f"unknown setting {key!r}")
        return
    if key not in types or key in NESTED:
        raise ValueError(
            f"unknown setting {key!r}; known: {sorted(set(types) - set(NESTED))}, "
            "objective.KEY or model_cfg.KEY"
        )
    values[key] = parse_setting(key, raw, types[key])


NESTED = ("model_cfg", "objective")  # set through their keys: model_cfg.KEY, objective.KEY


def _set_field(
    target: dict[str, Any], key: str, raw: str, types: Mapping[str, Any], unknown: str
) -> None:
    """``<nested>.<field>=raw`` into `target` (a nested config's values), parsed by the field's
    type in `types`; an unknown field is refused with `unknown` and the known ones."""
    prefix, _, field_name = key.partition(".")
    if field_name not in types:
        raise ValueError(f"{unknown}; known: {sorted(f'{prefix}.{k}' for k in types)}")
    target[field_name] = parse_setting(key, raw, types[field_name])


def model_setting_types(model: str) -> dict[str, Any]:
    """The annotated type of each setting of `model`'s config dataclass (for `parse_setting`)."""
    return typing.get_type_hints(config_type(model))


BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_setting(key: str, raw: str, annotation: Any) -> Any:
    """``raw`` as a value of the annotated type: a bool (true/false/1/0/yes/no), an int, a finite
    float, a string, a tuple of ints ("1,1,1"), or None (``none``) where the field is optional.
    A ValueError names the setting, the value and what it accepts."""
    args = typing.get_args(annotation)
    if type(None) in args:  # `X | None`
        if raw.strip().lower() in ("none", "null"):
            return None
        (annotation,) = [a for a in args if a is not type(None)]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        if raw.strip() not in args:
            raise ValueError(f"setting {key}={raw!r} must be one of {', '.join(args)}")
        return raw.strip()
    if annotation is bool:
        if raw.strip().lower() not in BOOL_WORDS:
            raise ValueError(f"setting {key}={raw!r} must be one of true/false/1/0/yes/no")
        return BOOL_WORDS[raw.strip().lower()]
    if annotation is int:
        return _parse_int(key, raw, "an integer")
    if annotation is float:
        return _parse_float(key, raw)
    if annotation is str:
        if not raw.strip():
            raise ValueError(f"setting {key} is empty; give a value")
        return raw.strip()
    if typing.get_origin(annotation) is tuple and args == (int, Ellipsis):
        try:
            return tuple(int(p) for p in raw.split(","))
        except ValueError:
            raise ValueError(
                f"setting {key}={raw!r} is not a valid int tuple: use integers separated by "
                f'commas, e.g. "1,1,1"'
            ) from None
    raise ValueError(f"setting {key} cannot be given on the command line")


def _parse_int(key: str, raw: str, what: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"setting {key}={raw!r} is not a valid int: use {what}") from None


def _parse_float(key: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"setting {key}={raw!r} is not a valid float") from None
    if not math.isfinite(value):
        raise ValueError(f"setting {key}={raw!r} must be a finite number")
    return value
