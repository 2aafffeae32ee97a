"""gradflow's built-in plugins: estimators, models and tasks.

They are registered through the ``gradflow`` entry-point group, exactly like third-party plugins,
and use only the public API of :mod:`gradflow`.
"""
