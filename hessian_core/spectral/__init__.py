"""Spectral analysis of symmetric operators: extreme eigenpairs, trace, diagonal, density, matrix functions.

Every routine takes a :class:`~hessian_core.operators.LinearOperator` (a curvature operator, a composition
of them) or anything :func:`~hessian_core.operators.as_operator` accepts (a dense torch tensor, a numpy
array, a scipy ``LinearOperator``), keeps to the operator's memory budget, draws its randomness from
``seed`` (see :mod:`.probes`) and reports the number of operator-vector products it used.
"""

from .density import SpectralDensity, spectral_density
from .diagonal_estimators import DiagonalResult, diagonal_estimate
from .lanczos import EigenResult, eigsh
from .matrix_functions import ConditionResult, LogdetResult, condition_number, logdet, trace_function
from .trace_estimators import TraceResult, trace

__all__ = [
    "eigsh",
    "EigenResult",
    "trace",
    "TraceResult",
    "diagonal_estimate",
    "DiagonalResult",
    "spectral_density",
    "SpectralDensity",
    "condition_number",
    "ConditionResult",
    "logdet",
    "LogdetResult",
    "trace_function",
]
