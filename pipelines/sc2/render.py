"""One renderer for simulated and replayed scenes: the mini-map proxy and the full-screen original.

- **Original** (``RenderConfig.px_per_cell`` pixels per map cell; 16 gives a 2048 px render of a
  128-cell map, 2816×2944 for a 176×184 ladder map): the procedural terrain
  (``pipelines.sc2.terrain``) with cliffs and scattered rocks, then one sprite per unit, drawn at
  the unit's game radius. Sprites differ by type only in detail — a marine is an owner-coloured
  disc with a visor and a rifle, a marauder a slightly larger disc with shoulder plates and a
  grenade launcher, a zergling a marine-sized body with claws — so types are told apart only at
  full resolution.
- **Proxy** (``minimap_size`` pixels on the longer side, 128 by default): the game's mini-map —
  dark terrain and one owner-coloured dot per unit (a square per structure, by footprint), the
  same dot for every unit type: the mini-map shows where armies are, not what they are.

Label: marines in the scene, of any owner. Boxes: the sprite box of every marine, class 0, in
[0, 1] image coordinates (x along columns, y along rows: the game's y is flipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from pipelines.sc2.terrain import HIGH, LOW, UNPATHABLE, terrain_levels
from pipelines.sc2.tracks import MARINE, Scene, Unit
from pipelines.sc2.units import sprite_kind, unit_radius, unit_spec

MARINE_BOX_CLASS = 0
# Player colours as in the game's defaults (1 red, 2 blue, then teal, purple, ...); 0 = neutral.
OWNER_COLOURS = {
    0: (150, 200, 220),
    1: (200, 30, 30),
    2: (30, 80, 220),
    3: (30, 170, 160),
    4: (120, 50, 160),
}
_TERRAIN_COLOURS = {UNPATHABLE: (12, 14, 22), LOW: (92, 84, 66), HIGH: (128, 118, 92)}
_MINIMAP_TERRAIN = {UNPATHABLE: (0, 0, 0), LOW: (40, 38, 32), HIGH: (62, 58, 48)}
_CLIFF = (48, 42, 34)
_ROCKS_PER_100_CELLS = 2.0  # decorative rocks and craters on pathable ground


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """How large the original and the proxy are."""

    px_per_cell: float = 16.0  # original pixels per map cell (the full-screen render's scale)
    minimap_size: int = 128  # proxy side (the longer one), pixels
    min_sprite_px: int = 3  # smallest sprite edge, so a unit is never lost at small scales

    def __post_init__(self) -> None:
        if not 1.0 <= self.px_per_cell <= 64.0:
            raise ValueError(f"px_per_cell={self.px_per_cell} must lie in [1, 64]")
        if self.minimap_size < 16:
            raise ValueError(f"minimap_size={self.minimap_size} is below 16 pixels")
        if self.min_sprite_px < 1:
            raise ValueError(f"min_sprite_px={self.min_sprite_px} must be >= 1")


@dataclass(frozen=True, eq=False)
class Rendered:
    """A rendered scene."""

    image: np.ndarray  # (H, W, 3) uint8 full-screen original
    proxy: np.ndarray  # (h, w, 3) uint8 mini-map
    marine_boxes: list[tuple[float, float, float, float, int]]  # x0, y0, x1, y1 in [0, 1]; class


def image_size(scene: Scene, cfg: RenderConfig) -> tuple[int, int]:
    """(height, width) of the original in pixels."""
    return round(scene.map.height * cfg.px_per_cell), round(scene.map.width * cfg.px_per_cell)


def render(scene: Scene, cfg: RenderConfig) -> Rendered:
    """Draw the original and the mini-map of one scene."""
    height, width = image_size(scene, cfg)
    canvas = _terrain_image(scene, width, height)
    units = sorted(scene.snapshot.units, key=_draw_order)
    boxes = []
    for unit in units:
        box = _draw_unit(canvas, unit, scene.map.height, cfg)
        if unit.unit_type == MARINE:
            x0, y0, x1, y1 = box
            boxes.append(
                (
                    max(0.0, x0 / width),
                    max(0.0, y0 / height),
                    min(1.0, x1 / width),
                    min(1.0, y1 / height),
                    MARINE_BOX_CLASS,
                )
            )
    return Rendered(image=np.asarray(canvas), proxy=minimap(scene, cfg), marine_boxes=boxes)


def _draw_order(unit: Unit) -> tuple[int, float]:
    # Resources and structures first, then units from north to south (south overlaps north).
    return (0 if unit_spec(unit.unit_type).structure else 1, -unit.y)


# --- Terrain --------------------------------------------------------------------------------------


def _terrain_image(scene: Scene, width: int, height: int) -> Image.Image:
    levels = terrain_levels(scene.map)
    lut = np.zeros((3, 3), dtype=np.uint8)
    for level, colour in _TERRAIN_COLOURS.items():
        lut[level] = colour
    # Cliffs: sub-cells whose level differs from a neighbour's.
    edge = np.zeros(levels.shape, dtype=bool)
    edge[1:] |= levels[1:] != levels[:-1]
    edge[:, 1:] |= levels[:, 1:] != levels[:, :-1]
    rgb = lut[levels]
    rgb[edge] = _CLIFF
    canvas = Image.fromarray(rgb, "RGB").resize((width, height), Image.NEAREST)
    _draw_rocks(canvas, scene, levels)
    return canvas


def _draw_rocks(canvas: Image.Image, scene: Scene, levels: np.ndarray) -> None:
    """Scattered rocks and craters: texture that a flat colour lacks, still cheap to compress."""
    rng = np.random.default_rng(scene.map.terrain_seed + 1)
    n = int(_ROCKS_PER_100_CELLS * scene.map.width * scene.map.height / 100)
    cx, cy = rng.random(n) * canvas.width, rng.random(n) * canvas.height
    sizes = rng.uniform(0.4, 1.6, n) * canvas.width / scene.map.width
    rows = np.minimum((cy / canvas.height * levels.shape[0]).astype(int), levels.shape[0] - 1)
    cols = np.minimum((cx / canvas.width * levels.shape[1]).astype(int), levels.shape[1] - 1)
    draw = ImageDraw.Draw(canvas)
    for x, y, s, level, crater in zip(
        cx, cy, sizes, levels[rows, cols], rng.random(n) < 0.3, strict=True
    ):
        if level == UNPATHABLE:
            continue
        base = np.array(_TERRAIN_COLOURS[int(level)])
        colour = tuple(int(c) for c in (base * (0.7 if crater else 1.25)).clip(0, 255))
        box = (x - s, y - 0.7 * s, x + s, y + 0.7 * s)
        draw.ellipse(box, fill=colour, outline=_CLIFF if crater else None)


# --- Units ----------------------------------------------------------------------------------------


def sprite_px(unit_type: str, cfg: RenderConfig) -> int:
    """Edge of a unit type's sprite in original pixels: its game diameter at scale."""
    return max(cfg.min_sprite_px, round(2 * unit_radius(unit_type) * cfg.px_per_cell))


def _draw_unit(
    canvas: Image.Image, unit: Unit, map_height: int, cfg: RenderConfig
) -> tuple[int, int, int, int]:
    """Paste the unit's sprite centred on it; returns the sprite's pixel box (x0, y0, x1, y1)."""
    size = sprite_px(unit.unit_type, cfg)
    colour = OWNER_COLOURS.get(unit.owner, (220, 220, 220))
    sprite = _sprite(sprite_kind(unit.unit_type), colour, size)
    x0 = round(unit.x * cfg.px_per_cell - size / 2)
    y0 = round((map_height - unit.y) * cfg.px_per_cell - size / 2)
    canvas.paste(sprite, (x0, y0), sprite)
    return x0, y0, x0 + size, y0 + size


@lru_cache(maxsize=512)
def _sprite(kind: str, colour: tuple[int, int, int], size: int) -> Image.Image:
    """An RGBA sprite of ``size`` px, drawn at 4× and reduced so small sprites are anti-aliased."""
    big = Image.new("RGBA", (4 * size, 4 * size), (0, 0, 0, 0))
    _SPRITES.get(kind, _generic)(ImageDraw.Draw(big), 4 * size, colour)
    return big.reduce(4)


Colour = tuple[int, int, int]
_DARK = (20, 20, 24, 255)
_STEEL = (150, 155, 165, 255)


def _rgba(colour: Colour, scale: float = 1.0) -> tuple[int, int, int, int]:
    return (*(min(255, int(c * scale)) for c in colour), 255)


def _disc(draw: ImageDraw.ImageDraw, s: int, r: float, colour: Colour) -> None:
    c = s / 2
    draw.ellipse(
        (c - r, c - r, c + r, c + r), fill=_rgba(colour), outline=_DARK, width=max(1, s // 16)
    )


def _marine(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    _disc(draw, s, 0.40 * s, colour)
    draw.rectangle((0.34 * s, 0.28 * s, 0.66 * s, 0.40 * s), fill=(140, 230, 255, 255))  # visor
    draw.line((0.5 * s, 0.6 * s, 0.98 * s, 0.6 * s), fill=_DARK, width=max(1, s // 10))  # rifle


def _marauder(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    _disc(draw, s, 0.38 * s, colour)
    for x in (0.06, 0.72):  # shoulder plates
        draw.rectangle((x * s, 0.30 * s, (x + 0.22) * s, 0.55 * s), fill=_STEEL, outline=_DARK)
    draw.rectangle((0.42 * s, 0.62 * s, 0.95 * s, 0.78 * s), fill=_DARK)  # grenade launcher


def _siege_tank(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.rectangle((0.1 * s, 0.15 * s, 0.9 * s, 0.3 * s), fill=_DARK)  # tracks
    draw.rectangle((0.1 * s, 0.7 * s, 0.9 * s, 0.85 * s), fill=_DARK)
    draw.rectangle((0.15 * s, 0.28 * s, 0.85 * s, 0.72 * s), fill=_rgba(colour), outline=_DARK)
    _disc(draw, s, 0.18 * s, _STEEL[:3])  # turret
    draw.line((0.5 * s, 0.5 * s, 1.0 * s, 0.5 * s), fill=_DARK, width=max(1, s // 12))


def _siege_tank_sieged(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    for x, y in ((0.05, 0.05), (0.95, 0.05), (0.05, 0.95), (0.95, 0.95)):  # outriggers
        draw.line((0.5 * s, 0.5 * s, x * s, y * s), fill=_DARK, width=max(1, s // 10))
    _disc(draw, s, 0.3 * s, colour)
    draw.line((0.5 * s, 0.5 * s, 0.5 * s, 0.0), fill=_DARK, width=max(1, s // 8))  # long gun


def _zergling(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.ellipse((0.12 * s, 0.28 * s, 0.88 * s, 0.72 * s), fill=_rgba(colour), outline=_DARK)
    for y in (0.2, 0.8):  # claws
        draw.polygon([(0.55 * s, 0.5 * s), (0.95 * s, y * s), (0.75 * s, 0.5 * s)], fill=_DARK)
    draw.polygon([(0.2 * s, 0.3 * s), (0.35 * s, 0.02 * s), (0.45 * s, 0.3 * s)], fill=_DARK)


def _baneling(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    _disc(draw, s, 0.42 * s, colour)
    c = s / 2
    draw.ellipse((c - 0.26 * s, c - 0.26 * s, c + 0.26 * s, c + 0.26 * s), fill=(120, 220, 60, 255))


def _hydralisk(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.polygon(
        [
            (0.5 * s, 0.05 * s),
            (0.9 * s, 0.35 * s),
            (0.6 * s, 0.95 * s),
            (0.4 * s, 0.95 * s),
            (0.1 * s, 0.35 * s),
        ],
        fill=_rgba(colour),
        outline=_DARK,
    )
    for x in (0.3, 0.5, 0.7):  # spines
        draw.line((x * s, 0.3 * s, x * s, 0.6 * s), fill=_DARK, width=max(1, s // 14))


def _worker(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.rectangle((0.2 * s, 0.2 * s, 0.8 * s, 0.8 * s), fill=_rgba(colour), outline=_DARK)
    draw.rectangle((0.6 * s, 0.55 * s, 0.95 * s, 0.75 * s), fill=_STEEL)


def _structure(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.rectangle(
        (0.04 * s, 0.04 * s, 0.96 * s, 0.96 * s),
        fill=_rgba(colour, 0.75),
        outline=_DARK,
        width=max(1, s // 20),
    )
    draw.rectangle((0.3 * s, 0.3 * s, 0.7 * s, 0.7 * s), fill=_STEEL, outline=_DARK)


def _hive(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.ellipse((0.02 * s, 0.1 * s, 0.98 * s, 0.9 * s), fill=_rgba(colour, 0.75), outline=_DARK)
    draw.ellipse((0.3 * s, 0.3 * s, 0.7 * s, 0.7 * s), fill=(110, 60, 90, 255))


def _mineral(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    for x in (0.15, 0.45):
        draw.polygon(
            [(x * s, 0.8 * s), ((x + 0.15) * s, 0.15 * s), ((x + 0.35) * s, 0.8 * s)],
            fill=(90, 180, 240, 255),
            outline=(30, 70, 120, 255),
        )


def _geyser(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.ellipse((0.05 * s, 0.05 * s, 0.95 * s, 0.95 * s), fill=(60, 90, 60, 255), outline=_DARK)
    draw.ellipse((0.35 * s, 0.35 * s, 0.65 * s, 0.65 * s), fill=(120, 220, 120, 255))


def _rock(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    draw.ellipse((0.05 * s, 0.15 * s, 0.95 * s, 0.85 * s), fill=(110, 100, 90, 255), outline=_DARK)


def _generic(draw: ImageDraw.ImageDraw, s: int, colour: Colour) -> None:
    _disc(draw, s, 0.4 * s, colour)
    _disc(draw, s, 0.12 * s, (235, 235, 235))


_SPRITES = {
    "marine": _marine,
    "marauder": _marauder,
    "siege_tank": _siege_tank,
    "siege_tank_sieged": _siege_tank_sieged,
    "zergling": _zergling,
    "baneling": _baneling,
    "hydralisk": _hydralisk,
    "worker": _worker,
    "structure": _structure,
    "zerg_structure": _hive,
    "mineral": _mineral,
    "geyser": _geyser,
    "rock": _rock,
    "generic": _generic,
}


# --- Mini-map -------------------------------------------------------------------------------------


def minimap_shape(scene: Scene, cfg: RenderConfig) -> tuple[int, int]:
    """(height, width) of the mini-map: the longer side is ``minimap_size``."""
    scale = cfg.minimap_size / max(scene.map.width, scene.map.height)
    return max(1, round(scene.map.height * scale)), max(1, round(scene.map.width * scale))


def minimap(scene: Scene, cfg: RenderConfig) -> np.ndarray:
    """The mini-map: dark terrain, one owner-coloured dot (units) or square (structures) each."""
    height, width = minimap_shape(scene, cfg)
    levels = terrain_levels(scene.map)
    lut = np.zeros((3, 3), dtype=np.uint8)
    for level, colour in _MINIMAP_TERRAIN.items():
        lut[level] = colour
    canvas = Image.fromarray(lut[levels], "RGB").resize((width, height), Image.BOX)
    draw = ImageDraw.Draw(canvas)
    px_per_cell = width / scene.map.width
    for unit in sorted(scene.snapshot.units, key=_draw_order):
        # Every mobile unit is the same 2 px dot, whatever its type (the game's mini-map does this).
        spec = unit_spec(unit.unit_type)
        half = max(1.0, spec.radius * px_per_cell) if spec.structure else 1.0
        x = unit.x * px_per_cell
        y = (scene.map.height - unit.y) * px_per_cell
        colour = OWNER_COLOURS.get(unit.owner, (220, 220, 220))
        draw.rectangle((x - half, y - half, x + half - 1, y + half - 1), fill=colour)
    return np.asarray(canvas)
