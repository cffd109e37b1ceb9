"""Timing, energy and area of a ROMA-class chip: an event-driven model over the mesh."""
