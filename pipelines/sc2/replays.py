"""Real ``.SC2Replay`` files → scene tracks → rendered rows (source ``sc2_replays``).

Replays are parsed without the game by sc2reader (``load_level=4``: the tracker events, replays
from patch 2.0.8 on). The adapter replays the unit events in game-loop order:

- ``UnitBornEvent`` / ``UnitInitEvent`` add a unit (type, owner, position; init = a structure
  placed), ``UnitDiedEvent`` removes it, ``UnitTypeChangeEvent`` renames it (``SiegeTank`` ↔
  ``SiegeTankSieged``), ``UnitOwnerChangeEvent`` gives it to another player;
- ``UnitPositionsEvent`` (every ~15 s, for units that fought) moves units; between updates a unit
  stays at its last known position — the track is only as precise as the replay;
- beacons are dropped (markers, not units); owners that are not players become neutral (0).

A snapshot is taken every ``sample_every_s`` real seconds from ``start_s`` to the end of the game.
Map size comes from the replay's init data (``game_description.map_size_x/y``); when missing, from
the bounding box of every observed position (documented fallback: the map files, which hold the
size and the terrain, need the game's servers). Marines inside bunkers or medivacs are still
counted: tracker events do not say who is loaded.

Label: marines in the scene, 0–22. A scene with more marines is **rejected** ("23 marines exceeds
22"), not capped: a capped label would teach the model a wrong count. Split: by the replay's path
hash, so all scenes of one game land in the same split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.inputs import check_fractions, hash_split, list_files, read_bytes
from pipelines.sc2.render import RenderConfig, render
from pipelines.sc2.tracks import LOOPS_PER_SECOND, MapInfo, Player, Scene, Snapshot, Track, Unit
from pipelines.sc2.units import ignored
from pipelines.schema import SPLITS
from pipelines.staging import StagingPlan, staging_table
from pipelines.tiling import image_row, reject_row

if TYPE_CHECKING:  # the build composes this module's stages; nothing of it runs here
    from pipelines.build import BuildConfig

SOURCE = "sc2_replays"
MAX_MARINES = 22
MAX_SCENES_PER_REPLAY = 100_000  # scene indices are replay_index · this + scene number
_MAP_MARGIN = 4  # cells around observed positions when the replay holds no map size

# One record per scene to render, or one reject per replay that yields none.
SCENE_SCHEMA = pa.schema(
    [
        ("_index", pa.int64()),
        ("split", pa.string()),
        ("ref", pa.string()),
        ("image_id", pa.string()),
        ("scene", pa.string()),  # Scene JSON (pipelines.sc2.tracks), null for a reject
        ("reason", pa.string()),  # why the replay gave no scene, null otherwise
    ]
)


@dataclass(frozen=True, kw_only=True)
class Sc2ReplayConfig:
    """Replays to ingest and how their scenes are sampled and rendered."""

    input: str  # folder or bucket prefix holding .SC2Replay files (every file is an input)
    sample_every_s: float = 30.0  # real seconds between snapshots
    start_s: float = 30.0  # first snapshot time (the opening holds no army)
    px_per_cell: float = 16.0  # original render scale (a 176-cell map → 2816 px)
    minimap_size: int = 128  # proxy side in pixels
    val_fraction: float = 0.1  # share of replays (by path hash) in val
    test_fraction: float = 0.1  # share of replays (by path hash) in test

    def __post_init__(self) -> None:
        if self.sample_every_s <= 0 or self.start_s < 0:
            raise ValueError(
                f"Sc2ReplayConfig needs sample_every_s > 0 and start_s >= 0, got "
                f"{self.sample_every_s} and {self.start_s}"
            )
        check_fractions("Sc2ReplayConfig", self.val_fraction, self.test_fraction)
        self.render_config()

    def render_config(self) -> RenderConfig:
        """The renderer's part of this config."""
        return RenderConfig(px_per_cell=self.px_per_cell, minimap_size=self.minimap_size)


def replay_class_names() -> list[str]:
    """Labels 0..22 marines."""
    return [str(n) for n in range(MAX_MARINES + 1)]


# --- Parsing --------------------------------------------------------------------------------------


def load_replay(data: bytes) -> Any:
    """sc2reader's replay object with tracker events (no map download)."""
    import sc2reader  # ~0.2 s to import; only replay parsing needs it

    return sc2reader.load_replay(io.BytesIO(data), load_level=4, load_map=False)


def replay_track(replay: Any, *, sample_every_s: float, start_s: float) -> Track:
    """Snapshots of a parsed replay every ``sample_every_s`` seconds from ``start_s``."""
    players = tuple(Player(int(p.pid), str(p.play_race)) for p in replay.players)
    pids = {p.pid for p in players}
    end_loop = int(replay.frames)
    every = max(1, round(sample_every_s * LOOPS_PER_SECOND))
    times = list(range(round(start_s * LOOPS_PER_SECOND), end_loop + 1, every))
    live: dict[int, list[Any]] = {}  # unit_id -> [type, owner, x, y]
    by_index: dict[int, int] = {}  # unit index (what position events use) -> unit_id
    snapshots, seen = [], []
    next_time = 0
    for event in replay.tracker_events:
        while next_time < len(times) and event.frame > times[next_time]:
            snapshots.append(_snapshot(times[next_time], live))
            next_time += 1
        _apply(event, live, by_index, pids, seen)
    snapshots += [_snapshot(t, live) for t in times[next_time:]]
    return Track(_map_info(replay, seen), players, tuple(snapshots))


def _apply(event: Any, live: dict, by_index: dict, pids: set[int], seen: list) -> None:
    """Update the live units with one tracker event."""
    name = type(event).__name__
    if name in ("UnitBornEvent", "UnitInitEvent"):
        if ignored(event.unit_type_name):
            return
        owner = event.control_pid if event.control_pid in pids else 0
        live[event.unit_id] = [event.unit_type_name, owner, float(event.x), float(event.y)]
        by_index[event.unit_id_index] = event.unit_id
        seen.append((event.x, event.y))
    elif name == "UnitDiedEvent":
        live.pop(event.unit_id, None)
    elif name == "UnitTypeChangeEvent" and event.unit_id in live:
        live[event.unit_id][0] = event.unit_type_name
    elif name == "UnitOwnerChangeEvent" and event.unit_id in live:
        live[event.unit_id][1] = event.control_pid if event.control_pid in pids else 0
    elif name == "UnitPositionsEvent":
        for index, (x, y) in event.positions:
            unit_id = by_index.get(index)
            if unit_id in live:
                live[unit_id][2:] = [float(x), float(y)]
                seen.append((x, y))


def _snapshot(game_loop: int, live: dict[int, list[Any]]) -> Snapshot:
    units = tuple(Unit(uid, t, o, x, y) for uid, (t, o, x, y) in sorted(live.items()))
    return Snapshot(game_loop, units)


def _map_info(replay: Any, seen: list[tuple[float, float]]) -> MapInfo:
    name = str(getattr(replay, "map_name", "") or "unknown map")
    description = replay.raw_data.get("replay.initData", {}).get("game_description", {})
    width, height = description.get("map_size_x"), description.get("map_size_y")
    if not width or not height:  # fallback: the bounding box of what the replay shows
        width = int(max((x for x, _ in seen), default=0)) + _MAP_MARGIN
        height = int(max((y for _, y in seen), default=0)) + _MAP_MARGIN
    return MapInfo(name, int(width), int(height), zlib.crc32(name.encode("utf-8")))


# --- Pipeline stages ------------------------------------------------------------------------------


def list_replays(cfg: Sc2ReplayConfig) -> list[dict[str, Any]]:
    """Every file under the input, with its replay index and split (driver side)."""
    return [
        {
            "_index": i,
            "url": url,
            "ref": ref,
            "split": hash_split(
                ref, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction
            ),
            "reason": reason,  # a special file or an undecodable name: never opened
        }
        for i, (url, ref, _, reason) in enumerate(list_files(cfg.input))
    ]


def parse_replays(batch: pa.Table, *, params: dict[str, Any]) -> pa.Table:
    """Stage: replay files → one record per sampled scene (or one reject per unusable replay)."""
    cfg = Sc2ReplayConfig(**params)
    records = []
    for item in batch.to_pylist():
        base = {"split": item["split"], "ref": item["ref"], "scene": None, "reason": None}
        index = item["_index"] * MAX_SCENES_PER_REPLAY
        try:
            if item.get("reason"):
                raise OSError(item["reason"])
            data = read_bytes(item["url"])
            digest = hashlib.sha256(data).hexdigest()[:16]
            track = replay_track(
                load_replay(data), sample_every_s=cfg.sample_every_s, start_s=cfg.start_s
            )
        except Exception as exc:  # sc2reader raises many types on files it cannot read
            records.append(
                {
                    **base,
                    "_index": index,
                    "image_id": None,
                    "reason": f"cannot parse replay: {type(exc).__name__}: {exc}",
                }
            )
            continue
        scenes = track.scenes()[:MAX_SCENES_PER_REPLAY]
        if not scenes:
            records.append(
                {
                    **base,
                    "_index": index,
                    "image_id": f"sc2r-{digest}",
                    "reason": f"no scene: the game ends before start_s={cfg.start_s}",
                }
            )
        for n, scene in enumerate(scenes):
            records.append(
                {
                    **base,
                    "_index": index + n,
                    "scene": scene.to_json(),
                    "image_id": f"sc2r-{digest}-{scene.snapshot.game_loop:06d}",
                }
            )
    return pa.Table.from_pylist(records, schema=SCENE_SCHEMA)


def render_scenes(
    batch: pa.Table, *, params: dict[str, Any], tile_size: int, tile_format: str
) -> pa.Table:
    """Stage: scene records → staging rows (rendered scenes, or rejects with the reason)."""
    cfg = Sc2ReplayConfig(**params)
    rows = []
    for record in batch.to_pylist():
        if record["reason"] is not None:
            row = reject_row(
                image_id=record["image_id"],
                split=record["split"],
                source=SOURCE,
                ref=json.dumps({"replay": record["ref"]}),
                reason=record["reason"],
            )
        else:
            row = _scene_row(Scene.from_json(record["scene"]), record, cfg, tile_size, tile_format)
        rows.append({**row, "_index": record["_index"]})
    return staging_table(rows)


def _scene_row(
    scene: Scene, record: dict, cfg: Sc2ReplayConfig, tile_size: int, tile_format: str
) -> dict[str, Any]:
    ref = json.dumps({"replay": record["ref"], "game_loop": scene.snapshot.game_loop})
    common = {"image_id": record["image_id"], "split": record["split"], "source": SOURCE}
    if scene.marines > MAX_MARINES:
        return reject_row(
            **common, ref=ref, reason=f"{scene.marines} marines exceeds {MAX_MARINES}"
        )
    rendered = render(scene, cfg.render_config())
    return image_row(
        **common,
        label=scene.marines,
        label_name=str(scene.marines),
        image=rendered.image,
        proxy=rendered.proxy,
        boxes=rendered.marine_boxes,
        meta={
            "replay": record["ref"],
            "map": scene.map.name,
            "game_loop": scene.snapshot.game_loop,
            "time_s": round(scene.snapshot.time_s, 2),
            "scene": json.loads(scene.to_json()),
        },
        tile_size=tile_size,
        tile_format=tile_format,
    )


def plan_replays(
    config: BuildConfig, cfg: Sc2ReplayConfig, tile_format: str, say: Callable[[str], None]
) -> StagingPlan:
    """The build's plan for a folder of replays: listing → parse (Ray, one task per replay) →
    render (Ray)."""
    import ray  # only the composition needs Ray; the stages do not

    items = list_replays(cfg)
    params = dataclasses.asdict(cfg)
    scenes = (
        ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        .map_batches(
            parse_replays,
            batch_size=None,
            batch_format="pyarrow",
            fn_kwargs={"params": params},
        )
        .materialize()
    )
    total = scenes.count()
    say(f"[build] {len(items)} replay files, {total} scenes")
    # a replay's scenes are consecutive and alike: written in that order, training batches (read
    # nearly in file order) would hold a few replays each (`dslr.in_mixed_order`, the same trap)
    ds = scenes.random_shuffle(seed=0).map_batches(
        render_scenes,
        batch_size=config.rows_per_file,
        batch_format="pyarrow",
        fn_kwargs={"params": params, "tile_size": config.tile_size, "tile_format": tile_format},
    )
    inputs = {"replays": len(items), "scenes": total}
    return StagingPlan(ds, total, list(SPLITS), replay_class_names(), inputs)
