"""gradflow-snap: the SnAp-1 gradient estimator as a third-party gradflow plugin.

Installing the distribution is all it takes: gradflow finds the entry point ``snap`` in the
``gradflow`` group and registers the estimator ``snap1``.
"""

from gradflow_snap.snap1 import SnAp1

__all__ = ["SnAp1"]
__version__ = "0.1.0"
