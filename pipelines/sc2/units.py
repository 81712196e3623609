"""StarCraft II unit types as the renderer and the simulator see them: size, sprite, category.

Radii are the game's own (in cells; a structure's is half its footprint). Types not listed fall back
by name (``*MineralField*``, ``*Geyser*``, destructible rocks) or to a generic half-cell unit, so
every replay renders. Beacons and similar markers are not units on the battlefield: ``ignored``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UnitSpec:
    """How big a unit type is and how it is drawn."""

    radius: float  # cells
    sprite: str  # sprite name in pipelines.sc2.render
    structure: bool = False  # structures and resources: drawn first, squares on the mini-map


def _many(names: str, spec: UnitSpec) -> dict[str, UnitSpec]:
    return dict.fromkeys(names.split(), spec)


UNIT_SPECS: dict[str, UnitSpec] = {
    # The scene's armies: each has its own sprite.
    "Marine": UnitSpec(0.375, "marine"),
    "Marauder": UnitSpec(0.5625, "marauder"),
    "SiegeTank": UnitSpec(0.875, "siege_tank"),
    "SiegeTankSieged": UnitSpec(0.875, "siege_tank_sieged"),
    "Zergling": UnitSpec(0.375, "zergling"),
    "Baneling": UnitSpec(0.375, "baneling"),
    "Hydralisk": UnitSpec(0.625, "hydralisk"),
    **_many("SCV MULE Drone Probe", UnitSpec(0.375, "worker")),
    # Other units that replays hold: generic sprites at their real size.
    **_many("Reaper Ghost Zealot Adept Sentry HighTemplar DarkTemplar", UnitSpec(0.5, "generic")),
    **_many("Stalker Roach Hellion Hellbat Raven WarpPrism", UnitSpec(0.625, "generic")),
    **_many(
        "Medivac VikingFighter VikingAssault Liberator Banshee Cyclone Immortal Ravager Observer "
        "Phoenix Oracle MothershipCore",
        UnitSpec(0.75, "generic"),
    ),
    **_many("Queen Infestor SwarmHostMP Lurker", UnitSpec(0.875, "generic")),
    **_many(
        "Thor Battlecruiser Colossus Archon Ultralisk Carrier Tempest Overlord Overseer",
        UnitSpec(1.25, "generic"),
    ),
    # Structures, by footprint.
    **_many(
        "CommandCenter OrbitalCommand PlanetaryFortress Nexus",
        UnitSpec(2.5, "structure", structure=True),
    ),
    **_many("Hatchery Lair Hive", UnitSpec(2.5, "zerg_structure", structure=True)),
    **_many(
        "Barracks Factory Starport EngineeringBay Armory Bunker Refinery FusionCore GhostAcademy "
        "Gateway WarpGate Forge CyberneticsCore RoboticsFacility RoboticsBay Stargate "
        "TwilightCouncil TemplarArchive DarkShrine FleetBeacon Assimilator",
        UnitSpec(1.5, "structure", structure=True),
    ),
    **_many(
        "SpawningPool EvolutionChamber RoachWarren BanelingNest HydraliskDen Extractor "
        "InfestationPit Spire GreaterSpire UltraliskCavern LurkerDenMP",
        UnitSpec(1.5, "zerg_structure", structure=True),
    ),
    **_many(
        "SupplyDepot SupplyDepotLowered Pylon MissileTurret SensorTower PhotonCannon "
        "BarracksReactor BarracksTechLab FactoryReactor FactoryTechLab StarportReactor "
        "StarportTechLab Reactor TechLab ShieldBattery",
        UnitSpec(1.0, "structure", structure=True),
    ),
    **_many("SpineCrawler SporeCrawler", UnitSpec(1.0, "zerg_structure", structure=True)),
}

_MINERAL = UnitSpec(1.0, "mineral", structure=True)
_GEYSER = UnitSpec(1.5, "geyser", structure=True)
_ROCK = UnitSpec(1.5, "rock", structure=True)
_GENERIC = UnitSpec(0.5, "generic")
_ROCK_PREFIXES = ("Destructible", "Unbuildable", "Collapsible", "Rocks", "Debris")
_IGNORED_PREFIXES = ("Beacon", "Shape", "Inhibitor")


def unit_spec(unit_type: str) -> UnitSpec:
    """The spec of a unit type (a name-based fallback for types not listed)."""
    spec = UNIT_SPECS.get(unit_type)
    if spec is not None:
        return spec
    if "MineralField" in unit_type:
        return _MINERAL
    if "Geyser" in unit_type:
        return _GEYSER
    if unit_type.startswith(_ROCK_PREFIXES):
        return _ROCK
    return _GENERIC


def unit_radius(unit_type: str) -> float:
    """Radius in cells."""
    return unit_spec(unit_type).radius


def sprite_kind(unit_type: str) -> str:
    """Which sprite draws this type."""
    return unit_spec(unit_type).sprite


def ignored(unit_type: str) -> bool:
    """Markers that are units in the game's data but nothing on the battlefield (beacons)."""
    return unit_type.startswith(_IGNORED_PREFIXES)
