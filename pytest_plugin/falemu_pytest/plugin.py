"""falemu pytest plugin (placeholder until fixtures land)."""
