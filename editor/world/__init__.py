"""The procedural edit world: edit families with exact targets (edits) and the synthetic scenes (scenes)."""
