"""The public conformance suite for plugin authors: check a model or an estimator in a few lines.

    from gradflow.testing import check_estimator, check_model, estimator_checks

    check_model(my_model)                 # every primitive it implements vs finite differences
    check_estimator("rtrl", my_model)     # every named check of an estimator; the first failure
                                          # raises AssertionError naming the check
    for check in estimator_checks("uoro", my_model):
        check.run()                       # the checks one by one (check.name)

The checks are described in :mod:`gradflow.verification.model_checks` and
:mod:`gradflow.verification.estimator_checks`.
"""

from gradflow.verification.estimator_checks import (
    EstimatorCheck,
    check_estimator,
    estimator_checks,
)
from gradflow.verification.model_checks import as_float64, check_model, relative_error

__all__ = [
    "EstimatorCheck",
    "as_float64",
    "check_estimator",
    "check_model",
    "estimator_checks",
    "relative_error",
]
