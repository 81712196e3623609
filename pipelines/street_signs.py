"""Street scenes with one small speed-limit sign: data set 2's embedded default (``street_signs``).

In the spirit of the paper's Figure 1: a 4000×3000 camera-like street scene (sky, buildings with
windows, trees, cars, road) holds one speed-limit sign — a white disc with a red ring and a black
number, on a pole — at a random position, size and lighting. The number is the label
(``SPEED_LIMITS``: 10 classes). Around it stand other traffic signs that share its shape and colours
but carry no number (no entry, no overtaking, end of limits, no parking, stop, warnings, parking),
so "a round red-and-white sign" does not give the class away.

Why the proxy cannot tell the number: the sign's diameter is 1.0–2.8% of the image width (40–112 px
at 4000 px), so in the 256 px proxy the whole sign is 2.6–7.2 px and its digits are 1–3 px tall.
The original, read through a glimpse, shows digits 18–50 px tall.

Everything is drawn with Pillow (``ImageDraw`` and Pillow's built-in FreeType font,
``ImageFont.load_default(size=...)``, Pillow ≥ 10.1), then a global lighting curve and tiled sensor
grain: a 4000×3000 scene takes ~0.3 s on one core. Each sample is a pure function of
``(config, rng)``. The box is the sign's disc, class = the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

from pipelines.synthetic import Sample
from pipelines.tiling import make_proxy

SPEED_LIMITS = (20, 30, 40, 50, 60, 70, 80, 90, 100, 120)
DISTRACTOR_KINDS = (
    "no_entry",
    "no_overtaking",
    "end_of_limits",
    "no_parking",
    "stop",
    "warning",
    "parking",
    "priority",
)
_RED, _WHITE, _BLACK, _BLUE = (200, 20, 30), (245, 245, 240), (15, 15, 15), (20, 70, 170)
_GRAIN_TILE = 509  # px; a prime side, so the tiled grain never lines up with 256 px tiles


@dataclass(frozen=True, kw_only=True)
class StreetSignsConfig:
    """A street scene with one speed-limit sign."""

    width: int = 4000  # original width, px
    height: int = 3000  # original height, px
    proxy_max_side: int = 256  # proxy's longer side, px
    sign_min_frac: float = 0.010  # smallest sign diameter, as a fraction of the width
    sign_max_frac: float = 0.028  # largest sign diameter, as a fraction of the width
    distractors: int = 10  # other traffic signs, none with a number
    buildings: int = 9  # buildings along the horizon
    trees: int = 8  # trees
    cars: int = 6  # cars on the road
    grain: float = 6.0  # sensor noise, standard deviation in grey levels

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64:
            raise ValueError(f"StreetSignsConfig: {self.width}×{self.height} is below 64×64")
        if not 0 < self.sign_min_frac <= self.sign_max_frac <= 0.25:
            raise ValueError(
                f"StreetSignsConfig needs 0 < sign_min_frac ({self.sign_min_frac}) <= "
                f"sign_max_frac ({self.sign_max_frac}) <= 0.25"
            )
        if round(self.sign_min_frac * self.width) < 8:
            raise ValueError(
                f"StreetSignsConfig: signs of {self.sign_min_frac * self.width:.1f} px cannot "
                "hold a number; raise sign_min_frac or width"
            )
        if self.proxy_max_side < 8 or self.grain < 0:
            raise ValueError("StreetSignsConfig needs proxy_max_side >= 8 and grain >= 0")
        counts = (self.distractors, self.buildings, self.trees, self.cars)
        if min(counts) < 0:
            raise ValueError(f"StreetSignsConfig counts must be >= 0, got {counts}")


def street_sign_class_names() -> list[str]:
    """The labels: speed limits in km/h."""
    return [str(v) for v in SPEED_LIMITS]


def generate_street_sign(
    cfg: StreetSignsConfig, rng: np.random.Generator, *, label: int | None = None
) -> Sample:
    """One scene; ``label`` forces the class (tests), otherwise it is drawn uniformly."""
    label = int(rng.integers(len(SPEED_LIMITS))) if label is None else label
    w, h = cfg.width, cfg.height
    horizon = int(h * rng.uniform(0.35, 0.5))
    scene = _sky(w, h, horizon, rng)
    draw = ImageDraw.Draw(scene)
    _ground(draw, w, h, horizon, rng)
    for _ in range(cfg.buildings):
        _building(draw, w, horizon, rng)
    for _ in range(cfg.trees):
        _tree(draw, w, h, horizon, rng)
    for _ in range(cfg.cars):
        _car(draw, w, h, horizon, rng)
    box = _place_sign(w, h, horizon, cfg, rng)
    kinds = []
    for _ in range(cfg.distractors):
        other = _place_sign(w, h, horizon, cfg, rng)
        if _overlap(other, box):
            continue  # never hide the labelled sign
        kinds.append(str(rng.choice(DISTRACTOR_KINDS)))
        _pole_and_sign(scene, draw, other, _distractor(kinds[-1], other), rng)
    _pole_and_sign(scene, draw, box, _speed_sign(SPEED_LIMITS[label], box), rng)
    gain = float(rng.uniform(0.55, 1.2))
    scene = _finish(scene, gain, rng.uniform(0.9, 1.1, 3), cfg.grain, rng)
    x0, y0, x1, y1 = box
    image = np.asarray(scene)
    return Sample(
        image=image,
        proxy=make_proxy(image, max_side=cfg.proxy_max_side),
        label=label,
        label_name=str(SPEED_LIMITS[label]),
        boxes=[(x0 / w, y0 / h, x1 / w, y1 / h, label)],
        meta={
            "generator": "street_signs",
            "speed_limit": SPEED_LIMITS[label],
            "sign_box_px": [x0, y0, x1, y1],
            "lighting_gain": round(gain, 3),
            "distractors": kinds,
        },
    )


# --- Scene ----------------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _sky(w: int, h: int, horizon: int, rng: np.random.Generator) -> Image.Image:
    """A vertical sky gradient (zenith to haze) over the whole frame; the ground covers the rest."""
    zenith = np.array([rng.uniform(60, 140), rng.uniform(110, 170), rng.uniform(170, 235)])
    haze = np.array([rng.uniform(190, 240)] * 3)
    t = np.clip(np.arange(h) / max(horizon, 1), 0, 1)[:, None]
    column = (zenith * (1 - t) + haze * t).astype(np.uint8)  # (h, 3)
    return Image.fromarray(column[:, None, :]).resize((w, h), Image.NEAREST)


def _ground(
    draw: ImageDraw.ImageDraw, w: int, h: int, horizon: int, rng: np.random.Generator
) -> None:
    draw.rectangle((0, horizon, w, h), fill=_colour(rng, 70, 120))  # verge / pavement
    vanish = w * rng.uniform(0.3, 0.7)
    left, right = w * rng.uniform(-0.3, 0.2), w * rng.uniform(0.8, 1.3)
    draw.polygon(
        [(vanish - 4, horizon), (vanish + 4, horizon), (right, h), (left, h)],
        fill=_colour(rng, 60, 90),
    )  # road
    for k in range(1, 12, 2):  # dashed centre line, shrinking with distance
        a, b = (k / 12) ** 2, ((k + 1) / 12) ** 2
        xa, xb = (
            vanish + a * ((left + right) / 2 - vanish),
            vanish + b * ((left + right) / 2 - vanish),
        )
        ya, yb = horizon + a * (h - horizon), horizon + b * (h - horizon)
        draw.line((xa, ya, xb, yb), fill=(225, 225, 215), width=max(1, int(0.012 * w * b)))


def _building(draw: ImageDraw.ImageDraw, w: int, horizon: int, rng: np.random.Generator) -> None:
    bw, bh = w * rng.uniform(0.06, 0.2), horizon * rng.uniform(0.2, 0.8)
    x0 = w * rng.uniform(-0.05, 1.0)
    y1 = horizon + w * rng.uniform(0.0, 0.02)
    draw.rectangle((x0, y1 - bh, x0 + bw, y1), fill=_colour(rng, 80, 210))
    win = max(2.0, bw / rng.uniform(8, 16))
    glass = _colour(rng, 30, 120)
    for wy in np.arange(y1 - bh + win, y1 - 2 * win, 2 * win):
        for wx in np.arange(x0 + win, x0 + bw - win, 2 * win):
            draw.rectangle((wx, wy, wx + win, wy + 1.3 * win), fill=glass)


def _tree(
    draw: ImageDraw.ImageDraw, w: int, h: int, horizon: int, rng: np.random.Generator
) -> None:
    x, base = w * rng.uniform(0, 1), horizon + (h - horizon) * rng.uniform(0.0, 0.5)
    size = (base - horizon + 0.05 * h) * rng.uniform(0.5, 1.0)
    draw.rectangle((x - 0.04 * size, base - 0.6 * size, x + 0.04 * size, base), fill=(70, 50, 35))
    for _ in range(6):
        cx, cy = x + size * rng.normal(0, 0.18), base - size * rng.uniform(0.6, 1.0)
        r = size * rng.uniform(0.15, 0.3)
        draw.ellipse(
            (cx - r, cy - r, cx + r, cy + r),
            fill=(int(rng.integers(20, 70)), int(rng.integers(70, 140)), 30),
        )


def _car(draw: ImageDraw.ImageDraw, w: int, h: int, horizon: int, rng: np.random.Generator) -> None:
    depth = rng.uniform(0.05, 1.0)
    y = horizon + depth * (h - horizon)
    cw = 0.25 * w * depth
    x = w * rng.uniform(0.0, 1.0)
    body = _colour(rng, 20, 230)
    draw.rounded_rectangle((x, y - 0.35 * cw, x + cw, y), radius=0.08 * cw, fill=body)
    draw.rectangle((x + 0.2 * cw, y - 0.55 * cw, x + 0.75 * cw, y - 0.33 * cw), fill=(40, 50, 60))
    for wx in (0.2, 0.8):
        r = 0.09 * cw
        draw.ellipse((x + wx * cw - r, y - r, x + wx * cw + r, y + r), fill=_BLACK)


# --- Signs ----------------------------------------------------------------------------------------

Box = tuple[int, int, int, int]


def _place_sign(
    w: int, h: int, horizon: int, cfg: StreetSignsConfig, rng: np.random.Generator
) -> Box:
    d = int(rng.uniform(cfg.sign_min_frac, cfg.sign_max_frac) * w)
    squash = rng.uniform(0.8, 1.0)  # seen slightly from the side
    sw = max(4, int(d * squash))
    cx = int(rng.uniform(0.02 * w, 0.98 * w - sw))
    cy = int(rng.uniform(0.25 * h, min(0.75 * h, horizon + 0.3 * h)))
    return cx, cy, cx + sw, cy + d


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _pole_and_sign(
    scene: Image.Image,
    draw: ImageDraw.ImageDraw,
    box: Box,
    sign: Image.Image,
    rng: np.random.Generator,
) -> None:
    """A pole below the sign, then the sign, lit by a local factor (shade or sun)."""
    x0, y0, x1, y1 = box
    pole = max(1, (x1 - x0) // 12)
    cx = (x0 + x1) // 2
    draw.rectangle((cx - pole, y1, cx + pole, y1 + 4 * (y1 - y0)), fill=(120, 120, 125))
    light = float(rng.uniform(0.6, 1.1))
    rgb = sign.convert("RGB").point(lambda v: min(255, int(v * light)))
    scene.paste(rgb, (x0, y0), sign.getchannel("A"))


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _canvas(box: Box) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    """A 4× RGBA canvas for one sign (drawn large, reduced: anti-aliased edges)."""
    side = 4 * (box[3] - box[1])
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    return image, ImageDraw.Draw(image), side


def _fit(image: Image.Image, box: Box) -> Image.Image:
    return image.resize((box[2] - box[0], box[3] - box[1]), Image.BOX)


def _text(draw: ImageDraw.ImageDraw, s: int, text: str, fill: tuple, width_frac: float) -> None:
    """Centred text whose width is ``width_frac`` of the sign."""
    font = _font(max(4, int(0.5 * s)))
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    font = _font(max(4, int(0.5 * s * min(1.0, width_frac * s / max(1, x1 - x0)))))
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    draw.text(((s - (x1 - x0)) / 2 - x0, (s - (y1 - y0)) / 2 - y0), text, font=font, fill=fill)


def _ring_sign(draw: ImageDraw.ImageDraw, s: int, inner: tuple, ring: tuple = _RED) -> None:
    draw.ellipse((0, 0, s - 1, s - 1), fill=ring)
    t = 0.11 * s
    draw.ellipse((t, t, s - 1 - t, s - 1 - t), fill=inner)


def _speed_sign(speed: int, box: Box) -> Image.Image:
    image, draw, s = _canvas(box)
    _ring_sign(draw, s, _WHITE)
    _text(draw, s, str(speed), _BLACK, 0.62)
    return _fit(image, box)


def _distractor(kind: str, box: Box) -> Image.Image:
    image, draw, s = _canvas(box)
    if kind == "no_entry":
        draw.ellipse((0, 0, s - 1, s - 1), fill=_RED)
        draw.rectangle((0.18 * s, 0.42 * s, 0.82 * s, 0.58 * s), fill=_WHITE)
    elif kind == "no_overtaking":  # the closest look-alike: ring, white disc, dark shapes
        _ring_sign(draw, s, _WHITE)
        draw.rounded_rectangle((0.22 * s, 0.4 * s, 0.47 * s, 0.62 * s), 0.05 * s, fill=_RED)
        draw.rounded_rectangle((0.53 * s, 0.4 * s, 0.78 * s, 0.62 * s), 0.05 * s, fill=_BLACK)
    elif kind == "end_of_limits":
        draw.ellipse((0, 0, s - 1, s - 1), fill=_WHITE, outline=_BLACK, width=max(1, s // 40))
        for k in (-0.12, 0.0, 0.12):
            draw.line(
                (0.2 * s, (0.8 + k) * s, 0.8 * s, (0.2 + k) * s), fill=_BLACK, width=max(1, s // 30)
            )
    elif kind == "no_parking":
        _ring_sign(draw, s, _BLUE)
        draw.line((0.2 * s, 0.2 * s, 0.8 * s, 0.8 * s), fill=_RED, width=max(1, s // 9))
    elif kind == "stop":
        c = np.linspace(0, 2 * np.pi, 9)[:-1] + np.pi / 8
        draw.polygon([(s / 2 * (1 + np.cos(a)), s / 2 * (1 + np.sin(a))) for a in c], fill=_RED)
        _text(draw, s, "STOP", _WHITE, 0.7)
    elif kind == "warning":
        draw.polygon([(s / 2, 0), (s - 1, s - 1), (0, s - 1)], fill=_RED)
        draw.polygon([(s / 2, 0.2 * s), (0.83 * s, 0.88 * s), (0.17 * s, 0.88 * s)], fill=_WHITE)
        _text(draw, s, "!", _BLACK, 0.12)
    elif kind == "parking":
        draw.rectangle((0, 0, s - 1, s - 1), fill=_BLUE)
        _text(draw, s, "P", _WHITE, 0.45)
    else:  # priority road
        draw.polygon([(s / 2, 0), (s - 1, s / 2), (s / 2, s - 1), (0, s / 2)], fill=_WHITE)
        draw.polygon(
            [(s / 2, 0.15 * s), (0.85 * s, s / 2), (s / 2, 0.85 * s), (0.15 * s, s / 2)],
            fill=(240, 190, 20),
        )
    return _fit(image, box)


# --- Camera ---------------------------------------------------------------------------------------


def _finish(
    scene: Image.Image, gain: float, tint: np.ndarray, grain: float, rng: np.random.Generator
) -> Image.Image:
    """Global lighting (gain, colour tint, gamma) and sensor grain, both in Pillow's C loops."""
    lut = []
    for channel in tint:
        levels = 255 * (np.arange(256) / 255) ** 0.9 * gain * channel
        lut += [int(v) for v in np.clip(levels, 0, 255)]
    scene = scene.point(lut)
    if grain == 0:
        return scene
    noise = rng.normal(128, grain, (_GRAIN_TILE, _GRAIN_TILE)).clip(0, 255).astype(np.uint8)
    tile = Image.fromarray(noise, "L").convert("RGB")
    layer = Image.new("RGB", scene.size)
    for y in range(0, scene.height, _GRAIN_TILE):
        for x in range(0, scene.width, _GRAIN_TILE):
            layer.paste(tile, (x, y))
    return ImageChops.add(scene, layer, scale=1.0, offset=-128)
