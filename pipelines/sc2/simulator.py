"""A Terran-against-Zerg battle simulator: the embedded default StarCraft II source (``sc2_sim``).

Player 1 (Terran: marines, marauders, siege tanks) and player 2 (Zerg: zerglings, banelings,
hydralisks) start at opposite corners of a procedural map (``pipelines.sc2.terrain``), each with a
base (town hall, production, mineral fields, geysers, mining workers). Their armies attack-move
towards the enemy base, and when they meet they fight with the game's own figures (hit points,
speed, range, damage, cooldown; armour and upgrades ignored):

- every army unit targets the nearest enemy in sight, walks into range, attacks on cooldown;
- banelings explode on contact (splash damage, and they die); siege tanks siege up when an enemy
  comes within 13 cells (long range, splash, no walking) and unsiege when none is left;
- units push apart when they overlap and walk around unpathable ground.

The state is vectorised over units (numpy), so a 100-unit, 90-second battle takes well under a
second. Snapshots every ``snapshot_every_s`` game seconds become a ``Track``; the dataset draws one
scene per sample (``generate_sc2_sim``). The label is the number of marines alive, so the initial
marine count is drawn uniformly in 0..``max_marines`` (≤ 22, the paper's 23 classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sc2.render import RenderConfig, render
from pipelines.sc2.terrain import pathable, start_locations, terrain_levels
from pipelines.sc2.tracks import LOOPS_PER_SECOND, MapInfo, Player, Snapshot, Track, Unit
from pipelines.sc2.units import unit_radius
from pipelines.synthetic import Sample

MAX_MARINES = 22  # the paper's label range is 0..22 marines (23 classes)
SIGHT = 10.0  # cells: army units see and chase enemies this close
TERRAN, ZERG = 1, 2


@dataclass(frozen=True)
class Stats:
    """Combat figures of one unit type (the game's, rounded; 0 speed = does not walk)."""

    hp: float
    speed: float  # cells per game second
    range: float  # cells, edge to edge
    damage: float
    cooldown: float  # game seconds between attacks
    splash: float = 0.0  # radius of splash damage around the target, cells


STATS = {
    "Marine": Stats(45, 3.15, 5.0, 6, 0.61),
    "Marauder": Stats(125, 3.15, 6.0, 15, 1.07),
    "SiegeTank": Stats(175, 3.15, 7.0, 18, 0.74),
    "SiegeTankSieged": Stats(175, 0.0, 13.0, 40, 2.14, splash=1.25),
    "Zergling": Stats(35, 4.13, 0.1, 5, 0.5),
    "Baneling": Stats(30, 3.5, 0.25, 30, 0.0, splash=2.2),
    "Hydralisk": Stats(90, 3.15, 5.0, 12, 0.59),
    # Base units: targets, not fighters.
    "SCV": Stats(45, 0, 0, 0, 0),
    "Drone": Stats(40, 0, 0, 0, 0),
    "CommandCenter": Stats(1500, 0, 0, 0, 0),
    "Hatchery": Stats(1500, 0, 0, 0, 0),
    "Barracks": Stats(1000, 0, 0, 0, 0),
    "SupplyDepot": Stats(400, 0, 0, 0, 0),
    "SpawningPool": Stats(1000, 0, 0, 0, 0),
}
_TYPES = list(STATS)
_ARMY = {TERRAN: ("Marine", "Marauder", "SiegeTank"), ZERG: ("Zergling", "Baneling", "Hydralisk")}
_UNSIEGE_AFTER_S = 3.0


@dataclass(frozen=True, kw_only=True)
class Sc2SimConfig:
    """A simulated battle and how its scenes are rendered."""

    map_size: int = 128  # map side in cells (ladder maps are 130–180)
    max_marines: int = MAX_MARINES  # initial marines: uniform in 0..max_marines
    max_marauders: int = 8  # initial marauders: uniform in 0..max
    max_siege_tanks: int = 3  # initial siege tanks: uniform in 0..max
    max_zerglings: int = 32  # initial zerglings: uniform in 0..max
    max_banelings: int = 8  # initial banelings: uniform in 0..max
    max_hydralisks: int = 10  # initial hydralisks: uniform in 0..max
    workers: int = 12  # mining workers per base: mini-map dots that are not army
    duration_s: float = 90.0  # game seconds simulated
    step_s: float = 0.25  # simulation step, game seconds
    snapshot_every_s: float = 5.0  # game seconds between snapshots
    px_per_cell: float = 16.0  # original render scale (pipelines.sc2.render.RenderConfig)
    minimap_size: int = 128  # proxy side in pixels

    def __post_init__(self) -> None:
        if not 32 <= self.map_size <= 256:
            raise ValueError(f"Sc2SimConfig.map_size={self.map_size} must lie in 32..256 cells")
        if not 0 <= self.max_marines <= MAX_MARINES:
            raise ValueError(
                f"Sc2SimConfig.max_marines={self.max_marines} must lie in 0..{MAX_MARINES}: "
                f"labels are 0..{MAX_MARINES} marines"
            )
        counts = (self.max_marauders, self.max_siege_tanks, self.max_zerglings)
        if min(*counts, self.max_banelings, self.max_hydralisks, self.workers) < 0:
            raise ValueError("Sc2SimConfig unit counts must be >= 0")
        if not 0 < self.step_s <= self.snapshot_every_s <= self.duration_s:
            raise ValueError(
                f"Sc2SimConfig needs 0 < step_s ({self.step_s}) <= snapshot_every_s "
                f"({self.snapshot_every_s}) <= duration_s ({self.duration_s})"
            )
        self.render_config()  # validates px_per_cell and minimap_size

    def render_config(self) -> RenderConfig:
        """The renderer's part of this config."""
        return RenderConfig(px_per_cell=self.px_per_cell, minimap_size=self.minimap_size)

    def map_info(self, rng: np.random.Generator) -> MapInfo:
        """A fresh procedural map for one battle."""
        seed = int(rng.integers(2**31))
        return MapInfo(f"sim-{seed:010d}", self.map_size, self.map_size, seed)


# --- Initial state --------------------------------------------------------------------------------


def _base(
    owner: int, start: np.ndarray, corner: np.ndarray, cfg: Sc2SimConfig, rng: np.random.Generator
) -> list[tuple[str, int, np.ndarray]]:
    """Town hall at the start, minerals in an arc towards the corner, workers between, buildings."""
    town, worker = ("CommandCenter", "SCV") if owner == TERRAN else ("Hatchery", "Drone")
    units = [(town, owner, start)]
    toward = (corner - start) / np.linalg.norm(corner - start)
    angle = np.arctan2(toward[1], toward[0])
    for a in np.linspace(angle - 1.1, angle + 1.1, 8):
        units.append(("MineralField", 0, start + 7.0 * np.array([np.cos(a), np.sin(a)])))
    for a in (angle - 1.7, angle + 1.7):
        units.append(("VespeneGeyser", 0, start + 7.5 * np.array([np.cos(a), np.sin(a)])))
    for _ in range(cfg.workers):
        a = angle + rng.uniform(-1.0, 1.0)
        units.append(
            (worker, owner, start + rng.uniform(3.5, 5.0) * np.array([np.cos(a), np.sin(a)]))
        )
    buildings = ["Barracks", "SupplyDepot", "SupplyDepot"] if owner == TERRAN else ["SpawningPool"]
    for i, name in enumerate(buildings):
        a = angle + np.pi + (i - len(buildings) / 2) * 0.7
        units.append((name, owner, start + 7.0 * np.array([np.cos(a), np.sin(a)])))
    return units


def _army(
    owner: int,
    start: np.ndarray,
    enemy: np.ndarray,
    counts: dict[str, int],
    rng: np.random.Generator,
) -> list[tuple[str, int, np.ndarray]]:
    """The army gathered in front of its base, towards the enemy."""
    rally = start + 0.2 * (enemy - start)
    units = []
    for name in _ARMY[owner]:
        for _ in range(counts[name]):
            units.append((name, owner, rally + rng.normal(0.0, 2.5, 2)))
    return units


def initial_units(
    cfg: Sc2SimConfig, rng: np.random.Generator
) -> tuple[list[tuple[str, int, np.ndarray]], dict[str, int]]:
    """Both bases and both armies; returns the units and the army counts drawn."""
    limits = {
        "Marine": cfg.max_marines,
        "Marauder": cfg.max_marauders,
        "SiegeTank": cfg.max_siege_tanks,
        "Zergling": cfg.max_zerglings,
        "Baneling": cfg.max_banelings,
        "Hydralisk": cfg.max_hydralisks,
    }
    counts = {name: int(rng.integers(0, n + 1)) for name, n in limits.items()}
    (ax, ay), (bx, by) = start_locations(cfg.map_size, cfg.map_size)
    a, b = np.array([ax, ay]), np.array([bx, by])
    corner_a, corner_b = np.zeros(2), np.full(2, float(cfg.map_size))
    units = _base(TERRAN, a, corner_a, cfg, rng) + _base(ZERG, b, corner_b, cfg, rng)
    units += _army(TERRAN, a, b, counts, rng) + _army(ZERG, b, a, counts, rng)
    return units, counts


# --- Simulation -----------------------------------------------------------------------------------


class _State:
    """Struct of arrays over all units; dead units stay in place with alive=False."""

    def __init__(self, units: list[tuple[str, int, np.ndarray]], map_size: int) -> None:
        self.type = np.array([_TYPES.index(t) if t in STATS else -1 for t, _, _ in units])
        self.names = [t for t, _, _ in units]
        self.owner = np.array([o for _, o, _ in units])
        self.pos = np.clip(np.array([p for _, _, p in units], dtype=np.float64), 1, map_size - 1)
        self.radius = np.array([unit_radius(t) for t in self.names])
        self.hp = np.array([STATS[t].hp if t in STATS else 0.0 for t in self.names])
        self.cooldown = np.zeros(len(units))
        self.idle = np.zeros(len(units))  # seconds a sieged tank has had no target
        self.alive = np.ones(len(units), dtype=bool)
        self.ids = np.arange(1, len(units) + 1) * 4 + 1  # tag-like ids, stable over the game

    def stat(self, field: str) -> np.ndarray:
        return np.array([getattr(STATS[n], field) if n in STATS else 0.0 for n in self.names])

    def set_type(self, index: int, name: str) -> None:
        self.names[index] = name
        self.type[index] = _TYPES.index(name)

    def snapshot(self, game_loop: int) -> Snapshot:
        # Positions rounded as the track JSON stores them: a scene equals its JSON round trip.
        units = tuple(
            Unit(
                int(self.ids[i]),
                self.names[i],
                int(self.owner[i]),
                round(float(self.pos[i, 0]), 3),
                round(float(self.pos[i, 1]), 3),
            )
            for i in np.flatnonzero(self.alive)
        )
        return Snapshot(game_loop, units)


def _step(
    state: _State, levels: np.ndarray, targets: dict[int, np.ndarray], map_size: int, dt: float
) -> None:
    """One simulation step: target, attack, siege, walk, separate."""
    fighters = np.flatnonzero(state.alive & (state.stat("damage") > 0))
    targetable = state.alive & (state.owner > 0) & (state.hp > 0)
    diff = state.pos[None, :, :] - state.pos[fighters, None, :]
    dist = np.linalg.norm(diff, axis=-1) - state.radius[fighters, None] - state.radius[None, :]
    enemy = targetable[None, :] & (state.owner[None, :] != state.owner[fighters, None])
    dist = np.where(enemy, dist, np.inf)
    nearest = np.argmin(dist, axis=1) if dist.size else np.array([], dtype=int)
    velocity = np.zeros_like(state.pos)
    state.cooldown = np.maximum(state.cooldown - dt, 0.0)
    for row, i in enumerate(fighters):
        if not state.alive[i]:
            continue  # a baneling that already exploded this step
        j, d = int(nearest[row]), float(dist[row, nearest[row]]) if dist.shape[1] else np.inf
        _siege_logic(state, i, d, dt)
        stats = STATS[state.names[i]]
        if d <= stats.range:
            if state.cooldown[i] == 0.0:
                _attack(state, i, j, stats)
        elif stats.speed > 0:
            goal = state.pos[j] if d < SIGHT else targets[int(state.owner[i])]
            heading = goal - state.pos[i]
            norm = np.linalg.norm(heading)
            if norm > 1e-6:
                velocity[i] = heading / norm * stats.speed
    _walk(state, velocity, levels, map_size, dt)
    _separate(state, levels, map_size)


def _siege_logic(state: _State, i: int, d: float, dt: float) -> None:
    name = state.names[i]
    if name == "SiegeTank" and d < STATS["SiegeTankSieged"].range:
        state.set_type(i, "SiegeTankSieged")
        state.cooldown[i] = 2.7  # siege-up time: no shot while deploying
    elif name == "SiegeTankSieged":
        state.idle[i] = 0.0 if d < STATS["SiegeTankSieged"].range else state.idle[i] + dt
        if state.idle[i] > _UNSIEGE_AFTER_S:
            state.set_type(i, "SiegeTank")
            state.idle[i] = 0.0


def _attack(state: _State, i: int, j: int, stats: Stats) -> None:
    if stats.splash > 0:
        hit = state.alive & (state.owner > 0) & (state.owner != state.owner[i])
        hit &= np.linalg.norm(state.pos - state.pos[j], axis=1) <= stats.splash
        state.hp[hit] -= stats.damage
    else:
        state.hp[j] -= stats.damage
    state.cooldown[i] = stats.cooldown
    if state.names[i] == "Baneling":
        state.hp[i] = 0.0  # a baneling dies in its own explosion
    state.alive &= ~((state.hp <= 0) & (state.owner > 0))


def _walk(
    state: _State, velocity: np.ndarray, levels: np.ndarray, map_size: int, dt: float
) -> None:
    """Move by velocity·dt; blocked units try turning ±45° then ±90° before standing still."""
    moving = np.flatnonzero(np.any(velocity != 0, axis=1) & state.alive)
    step = velocity[moving] * dt
    placed = np.zeros(len(moving), dtype=bool)
    for angle in (0.0, np.pi / 4, -np.pi / 4, np.pi / 2, -np.pi / 2):
        c, s = np.cos(angle), np.sin(angle)
        turned = np.stack([c * step[:, 0] - s * step[:, 1], s * step[:, 0] + c * step[:, 1]], 1)
        new = state.pos[moving] + turned
        ok = ~placed & pathable(levels, new[:, 0], new[:, 1], map_size)
        state.pos[moving[ok]] = new[ok]
        placed |= ok


def _separate(state: _State, levels: np.ndarray, map_size: int) -> None:
    """Push overlapping walking units apart (half the overlap each), like the game's collision."""
    mobile = np.flatnonzero(state.alive & (state.stat("speed") > 0))
    if mobile.size < 2:
        return
    pos = state.pos[mobile]
    diff = pos[:, None, :] - pos[None, :, :]
    dist = np.linalg.norm(diff, axis=-1) + np.eye(len(mobile))
    overlap = np.maximum(state.radius[mobile, None] + state.radius[None, mobile] - dist, 0.0)
    np.fill_diagonal(overlap, 0.0)
    push = (diff / dist[..., None] * overlap[..., None] / 2).sum(axis=1)
    new = np.clip(pos + push, 0.5, map_size - 0.5)
    ok = pathable(levels, new[:, 0], new[:, 1], map_size)
    state.pos[mobile[ok]] = new[ok]


def simulate(cfg: Sc2SimConfig, rng: np.random.Generator, *, until_s: float | None = None) -> Track:
    """Simulate one battle; a snapshot every snapshot_every_s up to ``until_s`` (or the end)."""
    map_info = cfg.map_info(rng)
    levels = terrain_levels(map_info)
    units, _ = initial_units(cfg, rng)
    state = _State(units, cfg.map_size)
    (ax, ay), (bx, by) = start_locations(cfg.map_size, cfg.map_size)
    targets = {TERRAN: np.array([bx, by]), ZERG: np.array([ax, ay])}
    end = cfg.duration_s if until_s is None else min(until_s, cfg.duration_s)
    steps_per_snapshot = max(1, round(cfg.snapshot_every_s / cfg.step_s))
    snapshots = []
    step = 0
    while True:
        t = step * cfg.step_s
        if step % steps_per_snapshot == 0:
            snapshots.append(state.snapshot(round(t * LOOPS_PER_SECOND)))
        if t + cfg.step_s > end + 1e-9:
            break
        _step(state, levels, targets, cfg.map_size, cfg.step_s)
        step += 1
    players = (Player(TERRAN, "Terran"), Player(ZERG, "Zerg"))
    return Track(map_info, players, tuple(snapshots))


def sim_class_names() -> list[str]:
    """Labels 0..22 marines."""
    return [str(n) for n in range(MAX_MARINES + 1)]


def generate_sc2_sim(cfg: Sc2SimConfig, rng: np.random.Generator) -> Sample:
    """One dataset sample: a battle simulated up to a random snapshot, rendered."""
    n_snapshots = int(cfg.duration_s // cfg.snapshot_every_s) + 1
    index = int(rng.integers(n_snapshots))
    track = simulate(cfg, rng, until_s=index * cfg.snapshot_every_s)
    scene = track.scenes()[-1]
    assert scene.marines <= cfg.max_marines  # marines are never created, only killed
    rendered = render(scene, cfg.render_config())
    return Sample(
        image=rendered.image,
        proxy=rendered.proxy,
        label=scene.marines,
        label_name=str(scene.marines),
        boxes=rendered.marine_boxes,
        meta={
            "generator": "sc2_sim",
            "map": scene.map.name,
            "time_s": round(scene.snapshot.time_s, 2),
            "unit_counts": _type_counts(scene.snapshot),
            "scene": Track(scene.map, scene.players, (scene.snapshot,)).to_dict(),
        },
    )


def _type_counts(snapshot: Snapshot) -> dict[str, int]:
    counts: dict[str, int] = {}
    for unit in snapshot.units:
        key = f"{unit.owner}:{unit.unit_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
