"""Typed configuration of every model variant: one keyword-only dataclass per model.

Required fields (the label's class count and the original's channels) have no default; the rest
are the paper's sizes (MODEL.md), which the `*_test` variants (`model.variants`) shrink for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.loss import LIKELIHOODS

LOCATORS = ("mlp", "heatmap")
POOLED_LEVELS = (1, 2, 4, 8, 16)  # 1: never read a pooled level; else pipelines.pyramid's factors
GLIMPSE_NORMS = ("batch", "group")
CLASSIFIER_INPUTS = ("mean", "concat")


def _check_positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be >= 1, got {value}")


def _check_blocks(config: object, blocks: tuple[int, ...]) -> None:
    if not blocks or min(blocks) < 1:
        raise ValueError(f"{type(config).__name__}: blocks per stage must be >= 1, got {blocks}")


@dataclass(kw_only=True)
class SaccaderConfig:
    """The variational saccader (MODEL.md, "Networks")."""

    num_classes: int  # K: classes of the label
    in_channels: int  # channels of the original image, hence of the glimpses
    proxy_channels: int | None = None  # channels of the proxy x̃; None: the same as in_channels
    # L: width of the LSTM core's hidden state, the encoders' outputs and the MLPs (z, the
    # location latent, is 3 numbers)
    hidden: int = 256
    glimpses: int = 4  # T: glimpses per image (6 in the paper's StarCraft II runs)
    window: int = 64  # W: side of the square glimpse window, in pixels
    min_image_fraction: float = 0.05  # smallest box side, a fraction of the shorter image side
    max_image_fraction: float = 0.3  # largest box side (the reference's max-image-percentage)
    proxy_size: int = 64  # the proxy is resized to this square side for the encoder and decoder
    feed_glimpse: bool = False  # also feed g_t into the LSTM (the reference does not: False)
    encoder_width: int = 32  # channels of the first stage of the proxy and glimpse ResNets
    encoder_blocks: tuple[int, ...] = (1, 1, 1, 1)  # basic blocks per stage (each stage halves)
    likelihood: str = "bernoulli"  # proxy decoder: "bernoulli" for [0, 1] images, or "gaussian"
    init_noise: float = 0.01  # σ of the Gaussian noise on the LSTM's initial state in training
    posterior_logvar_init: float = -6.0  # initial log σ² of q(z): small, so glimpses start sharp
    # Where the box centre comes from: "mlp", the paper's Gaussian posterior on [f, h̄]; or
    # "heatmap", a categorical posterior over a grid of proxy cells scored by a small conv net
    # on the proxy (translation-equivariant) against a query from h̄ (model/saccader.py).
    locator: str = "mlp"
    heatmap_stride: int = 4  # heatmap: proxy pixels per grid cell (the conv net's total stride)
    # heatmap: side the proxy is resized to for the locator's conv net (None: proxy_size). A
    # large proxy whose objects are a few pixels wide keeps them visible to the locator while the
    # proxy encoder and decoder work at the small proxy_size.
    heatmap_size: int | None = None
    inhibit_return: bool = False  # heatmap: cells inside earlier boxes get no mass (next glimpse)
    # heatmap: the paper's Gaussian (x, y) of z, read as an offset of up to half a cell from the
    # chosen cell's centre and conditioned on that cell's features: trained pathwise through the
    # spatial transformer, like the paper's posterior. False: the box sits on the cell centre.
    heatmap_offset: bool = False
    # heatmap: the chosen cell carries a straight-through gradient (forward: the sampled cell;
    # backward: the softmax's), so the likelihood reaches the cell scores through the spatial
    # transformer. The score-function term (ObjectiveConfig.score_weight) is the other signal.
    straight_through: bool = False
    # heatmap: initial weight of a learnable proxy-brightness term in the cell scores (0: none).
    # With it the learned scores start at zero, so the first glimpses go to bright blobs: where
    # a random glimpse almost never holds an object (megapixel MNIST), the glimpse classifier
    # then learns from glimpses that do, and the location rewards carry a signal.
    heatmap_saliency: float = 0.0
    # heatmap: the box is centred on the brightest blob inside the chosen cell (a stride-wide
    # window of the proxy), not on the cell's centre: the object then sits near the middle of
    # the glimpse instead of anywhere within half a cell of it, and the glimpse classifier
    # learns sooner (BENCHMARKS.md, "Quickstart"). The cell is still the posterior's choice.
    heatmap_refine: bool = False
    # Normalisation in the glimpse encoder: "batch" (BatchNorm) or "group" (GroupNorm: the same
    # per-example statistics in training and at inference, whatever the other glimpses hold).
    glimpse_norm: str = "batch"
    # ε of those norms. A blank glimpse (black canvas, as most of megapixel MNIST) has zero
    # variance in every group, so each norm scales its gradient by 1/√ε: at the default 1e-5 the
    # glimpse encoder's gradients reached ~1e9 and its classifier never learnt; 0.1 keeps them at
    # the head's scale (BENCHMARKS.md, "Headline").
    glimpse_norm_eps: float = 1e-5
    # Boxes at least this many windows wide are pooled by a multiple of it and read from the
    # image's pooled level (stored by the pipelines at ×8; model/glimpse.py); 1: never.
    pooled_level: int = 8
    # Mix the glimpses of the two pooling factors around the box's side (model/glimpse.py,
    # "Blending"): a glimpse continuous in the scale, for twice the reads. False: one factor,
    # which jumps at each change of factor (fine where the box's side is fixed).
    glimpse_blend: bool = False
    # What the classifier reads of the per-glimpse features a_1..a_T: "mean", their mean (the
    # paper's; any T at inference), or "concat", them side by side in glimpse order (the
    # reference code's option, used in its StarCraft II runs; T is then fixed by the weights).
    classifier_input: str = "mean"
    # Per class, the classes a single glimpse may name (its "parts"): e.g. a two-digit pair's
    # two digits. Empty: the class itself. Sets the per-glimpse head's targets (auxiliary and
    # score-function terms; model/loss.py), since one glimpse of a pair sees one digit.
    class_parts: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        _check_positive(self, "num_classes", "in_channels", "hidden", "glimpses", "window")
        _check_positive(self, "proxy_size", "encoder_width")
        _check_blocks(self, self.encoder_blocks)
        if self.proxy_channels is None:
            self.proxy_channels = self.in_channels
        _check_positive(self, "proxy_channels")
        if not 0 < self.min_image_fraction <= self.max_image_fraction <= 1:
            raise ValueError(
                "need 0 < min_image_fraction <= max_image_fraction <= 1, got "
                f"{self.min_image_fraction} and {self.max_image_fraction}"
            )
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; use one of {LIKELIHOODS}")
        if self.init_noise < 0:
            raise ValueError(f"init_noise must be >= 0, got {self.init_noise}")
        if self.classifier_input not in CLASSIFIER_INPUTS:
            raise ValueError(
                f"unknown classifier_input {self.classifier_input!r}; use one of "
                f"{CLASSIFIER_INPUTS}"
            )
        if self.locator not in LOCATORS:
            raise ValueError(f"unknown locator {self.locator!r}; use one of {LOCATORS}")
        self.class_parts = tuple(tuple(int(p) for p in parts) for parts in self.class_parts)
        if self.class_parts and (
            len(self.class_parts) != self.num_classes
            or min(map(len, self.class_parts)) < 1
            or min(min(p) for p in self.class_parts) < 0
        ):
            raise ValueError(
                f"class_parts needs one non-empty tuple of part indices >= 0 per class "
                f"({self.num_classes}), got {len(self.class_parts)}"
            )
        if self.pooled_level not in POOLED_LEVELS:
            raise ValueError(
                f"pooled_level must be one of {POOLED_LEVELS}, got {self.pooled_level}"
            )
        if self.heatmap_size is None:
            self.heatmap_size = self.proxy_size
        _check_positive(self, "heatmap_size")
        if self.heatmap_stride not in (1, 2, 4, 8) or self.heatmap_stride > self.heatmap_size:
            raise ValueError(
                f"heatmap_stride must be 1, 2, 4 or 8 and at most heatmap_size "
                f"({self.heatmap_size}), got {self.heatmap_stride}"
            )
        if self.glimpse_norm not in GLIMPSE_NORMS:
            raise ValueError(
                f"glimpse_norm must be one of {GLIMPSE_NORMS}, got {self.glimpse_norm!r}"
            )
        if not self.glimpse_norm_eps > 0:
            raise ValueError(f"glimpse_norm_eps must be > 0, got {self.glimpse_norm_eps}")
        if self.heatmap_saliency < 0:
            raise ValueError(f"heatmap_saliency must be >= 0, got {self.heatmap_saliency}")


@dataclass(kw_only=True)
class ResNetConfig:
    """The baselines' ResNet-18 (MODEL.md, "Baselines"); width and blocks shrink it for tests."""

    num_classes: int  # K: classes of the label
    in_channels: int  # channels of the original image
    width: int = 64  # channels of the first stage (ResNet-18: 64)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # basic blocks per stage (ResNet-18: 2, 2, 2, 2)

    def __post_init__(self) -> None:
        _check_positive(self, "num_classes", "in_channels", "width")
        _check_blocks(self, self.blocks)


@dataclass(kw_only=True)
class ResizeConfig(ResNetConfig):
    """Baseline (a): the whole original resized to image_size × image_size (detail is lost)."""

    image_size: int = 224  # side the original is resized to

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "image_size")


@dataclass(kw_only=True)
class PatchesConfig(ResNetConfig):
    """Baseline (b): every pixel, through patch_size² patches whose features are summed."""

    patch_size: int = 224  # side of the square patches (zero-padded past the image)
    patches_per_chunk: int = 16  # patches per forward pass; bounds the activation memory
    checkpoint: bool = True  # gradient checkpointing per chunk in training (never at inference)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "patch_size", "patches_per_chunk")


@dataclass(kw_only=True)
class ProxyOnlyConfig(ResNetConfig):
    """Proxy-only baseline: the same ResNet on the proxy alone (what the proxy cannot tell)."""

    proxy_channels: int | None = None  # channels of the proxy; None: the same as in_channels
    proxy_size: int = 64  # the proxy is resized to this square side

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proxy_channels is None:
            self.proxy_channels = self.in_channels
        _check_positive(self, "proxy_channels", "proxy_size")
