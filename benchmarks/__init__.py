"""The asv benchmark suite of gradflow (asv.conf.json at the repository root).

* :mod:`benchmarks.step`: time and peak memory of one online step, every built-in estimator that
  runs on an endless stream × model ``rnn`` × n × B × dtype;
* :mod:`benchmarks.scaling`: tracked numbers — the fitted scaling exponents of the step time
  against P and of its marginal cost (the step time beyond the forward-only step's), the step
  time relative to a forward-only step, and the estimator's state bytes per parameter;
* :mod:`benchmarks.calls`: tracked numbers — the NumPy and Python calls one step makes, counted;
* :mod:`benchmarks.tasks`: the cost of one step of every registered task (``Task.next()``, B = 1).

How to run it is in the README (``asv run --python=same`` against the current environment,
``asv continuous HEAD~1 HEAD`` between two commits); the method is in docs/performance.md.
"""
