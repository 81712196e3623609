"""Procedural terrain for a StarCraft II map: levels per sub-cell, a pure function of the map.

The real terrain lives in the game's map files, which cannot be read here (they are downloaded by
the game client), so every map gets a plausible one drawn from its ``terrain_seed``: smooth value
noise thresholded into three levels — unpathable (space, chasms), low ground and high ground — with
cliffs where levels meet. The two start corners (bottom-left and top-right, the 1v1 layout) and the
diagonal between them are always low ground, so the simulator's armies can meet. The simulator
(walking) and the renderer (drawing) read the same grid.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from pipelines.sc2.tracks import MapInfo

UNPATHABLE, LOW, HIGH = 0, 1, 2
SUBCELLS = 4  # terrain samples per cell side: cliffs are smoother than the cell grid
_NOISE_CELLS = 12  # cells per value-noise knot: the size of terrain features
_UNPATHABLE_QUANTILE = 0.18  # share of the map that is unpathable (before clearing)
_HIGH_QUANTILE = 0.62  # terrain above this quantile is high ground
_CORRIDOR_HALF_WIDTH = 0.06  # of the map diagonal's length, kept clear between the start corners
_START_INSET = 0.18  # start corners sit this far in from the map's edges, per axis


def start_locations(width: int, height: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Map-cell (x, y) of the two start locations: bottom-left and top-right, inset."""
    return (
        (_START_INSET * width, _START_INSET * height),
        ((1 - _START_INSET) * width, (1 - _START_INSET) * height),
    )


@lru_cache(maxsize=16)
def terrain_levels(map_info: MapInfo) -> np.ndarray:
    """(height·SUBCELLS, width·SUBCELLS) uint8 levels; row 0 is the map's north edge.

    Cached: the scenes of one game share their map. Treat the result as read-only.
    """
    rng = np.random.default_rng(map_info.terrain_seed)
    w, h = map_info.width * SUBCELLS, map_info.height * SUBCELLS
    knots = rng.random((h // (_NOISE_CELLS * SUBCELLS) + 2, w // (_NOISE_CELLS * SUBCELLS) + 2))
    field = np.asarray(Image.fromarray(knots.astype(np.float32), "F").resize((w, h), Image.BICUBIC))
    levels = np.full((h, w), LOW, dtype=np.uint8)
    levels[field > np.quantile(field, _HIGH_QUANTILE)] = HIGH
    levels[field < np.quantile(field, _UNPATHABLE_QUANTILE)] = UNPATHABLE
    levels[_clearing(map_info.width, map_info.height)] = LOW
    levels.setflags(write=False)
    return levels


def _clearing(width: int, height: int) -> np.ndarray:
    """Sub-cells kept low ground: discs around both starts and the corridor between them."""
    rows, cols = np.mgrid[0 : height * SUBCELLS, 0 : width * SUBCELLS]
    x = (cols + 0.5) / SUBCELLS
    y = height - (rows + 0.5) / SUBCELLS  # rows grow south, y grows north
    (ax, ay), (bx, by) = start_locations(width, height)
    length = float(np.hypot(bx - ax, by - ay))
    # Distance to the segment between the starts, in cells.
    t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length**2, 0.0, 1.0)
    dist = np.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay)))
    base_radius = 0.12 * min(width, height)
    near_start = (np.hypot(x - ax, y - ay) < base_radius) | (np.hypot(x - bx, y - by) < base_radius)
    return near_start | (dist < _CORRIDOR_HALF_WIDTH * length)


def pathable(levels: np.ndarray, x: np.ndarray, y: np.ndarray, map_height: int) -> np.ndarray:
    """Whether map-cell points (x, y) stand on pathable ground (outside the map is not)."""
    rows = np.floor((map_height - y) * SUBCELLS).astype(np.int64)
    cols = np.floor(x * SUBCELLS).astype(np.int64)
    inside = (rows >= 0) & (rows < levels.shape[0]) & (cols >= 0) & (cols < levels.shape[1])
    out = np.zeros(np.shape(x), dtype=bool)
    out[inside] = levels[rows[inside], cols[inside]] != UNPATHABLE
    return out
