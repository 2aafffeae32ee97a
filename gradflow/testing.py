"""The public conformance suite for plugin authors (see :mod:`gradflow.verification.conformance`).

    from gradflow.testing import check_model, check_estimator
"""

from gradflow.verification.conformance import (
    as_float64,
    check_estimator,
    check_model,
    relative_error,
)

__all__ = ["as_float64", "check_estimator", "check_model", "relative_error"]
