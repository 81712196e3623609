"""Synthetic large-image data sets built from real MNIST digits: pure numpy + Pillow, no Ray.

- Cluttered MNIST (MODEL.md, data set 1): digits on a small canvas with 8×8 clutter fragments cut
  from other digits (DeepMind's recipe); the original is the canvas upsampled (2528 px in the
  paper), the proxy the canvas blurred by area-downsampling and resizing back.
- Megapixel MNIST (data set 4, attention sampling's benchmark): a 1500 px canvas with five digits,
  three of the target class, and 50 line-noise patches drawn over them as attention sampling's
  generator does (MegapixelMnistConfig); proxy at ×0.12.

Every sample is a pure function of (config, digit set, rng), and ``sample_rng`` gives each
(seed, split, index) its own independent stream, so any sample can be regenerated on its own.
Boxes are (x0, y0, x1, y1, cls) with x along columns and y along rows, normalised by the side.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from pipelines.digits import NUM_DIGIT_CLASSES, DigitSet

Box = tuple[float, float, float, float, int]

CLUTTERED_TASKS = ("pair", "sum", "single")
_TASK_DIGITS = {"pair": 2, "sum": 2, "single": 1}
# The sum variant is the paper's clutter-free one; the others follow DeepMind's cluttered MNIST.
_TASK_DEFAULT_CLUTTER = {"pair": 8, "sum": 0, "single": 8}
# Line segments per megapixel noise patch, drawn 2 px wide like a pen stroke.
_NOISE_LINES = 3
_NOISE_WIDTH = 2


class GenerationError(ValueError):
    """One sample could not be generated (e.g. no room for the digits); the pipeline rejects it."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One generated example (eq=False: arrays do not compare as bools)."""

    image: np.ndarray  # (H, W, C) uint8 original
    proxy: np.ndarray  # (h, w, C) uint8 low-resolution view of the same scene
    label: int  # class index
    label_name: str  # human-readable class, e.g. "3-7"
    boxes: list[Box]  # (x0, y0, x1, y1, cls) in [0, 1] for every digit: localization truth
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable generator parameters


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent, reproducible random stream for sample ``index`` of ``split`` under ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed ({seed}) and index ({index}) must be >= 0 for a SeedSequence")
    # crc32, not hash(): Python salts str hashes per process, which would break reproducibility.
    split_key = zlib.crc32(split.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split_key, index)))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _require_min(name: str, value: int, minimum: int) -> None:
    _require(value >= minimum, f"{name}={value} is below {minimum}; use at least {minimum}")


# --- Class names ----------------------------------------------------------------------------------


def pair_label(a: int, b: int) -> int:
    """Index of the unordered digit pair {a, b} in ``cluttered_class_names("pair")``."""
    _require(
        0 <= a < NUM_DIGIT_CLASSES and 0 <= b < NUM_DIGIT_CLASSES,
        f"pair_label({a}, {b}): digits must lie in 0..9",
    )
    lo, hi = min(a, b), max(a, b)
    # Rows of the upper triangle: row lo holds the 10 - lo pairs (lo, lo..9).
    return lo * (2 * NUM_DIGIT_CLASSES + 1 - lo) // 2 + (hi - lo)


def cluttered_class_names(task: str) -> list[str]:
    """Class names of a cluttered task, in label order."""
    _require(task in CLUTTERED_TASKS, f"unknown task {task!r}; use one of {CLUTTERED_TASKS}")
    if task == "pair":
        n = NUM_DIGIT_CLASSES
        return [f"{lo}-{hi}" for lo in range(n) for hi in range(lo, n)]
    if task == "sum":
        return [str(s) for s in range(2 * NUM_DIGIT_CLASSES - 1)]
    return [str(d) for d in range(NUM_DIGIT_CLASSES)]


def cluttered_part_classes(task: str) -> tuple[tuple[int, ...], ...]:
    """Per class, the digits a glimpse of one digit may show (``SaccaderConfig.class_parts``):
    a pair's two digits, a single digit itself; a sum has no such parts (empty)."""
    names = cluttered_class_names(task)
    if task == "sum":
        return ()
    return tuple(tuple(sorted({int(d) for d in name.split("-")})) for name in names)


# --- Shared helpers: digits, placement, resizing --------------------------------------------------


def _digit_image(digits: DigitSet, index: int, size: int) -> np.ndarray:
    image = digits.images[index]
    if image.shape == (size, size):
        return image
    return np.asarray(Image.fromarray(image, "L").resize((size, size), Image.BILINEAR))


def _overlaps(
    row: np.ndarray, col: np.ndarray, size: int, occupied: list[tuple[int, int, int]]
) -> np.ndarray:
    """Which candidate squares (row, col, size) overlap any occupied (row, col, size) square."""
    hit = np.zeros(row.shape, dtype=bool)
    for r, c, s in occupied:
        hit |= (row < r + s) & (r < row + size) & (col < c + s) & (c < col + size)
    return hit


def _place(
    rng: np.random.Generator,
    *,
    canvas: int,
    size: int,
    occupied: list[tuple[int, int, int]],
    tries: int,
    what: str,
) -> tuple[int, int]:
    """Top-left (row, col) of a size×size square not overlapping ``occupied`` (touching is fine)."""
    # All tries drawn at once: same result as a retry loop, one numpy call instead of many.
    row, col = rng.integers(0, canvas - size + 1, size=(2, tries))
    free = np.flatnonzero(~_overlaps(row, col, size, occupied))
    if free.size == 0:
        raise GenerationError(
            f"no room for {what} ({size} px) on a {canvas} px canvas after {tries} tries; "
            "use a larger canvas, fewer digits or more tries"
        )
    return int(row[free[0]]), int(col[free[0]])


def _box(row: int, col: int, size: int, canvas: int, cls: int) -> Box:
    return (col / canvas, row / canvas, (col + size) / canvas, (row + size) / canvas, cls)


def _paste_max(canvas: np.ndarray, patch: np.ndarray, row: int, col: int) -> None:
    # Maximum, not overwrite: a digit stays fully visible wherever clutter lies under it.
    h, w = patch.shape
    region = canvas[row : row + h, col : col + w]
    np.maximum(region, patch, out=region)


def _resize(image: np.ndarray, side: int, resample: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image, "L").resize((side, side), resample))


# --- Cluttered MNIST ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClutteredMnistConfig:
    """Cluttered MNIST: digits and clutter on a small canvas, upsampled to the original."""

    task: str = "pair"  # "pair" (55 unordered pairs), "sum" (19 sums) or "single" (10 digits)
    canvas_size: int = 100  # side of the canvas the scene is composed on, px
    original_size: int = 512  # side of the original: the canvas upsampled (2528 in the paper)
    downsample_scale: int = 3  # proxy blur: the canvas is area-downsampled by this factor
    proxy_size: int = 100  # side the downsampled canvas is resized back to: the proxy
    clutter: int | None = None  # 8×8 fragments from other digits; None = task default (sum: 0)
    clutter_size: int = 8  # side of one clutter fragment, px
    digit_size: int = 28  # side of one placed digit, px (the source digits are resized to it)
    max_place_tries: int = 100  # random positions tried per digit before giving up on a sample

    def __post_init__(self) -> None:
        _require(
            self.task in CLUTTERED_TASKS,
            f"ClutteredMnistConfig.task={self.task!r} is unknown; use one of {CLUTTERED_TASKS}",
        )
        if self.clutter is None:  # frozen: resolve the task's default once, here
            object.__setattr__(self, "clutter", _TASK_DEFAULT_CLUTTER[self.task])
        self._check_sizes()
        _require_min("ClutteredMnistConfig.clutter", self.clutter, 0)
        _require_min("ClutteredMnistConfig.max_place_tries", self.max_place_tries, 1)

    def _check_sizes(self) -> None:
        n = _TASK_DIGITS[self.task]
        _require_min("ClutteredMnistConfig.digit_size", self.digit_size, 1)
        _require(
            self.canvas_size >= n * self.digit_size,
            f"ClutteredMnistConfig.canvas_size={self.canvas_size} cannot hold {n} non-overlapping "
            f"{self.digit_size} px digits; use canvas_size >= {n * self.digit_size}",
        )
        _require(
            self.original_size >= self.canvas_size,
            f"ClutteredMnistConfig.original_size={self.original_size} is below canvas_size="
            f"{self.canvas_size}; the original must be the canvas upsampled, so raise it",
        )
        _require(
            1 <= self.downsample_scale <= self.canvas_size,
            f"ClutteredMnistConfig.downsample_scale={self.downsample_scale} must lie in "
            f"1..canvas_size ({self.canvas_size}); 1 means no blur, 3 is the paper's",
        )
        _require_min("ClutteredMnistConfig.proxy_size", self.proxy_size, 1)
        _require(
            1 <= self.clutter_size <= self.digit_size,
            f"ClutteredMnistConfig.clutter_size={self.clutter_size} must lie in 1..digit_size "
            f"({self.digit_size}): fragments are cut from digits",
        )

    @property
    def num_digits(self) -> int:
        """Digits placed per canvas."""
        return _TASK_DIGITS[self.task]

    @property
    def num_classes(self) -> int:
        """Number of label classes of this task."""
        return len(cluttered_class_names(self.task))


def _cluttered_label(task: str, classes: list[int]) -> int:
    if task == "pair":
        return pair_label(classes[0], classes[1])
    return sum(classes)  # "sum", and "single" where the one digit is the label


def _add_clutter(
    canvas: np.ndarray,
    cfg: ClutteredMnistConfig,
    digits: DigitSet,
    exclude: np.ndarray,
    rng: np.random.Generator,
) -> list[dict[str, int]]:
    """Paste fragments cut from digits not in ``exclude``; returns where each came from."""
    if cfg.clutter == 0:
        return []
    others = np.delete(np.arange(len(digits)), exclude)
    if others.size == 0:
        raise GenerationError(
            f"clutter needs digits other than the {exclude.size} placed, but the digit set holds "
            f"only {len(digits)}; use more digits or clutter=0"
        )
    sources = rng.choice(others, size=cfg.clutter)
    crop = rng.integers(0, cfg.digit_size - cfg.clutter_size + 1, size=(cfg.clutter, 2))
    where = rng.integers(0, cfg.canvas_size - cfg.clutter_size + 1, size=(cfg.clutter, 2))
    s = cfg.clutter_size
    for src, (cr, cc), (r, c) in zip(sources, crop, where, strict=True):
        fragment = _digit_image(digits, int(src), cfg.digit_size)[cr : cr + s, cc : cc + s]
        _paste_max(canvas, fragment, int(r), int(c))
    return [
        {"source": int(src), "row": int(r), "col": int(c)}
        for src, (r, c) in zip(sources, where, strict=True)
    ]


def _cluttered_proxy(canvas: np.ndarray, cfg: ClutteredMnistConfig) -> np.ndarray:
    # Area (BOX) averaging then bilinear back up: the paper's blurred proxy at the proxy's size.
    small = max(1, round(cfg.canvas_size / cfg.downsample_scale))
    return _resize(_resize(canvas, small, Image.BOX), cfg.proxy_size, Image.BILINEAR)


def generate_cluttered(
    cfg: ClutteredMnistConfig, digits: DigitSet, rng: np.random.Generator
) -> Sample:
    """One cluttered-MNIST sample: clutter first, then non-overlapping digits, composed by max."""
    n = cfg.num_digits
    if len(digits) < n:
        raise GenerationError(f"the digit set holds {len(digits)} digits; the task needs {n}")
    chosen = rng.choice(len(digits), size=n, replace=False)
    canvas = np.zeros((cfg.canvas_size, cfg.canvas_size), dtype=np.uint8)
    clutter = _add_clutter(canvas, cfg, digits, chosen, rng)
    occupied: list[tuple[int, int, int]] = []
    boxes: list[Box] = []
    for index in chosen:
        row, col = _place(
            rng,
            canvas=cfg.canvas_size,
            size=cfg.digit_size,
            occupied=occupied,
            tries=cfg.max_place_tries,
            what=f"digit {len(occupied) + 1} of {n}",
        )
        occupied.append((row, col, cfg.digit_size))
        _paste_max(canvas, _digit_image(digits, int(index), cfg.digit_size), row, col)
        boxes.append(_box(row, col, cfg.digit_size, cfg.canvas_size, int(digits.labels[index])))
    classes = [b[4] for b in boxes]
    label = _cluttered_label(cfg.task, classes)
    return Sample(
        image=_resize(canvas, cfg.original_size, Image.BILINEAR)[:, :, None],
        proxy=_cluttered_proxy(canvas, cfg)[:, :, None],
        label=label,
        label_name=cluttered_class_names(cfg.task)[label],
        boxes=boxes,
        meta={
            "generator": "cluttered_mnist",
            "task": cfg.task,
            "digit_indices": [int(i) for i in chosen],
            "digit_classes": classes,
            "digit_positions": [[r, c] for r, c, _ in occupied],  # canvas px, (row, col)
            "clutter": len(clutter),
            "clutter_fragments": clutter,
            "canvas_size": cfg.canvas_size,
        },
    )


# --- Megapixel MNIST ------------------------------------------------------------------------------

MEGAPIXEL_NOISE_STYLES = ("lines", "segments")


@dataclass(frozen=True, kw_only=True)
class MegapixelMnistConfig:
    """Megapixel MNIST: a few digits, most of the target class, and line noise on a large canvas.

    The defaults are attention sampling's generator (Katharopoulos & Fleuret 2019,
    ``scripts/make_mnist.py``): noise patches drawn after the digits, anywhere, each overwriting
    its block (so it may erase part of a digit), from a fixed bank of 50 two-line patterns; the two
    other digits from any other class (they may share one). ``noise_over_digits=false``,
    ``distinct_others=true`` and ``noise_style=segments`` together give this project's earlier,
    easier variant (noise never over a digit, distinct other classes, random 2-px segments).
    """

    canvas_size: int = 1500  # side of the original, px
    digits_per_image: int = 5  # digits placed per image
    target_count: int = 3  # digits of the target class (the label); the rest are other classes
    noise_patches: int = 50  # digit-sized line-noise patches per image
    # True: patches drawn after the digits anywhere inside a one-digit margin, each replacing the
    # pixels of its block (the reference); False: never over a digit, composed by maximum
    noise_over_digits: bool = True
    # False: each other digit from any non-target class, so two may share one (the reference);
    # True: the others' classes are distinct
    distinct_others: bool = False
    # "lines": patches from a fixed bank of 1-px two-line patterns (the reference's);
    # "segments": a fresh patch of three random 2-px segments each time
    noise_style: str = "lines"
    noise_bank: int = 50  # patterns in the "lines" bank (the reference's 50)
    noise_seed: int = 0  # seed of the "lines" bank: one bank for every split of a dataset
    proxy_scale: float = 0.12  # proxy side = round(canvas_size * proxy_scale), area-downsampled
    digit_size: int = 28  # side of one placed digit and one noise patch, px
    max_place_tries: int = 200  # random positions tried per digit or patch before giving up

    def __post_init__(self) -> None:
        name = "MegapixelMnistConfig"
        _require_min(f"{name}.digit_size", self.digit_size, 1)
        _require(
            1 <= self.target_count <= self.digits_per_image,
            f"{name}.target_count={self.target_count} must lie in 1..digits_per_image "
            f"({self.digits_per_image})",
        )
        self._check_others()
        # Grid packing: k squares of side d always fit in a square of side d·ceil(√k).
        min_canvas = self.digit_size * int(np.ceil(np.sqrt(self.digits_per_image)))
        _require(
            self.canvas_size >= min_canvas,
            f"{name}.canvas_size={self.canvas_size} cannot hold {self.digits_per_image} "
            f"non-overlapping {self.digit_size} px digits; use canvas_size >= {min_canvas}",
        )
        self._check_noise()
        _require(
            0.0 < self.proxy_scale <= 1.0 and round(self.canvas_size * self.proxy_scale) >= 1,
            f"{name}.proxy_scale={self.proxy_scale} must lie in (0, 1] and give a proxy of at "
            f"least 1 px (canvas_size={self.canvas_size}); 0.12 is attention sampling's",
        )
        _require_min(f"{name}.max_place_tries", self.max_place_tries, 1)

    def _check_others(self) -> None:
        others = self.digits_per_image - self.target_count
        if self.distinct_others:
            _require(
                others <= NUM_DIGIT_CLASSES - 1,
                f"MegapixelMnistConfig: {others} non-target digits need {others} distinct "
                f"non-target classes but only {NUM_DIGIT_CLASSES - 1} exist; lower "
                "digits_per_image or raise target_count",
            )
        else:
            # The others may all share one class: the target must still be the majority.
            _require(
                others < self.target_count,
                f"MegapixelMnistConfig: {others} non-target digits of possibly one class could "
                f"tie or outnumber the target_count={self.target_count}; raise target_count "
                "above the others or set distinct_others=true",
            )

    def _check_noise(self) -> None:
        name = "MegapixelMnistConfig"
        _require_min(f"{name}.noise_patches", self.noise_patches, 0)
        _require(
            self.noise_style in MEGAPIXEL_NOISE_STYLES,
            f"{name}.noise_style={self.noise_style!r} is unknown; use one of "
            f"{MEGAPIXEL_NOISE_STYLES}",
        )
        _require_min(f"{name}.noise_bank", self.noise_bank, 1)
        _require_min(f"{name}.noise_seed", self.noise_seed, 0)
        _require(
            not self.noise_over_digits or self.canvas_size > 2 * self.digit_size,
            f"{name}.canvas_size={self.canvas_size} leaves no room for noise inside a "
            f"{self.digit_size} px margin; use canvas_size > {2 * self.digit_size}",
        )

    @property
    def proxy_size(self) -> int:
        """Side of the proxy, px."""
        return round(self.canvas_size * self.proxy_scale)


def _megapixel_digits(
    cfg: MegapixelMnistConfig, digits: DigitSet, rng: np.random.Generator
) -> tuple[int, list[int]]:
    """The target class and the digit indices to place: target_count targets, then the others."""
    target = int(rng.integers(NUM_DIGIT_CLASSES))
    pool = np.flatnonzero(digits.labels == target)
    if pool.size < cfg.target_count:
        raise GenerationError(
            f"class {target} has {pool.size} digits in the digit set; the target needs "
            f"{cfg.target_count}"
        )
    chosen = list(rng.choice(pool, size=cfg.target_count, replace=False))
    others = cfg.digits_per_image - cfg.target_count
    if not cfg.distinct_others:
        # Any non-target digit, so classes come in the pool's proportions and may repeat.
        rest = np.flatnonzero(digits.labels != target)
        if rest.size < others:
            raise GenerationError(
                f"the digit set holds {rest.size} digits of classes other than {target}; "
                f"the image needs {others}"
            )
        return target, [int(i) for i in (*chosen, *rng.choice(rest, size=others, replace=False))]
    non_targets = [c for c in range(NUM_DIGIT_CLASSES) if c != target]
    for cls in rng.choice(non_targets, size=others, replace=False):
        members = np.flatnonzero(digits.labels == cls)
        if members.size == 0:
            raise GenerationError(f"class {cls} has no digits in the digit set")
        chosen.append(rng.choice(members))
    return target, [int(i) for i in chosen]


def _segments_patch(size: int, rng: np.random.Generator) -> np.ndarray:
    ends = rng.uniform(0, size - 1, size=(_NOISE_LINES, 4))
    patch = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(patch)
    for x0, y0, x1, y1 in ends:
        draw.line((float(x0), float(y0), float(x1), float(y1)), fill=255, width=_NOISE_WIDTH)
    return np.asarray(patch)


def _corner_line(size: int, slope: float) -> np.ndarray:
    """A 1-px straight line from the top-left pixel, `slope` columns per row, to the far edge."""
    line = np.zeros((size, size), dtype=bool)
    last = size - 0.51  # the last row or column the rounding still reaches
    rows = np.linspace(0.0, min(last, last / slope), 2 * size)
    line[np.round(rows).astype(int), np.round(slope * rows).astype(int)] = True
    return line


@functools.lru_cache(maxsize=8)
def line_patterns(count: int, size: int, seed: int) -> np.ndarray:
    """The "lines" bank: (count, size, size) uint8 patterns, each the union of two corner lines.

    As the reference draws them: line k leaves the top-left corner at an angle drawn uniformly
    in [0°, 72°) from the rows' direction; the second line of pattern k is the first line of
    another pattern (a random permutation), mirrored left-right with probability 2·0.33·0.67
    (the reference flips the same axis twice, with probability 0.33 each); pixels are 0.8–1.0
    of full brightness.
    """
    rng = np.random.default_rng(seed)
    first = np.stack([_corner_line(size, np.tan(a)) for a in rng.random(count) * np.pi / 2.5])
    second = first[rng.permutation(count)]
    mirrored = (rng.random(count) < 0.33) ^ (rng.random(count) < 0.33)
    second[mirrored] = second[mirrored, :, ::-1]
    brightness = rng.random((count, size, size)) * 0.2 + 0.8
    patterns = ((first | second) * brightness * 255).astype(np.uint8)
    patterns.setflags(write=False)  # shared by every sample through the cache
    return patterns


def _noise_patch(cfg: MegapixelMnistConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.noise_style == "segments":
        return _segments_patch(cfg.digit_size, rng)
    bank = line_patterns(cfg.noise_bank, cfg.digit_size, cfg.noise_seed)
    return bank[int(rng.integers(cfg.noise_bank))]


def _add_noise(
    canvas: np.ndarray,
    cfg: MegapixelMnistConfig,
    occupied: list[tuple[int, int, int]],
    rng: np.random.Generator,
) -> None:
    size = cfg.digit_size
    for _ in range(cfg.noise_patches):
        if cfg.noise_over_digits:
            # The reference's positions: anywhere a digit's width from the border, over digits
            # and other noise alike; the patch replaces its whole block, zeros included.
            row, col = (int(v) for v in rng.integers(size, cfg.canvas_size - size, size=2))
            canvas[row : row + size, col : col + size] = _noise_patch(cfg, rng)
            continue
        # Noise may cross other noise but never a digit, so every digit stays readable.
        row, col = _place(
            rng,
            canvas=cfg.canvas_size,
            size=size,
            occupied=occupied,
            tries=cfg.max_place_tries,
            what="a noise patch",
        )
        _paste_max(canvas, _noise_patch(cfg, rng), row, col)


def generate_megapixel(
    cfg: MegapixelMnistConfig, digits: DigitSet, rng: np.random.Generator
) -> Sample:
    """One megapixel-MNIST sample: non-overlapping digits, then the noise patches."""
    target, chosen = _megapixel_digits(cfg, digits, rng)
    canvas = np.zeros((cfg.canvas_size, cfg.canvas_size), dtype=np.uint8)
    size = cfg.digit_size
    occupied: list[tuple[int, int, int]] = []
    boxes: list[Box] = []
    for index in chosen:
        row, col = _place(
            rng,
            canvas=cfg.canvas_size,
            size=size,
            occupied=occupied,
            tries=cfg.max_place_tries,
            what="a digit",
        )
        occupied.append((row, col, size))
        _paste_max(canvas, _digit_image(digits, index, size), row, col)
        boxes.append(_box(row, col, size, cfg.canvas_size, int(digits.labels[index])))
    _add_noise(canvas, cfg, occupied, rng)
    return Sample(
        image=canvas[:, :, None],
        proxy=_resize(canvas, cfg.proxy_size, Image.BOX)[:, :, None],
        label=target,
        label_name=str(target),
        boxes=boxes,
        meta={
            "generator": "megapixel_mnist",
            "target": target,
            "digit_indices": chosen,
            "digit_classes": [b[4] for b in boxes],
            "digit_positions": [[r, c] for r, c, _ in occupied],  # canvas px, (row, col)
            "noise_patches": cfg.noise_patches,
            "noise_over_digits": cfg.noise_over_digits,
            "noise_style": cfg.noise_style,
            "canvas_size": cfg.canvas_size,
        },
    )
