"""Plugins that break their contracts while a run uses them (test fixtures)."""
