"""The version of gradflow: the one source of it (the package metadata reads it from here)."""

__version__ = "0.1.0"
