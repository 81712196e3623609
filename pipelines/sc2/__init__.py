"""StarCraft II scenes: track format, battle simulator, replay adapter, renderer (MODEL.md §3)."""
