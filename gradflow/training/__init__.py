"""Layer 4, training: the one online step (``step``) and its first-step validation
(``validation``), building a run's parts from a config (``components``), the trainer and its
loop (``trainer``, ``loop_state``, ``signals``, ``threads``), the optimizers, schedules and
clipping, and the Python API of runs (``api``: ``gradflow.train``, ``gradflow.resume``)."""
