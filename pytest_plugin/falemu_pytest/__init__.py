"""pytest plugin for falemu."""
