"""Spectral analysis of curvature operators: extreme eigenpairs, trace, diagonal, density, matrix functions.

Every routine takes a core :class:`~hessian_core.operators.CurvatureOperator`, a dense torch tensor,
a numpy array or a scipy ``LinearOperator`` (see :func:`as_operator`), draws its randomness from
``seed`` (see :mod:`._random`) and reports the number of operator-vector products it used.
"""

from ._adapt import SpectralOperator, as_operator
from .density import SpectralDensity, spectral_density
from .diagonal import DiagonalResult, diagonal_estimate
from .eigsh import EigenResult, eigsh
from .matrix_functions import ConditionResult, LogdetResult, condition_number, logdet, trace_function
from .trace import TraceResult, trace

__all__ = [
    "as_operator",
    "SpectralOperator",
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
