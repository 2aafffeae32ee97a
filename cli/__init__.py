"""The ``gradflow`` command line (Typer)."""
