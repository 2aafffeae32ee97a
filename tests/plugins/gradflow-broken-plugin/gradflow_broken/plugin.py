"""A plugin whose import fails (test fixture)."""

raise ImportError("gradflow_broken needs a library that is not installed")
