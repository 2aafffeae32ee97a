"""Layer 5, verification: frozen trajectories (``trajectory``), exact references by backward
passes (``reference``), the conformance suite for plugin authors (``conformance``, public as
``gradflow.testing``) and the bias, variance and cosine statistics of ``gradflow check``
(``statistics``)."""
