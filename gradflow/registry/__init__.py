"""Layer 2, the registry: the hook specifications (``hookspecs``), plugin discovery through
pluggy and entry points (``discovery``), construction by name with the options validated and
the capabilities checked (``factory``), and the guard that names a plugin in every error it
causes (``guard``)."""
