"""Autoscaling: a pure policy (no I/O, clock injected) and a controller that applies it."""
