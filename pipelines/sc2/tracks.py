"""The StarCraft II scene track format: what both the simulator and the replay adapter produce.

A **track** is one game: its map, its players and a sequence of **snapshots**, each holding every
unit alive at one game time with its type, owner and position. A **scene** is one snapshot together
with its map and players: the unit the renderer draws and the dataset labels.

Conventions (those of the game's own data, so replays need no conversion):
- positions are in map cells, floats, origin at the map's bottom-left corner, y pointing north;
  the renderer flips y into image rows;
- time is the game loop (22.4 loops per real second at the ladder's "Faster" speed, the in-game
  clock since Legacy of the Void); ``time_s`` is derived from it;
- owner 0 is neutral (mineral fields, geysers, rocks); players are 1, 2, ...;
- unit types are the game's names (``Marine``, ``SiegeTankSieged``, ``Zergling``, ...).

The real map's terrain cannot be read without the game's map files, so a map carries a
``terrain_seed`` from which the renderer draws a procedural terrain (``pipelines.sc2.render``).

JSON (``Track.to_json``)::

    {"format": "saccade-sc2-track", "version": 1,
     "map": {"name": ..., "width": 176, "height": 184, "terrain_seed": ...},
     "players": [{"pid": 1, "race": "Terran"}, ...],
     "snapshots": [{"game_loop": 1344, "units": [[unit_id, type, owner, x, y], ...]}, ...]}

Units are lists, not objects: a 200-unit snapshot stays a few kilobytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TRACK_FORMAT = "saccade-sc2-track"
TRACK_VERSION = 1
LOOPS_PER_SECOND = 22.4  # game loops per real second at "Faster" speed
MARINE = "Marine"


@dataclass(frozen=True)
class Unit:
    """One unit at one time."""

    unit_id: int  # the game's unit tag (unique within a game)
    unit_type: str  # the game's unit type name, e.g. "Marine"
    owner: int  # player id; 0 = neutral
    x: float  # map cells from the left edge
    y: float  # map cells from the bottom edge

    def to_list(self) -> list[Any]:
        """The compact JSON form ``[unit_id, type, owner, x, y]``."""
        return [self.unit_id, self.unit_type, self.owner, round(self.x, 3), round(self.y, 3)]

    @classmethod
    def from_list(cls, item: list[Any]) -> Unit:
        unit_id, unit_type, owner, x, y = item
        return cls(int(unit_id), str(unit_type), int(owner), float(x), float(y))


@dataclass(frozen=True)
class MapInfo:
    """The map a game is played on."""

    name: str
    width: int  # cells
    height: int  # cells
    terrain_seed: int  # seeds the procedural terrain the renderer draws

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"map {self.name!r} is {self.width}×{self.height} cells; need >= 8×8")


@dataclass(frozen=True)
class Player:
    """One player of a game."""

    pid: int  # player id, as in Unit.owner
    race: str  # "Terran", "Zerg", "Protoss"


@dataclass(frozen=True)
class Snapshot:
    """Every unit alive at one game time."""

    game_loop: int
    units: tuple[Unit, ...]

    @property
    def time_s(self) -> float:
        """Real seconds at "Faster" speed (the in-game clock)."""
        return self.game_loop / LOOPS_PER_SECOND

    def count(self, unit_type: str, owner: int | None = None) -> int:
        """Units of one type (of one owner, when given)."""
        return sum(
            u.unit_type == unit_type and (owner is None or u.owner == owner) for u in self.units
        )


@dataclass(frozen=True)
class Scene:
    """One snapshot with its map and players: what the renderer draws."""

    map: MapInfo
    players: tuple[Player, ...]
    snapshot: Snapshot

    @property
    def marines(self) -> int:
        """The label: marines in the scene, of any owner."""
        return self.snapshot.count(MARINE)

    def to_json(self) -> str:
        return Track(self.map, self.players, (self.snapshot,)).to_json()

    @classmethod
    def from_json(cls, text: str) -> Scene:
        track = Track.from_json(text)
        if len(track.snapshots) != 1:
            raise ValueError(f"a scene holds one snapshot, got {len(track.snapshots)}")
        return track.scenes()[0]


@dataclass(frozen=True)
class Track:
    """One game: map, players and snapshots in time order."""

    map: MapInfo
    players: tuple[Player, ...]
    snapshots: tuple[Snapshot, ...]

    def scenes(self) -> list[Scene]:
        """One scene per snapshot."""
        return [Scene(self.map, self.players, s) for s in self.snapshots]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TRACK_FORMAT,
            "version": TRACK_VERSION,
            "map": {
                "name": self.map.name,
                "width": self.map.width,
                "height": self.map.height,
                "terrain_seed": self.map.terrain_seed,
            },
            "players": [{"pid": p.pid, "race": p.race} for p in self.players],
            "snapshots": [
                {"game_loop": s.game_loop, "units": [u.to_list() for u in s.units]}
                for s in self.snapshots
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Track:
        if data.get("format") != TRACK_FORMAT or data.get("version") != TRACK_VERSION:
            raise ValueError(
                f"not a {TRACK_FORMAT} v{TRACK_VERSION} document "
                f"(format={data.get('format')!r}, version={data.get('version')!r})"
            )
        m = data["map"]
        return cls(
            map=MapInfo(m["name"], int(m["width"]), int(m["height"]), int(m["terrain_seed"])),
            players=tuple(Player(int(p["pid"]), str(p["race"])) for p in data["players"]),
            snapshots=tuple(
                Snapshot(int(s["game_loop"]), tuple(Unit.from_list(u) for u in s["units"]))
                for s in data["snapshots"]
            ),
        )

    @classmethod
    def from_json(cls, text: str) -> Track:
        return cls.from_dict(json.loads(text))
