"""Layer 6, tools: ``gradflow bench`` (``bench``) and its scaling fits (``scaling``), sweeps
(``sweep``, ``sweep_summary``) and learning-curve plots (``plot``)."""
