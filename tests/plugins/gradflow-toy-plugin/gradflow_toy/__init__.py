"""A tiny third-party gradflow plugin (test fixture)."""
