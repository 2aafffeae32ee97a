"""Layer 5, verification: frozen trajectories (``trajectory``), exact references by backward
passes (``reference``), the conformance checks for plugin authors (``model_checks``,
``estimator_checks``; public as ``gradflow.testing``) and the bias, variance and cosine statistics
of ``gradflow check`` (``statistics``)."""
