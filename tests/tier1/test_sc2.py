"""Tier 1: StarCraft II scenes — track format, terrain, simulator, renderer, and real replays."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipelines.codec import decode_full
from pipelines.sc2.render import OWNER_COLOURS, RenderConfig, minimap_shape, render
from pipelines.sc2.replays import (
    Sc2ReplayConfig,
    list_replays,
    load_replay,
    parse_replays,
    render_scenes,
    replay_track,
)
from pipelines.sc2.simulator import Sc2SimConfig, generate_sc2_sim, simulate
from pipelines.sc2.terrain import pathable, start_locations, terrain_levels
from pipelines.sc2.tracks import LOOPS_PER_SECOND, MapInfo, Player, Scene, Snapshot, Track, Unit
from pipelines.sc2.units import ignored, unit_spec
from pipelines.sources import generate_rows
from pipelines.synthetic import sample_rng
from pipelines.tiling import decode_proxy

REPLAYS = Path(__file__).resolve().parents[3] / "shared" / "data" / "sc2"
# Marines born per replay, from the replay folder's README (counted from tracker events).
MARINES_BORN = {
    "tvp_dusk_towers_3.2.2.SC2Replay": 200,
    "pvt_king_sejong_3.7.0.SC2Replay": 54,
    "tvz_orbital_shipyard_2.5.5.SC2Replay": 1,
}
SMALL = Sc2SimConfig(map_size=64, duration_s=60.0, px_per_cell=4.0, minimap_size=64)


def scene_with(units: list[Unit], size: int = 32) -> Scene:
    map_info = MapInfo("test", size, size, terrain_seed=1)
    return Scene(map_info, (Player(1, "Terran"), Player(2, "Zerg")), Snapshot(224, tuple(units)))


# --- Track format ------------------------------------------------------------------------------


def test_track_json_round_trip() -> None:
    track = simulate(SMALL, np.random.default_rng(0), until_s=10)
    again = Track.from_json(track.to_json())
    assert again == track
    scene = track.scenes()[-1]
    assert Scene.from_json(scene.to_json()) == scene
    assert scene.snapshot.time_s == pytest.approx(scene.snapshot.game_loop / LOOPS_PER_SECOND)
    with pytest.raises(ValueError, match="not a saccade-sc2-track v1"):
        Track.from_dict({**track.to_dict(), "version": 2})


def test_unit_specs() -> None:
    assert unit_spec("Marine").sprite == "marine" and unit_spec("Marauder").sprite == "marauder"
    assert unit_spec("Marine").radius < unit_spec("Marauder").radius
    assert unit_spec("RichMineralField750").sprite == "mineral"
    assert unit_spec("ShakurasVespeneGeyser").sprite == "geyser"
    assert unit_spec("SomeFutureUnit").sprite == "generic"
    assert ignored("BeaconArmy") and not ignored("Marine")


# --- Terrain and simulator ---------------------------------------------------------------------


def test_terrain_is_a_pure_function_of_the_map_with_open_starts() -> None:
    map_info = MapInfo("m", 80, 60, terrain_seed=7)
    levels = terrain_levels(map_info)
    terrain_levels.cache_clear()
    assert np.array_equal(levels, terrain_levels(map_info))
    assert len(np.unique(levels)) == 3  # unpathable, low and high ground all present
    (ax, ay), (bx, by) = start_locations(80, 60)
    t = np.linspace(0, 1, 50)
    assert pathable(levels, ax + t * (bx - ax), ay + t * (by - ay), 60).all()
    assert not pathable(levels, np.array([-1.0, 81.0]), np.array([5.0, 5.0]), 60).any()


def test_simulation_is_deterministic() -> None:
    a = simulate(SMALL, np.random.default_rng(11))
    b = simulate(SMALL, np.random.default_rng(11))
    assert a.to_json() == b.to_json()
    assert len(a.snapshots) == 60 // 5 + 1


@pytest.fixture(scope="module")
def battles() -> list[Track]:
    return [simulate(SMALL, np.random.default_rng(seed)) for seed in range(6)]


def test_battles_move_and_fight(battles: list[Track]) -> None:
    zerg, terran = ("Zergling", "Baneling", "Hydralisk"), ("Marine", "Marauder")
    sieged, both_lost, walked = 0, 0, 0
    for track in battles:
        first, last = track.snapshots[0], track.snapshots[-1]
        marines = [s.count("Marine") for s in track.snapshots]
        assert marines == sorted(marines, reverse=True)  # marines die, none are made
        assert max(marines) <= SMALL.max_marines
        lost_t = sum(first.count(t) for t in terran) > sum(last.count(t) for t in terran)
        lost_z = sum(first.count(z) for z in zerg) > sum(last.count(z) for z in zerg)
        both_lost += lost_t and lost_z
        sieged += any(s.count("SiegeTankSieged") for s in track.snapshots)
        start = {u.unit_id: (u.x, u.y) for u in first.units}
        walked += sum(
            np.hypot(u.x - start[u.unit_id][0], u.y - start[u.unit_id][1]) > 5
            for u in track.snapshots[1].units
        )
        levels = terrain_levels(track.map)
        xs, ys = np.array([u.x for u in last.units]), np.array([u.y for u in last.units])
        assert pathable(levels, xs, ys, track.map.height).mean() > 0.95
    assert both_lost >= 3 and sieged >= 1 and walked >= 20


def test_sim_samples_through_the_registry_stage() -> None:
    table = generate_rows(
        {"id": np.arange(3)},
        source="sc2_sim",
        params=dataclasses.asdict(SMALL),
        pools={},
        seed=0,
        counts={"train": 3},
        tile_size=128,
        tile_format="png",
    )
    for row in table.to_pylist():
        assert row["reject_reason"] is None and row["source"] == "sc2_sim"
        assert 0 <= row["label"] <= 22 and row["label_name"] == str(row["label"])
        assert len(row["boxes"]) == row["label"]
        assert (row["height"], row["width"]) == (256, 256)
        assert decode_proxy(row["proxy"]).shape == (64, 64, 3)
        scene = Track.from_dict(json.loads(row["meta"])["scene"]).scenes()[0]
        assert scene.marines == row["label"]


def test_sim_sample_is_deterministic() -> None:
    a = generate_sc2_sim(SMALL, sample_rng(0, "val", 3))
    b = generate_sc2_sim(SMALL, sample_rng(0, "val", 3))
    assert np.array_equal(a.image, b.image) and a.label == b.label and a.meta == b.meta


# --- Renderer ----------------------------------------------------------------------------------


def test_marine_and_marauder_differ_only_at_full_resolution() -> None:
    base = [Unit(1, "CommandCenter", 1, 8, 8), Unit(2, "Zergling", 2, 20, 20)]
    marine = scene_with([*base, Unit(3, "Marine", 1, 16, 16)])
    marauder = scene_with([*base, Unit(3, "Marauder", 1, 16, 16)])
    cfg = RenderConfig(px_per_cell=16, minimap_size=64)
    a, b = render(marine, cfg), render(marauder, cfg)
    assert np.array_equal(a.proxy, b.proxy)  # the same dot on the mini-map
    assert (np.abs(a.image.astype(int) - b.image).max(-1) > 30).sum() > 50
    assert len(a.marine_boxes) == 1 and b.marine_boxes == []


def test_render_sizes_and_marine_boxes() -> None:
    units = [Unit(i, "Marine", 1 + i % 2, 4.0 + 3 * i, 30.0 - 2 * i) for i in range(7)]
    units += [Unit(99, "Hydralisk", 2, 10, 10), Unit(100, "MineralField", 0, 25, 25)]
    scene = scene_with(units, size=40)
    cfg = RenderConfig(px_per_cell=8, minimap_size=80)
    out = render(scene, cfg)
    assert out.image.shape == (320, 320, 3) and out.proxy.shape == (*minimap_shape(scene, cfg), 3)
    assert len(out.marine_boxes) == scene.marines == 7
    for (x0, y0, x1, y1, cls), unit in zip(
        out.marine_boxes, sorted(units[:7], key=lambda u: -u.y), strict=True
    ):
        assert cls == 0
        assert x0 * 40 < unit.x < x1 * 40 and y0 * 40 < 40 - unit.y < y1 * 40
        crop = out.image[int(y0 * 320) : int(y1 * 320), int(x0 * 320) : int(x1 * 320)]
        owner = np.array(OWNER_COLOURS[unit.owner])
        assert (np.abs(crop.astype(int) - owner).sum(-1) < 30).any()


# --- Real replays ------------------------------------------------------------------------------

needs_replays = pytest.mark.skipif(
    not REPLAYS.is_dir(), reason=f"real replays not found at {REPLAYS} (shared test data)"
)


def direct_marine_count(replay, game_loop: int) -> int:
    """Marines born minus marines died up to ``game_loop``, straight from the tracker events."""
    born = {
        e.unit_id
        for e in replay.tracker_events
        if type(e).__name__ == "UnitBornEvent"
        and e.unit_type_name == "Marine"
        and e.frame <= game_loop
    }
    died = {
        e.unit_id
        for e in replay.tracker_events
        if type(e).__name__ == "UnitDiedEvent" and e.frame <= game_loop
    }
    return len(born - died)


@pytest.fixture(scope="module")
def parsed() -> dict[str, tuple[object, Track]]:
    out = {}
    for name in MARINES_BORN:
        replay = load_replay((REPLAYS / name).read_bytes())
        out[name] = (replay, replay_track(replay, sample_every_s=30.0, start_s=30.0))
    return out


@needs_replays
def test_replays_parse_with_the_known_marine_births(parsed) -> None:
    for name, (replay, track) in parsed.items():
        born = sum(
            type(e).__name__ == "UnitBornEvent" and e.unit_type_name == "Marine"
            for e in replay.tracker_events
        )
        assert born == MARINES_BORN[name], name
        assert len(track.snapshots) == int(replay.frames / LOOPS_PER_SECOND / 30)
        assert {p.race for p in track.players} >= {"Terran"}
    dusk = parsed["tvp_dusk_towers_3.2.2.SC2Replay"][1]
    assert (dusk.map.width, dusk.map.height) == (176, 184)  # from the replay's init data


@needs_replays
def test_scene_marine_counts_agree_with_the_replay_events(parsed) -> None:
    checked = 0
    for replay, track in parsed.values():
        for snapshot in track.snapshots:
            assert snapshot.count("Marine") == direct_marine_count(replay, snapshot.game_loop)
            checked += snapshot.count("Marine") > 0
    assert checked > 40  # plenty of scenes with marines in them


@needs_replays
def test_replay_stages_render_label_and_reject(parsed, tmp_path: Path) -> None:
    for name in MARINES_BORN:
        (tmp_path / name).symlink_to(REPLAYS / name)
    (tmp_path / "notes.txt").write_text("not a replay")
    cfg = Sc2ReplayConfig(input=str(tmp_path), sample_every_s=60.0, px_per_cell=2.0)
    items = list_replays(cfg)
    scenes = parse_replays(pa.Table.from_pylist(items), params=dataclasses.asdict(cfg))
    staged = render_scenes(scenes, params=dataclasses.asdict(cfg), tile_size=256, tile_format="png")
    every, start = round(60 * LOOPS_PER_SECOND), round(30 * LOOPS_PER_SECOND)
    expected = sum(len(range(start, r.frames + 1, every)) for r, _ in parsed.values())
    assert staged.num_rows == scenes.num_rows == expected + 1  # + the file that is no replay
    rows = staged.to_pylist()
    replay_of = {name: replay for name, (replay, _) in parsed.items()}
    over = [r for r in rows if (r["reject_reason"] or "").endswith("exceeds 22")]
    assert over and all(r["reject_reason"].split()[0].isdigit() for r in over)
    [bad] = [r for r in rows if (r["reject_reason"] or "").startswith("cannot parse replay")]
    assert json.loads(bad["reject_ref"]) == {"replay": "notes.txt"}
    good = [r for r in rows if r["reject_reason"] is None]
    assert len(good) + len(over) + 1 == len(rows)
    for row in good:
        meta = json.loads(row["meta"])
        expected = direct_marine_count(replay_of[meta["replay"]], meta["game_loop"])
        assert row["label"] == expected == len(row["boxes"]) <= 22
    row = good[-1]
    image = decode_full(
        row["tiles"],
        height=row["height"],
        width=row["width"],
        channels=3,
        tile_size=256,
        tile_format="png",
    )
    assert image.shape == (row["height"], row["width"], 3)
