"""Linear operators: the one base (:class:`LinearOperator`) with its compositions, and the curvature
operators built on it: Hessian, generalized Gauss-Newton, empirical Fisher, the Hessian of a closure."""

from .base import (
    BlockDiagonalOperator,
    DenseOperator,
    FunctionOperator,
    IdentityOperator,
    LinearOperator,
    ScaledOperator,
    ScipyOperator,
    SumOperator,
    as_operator,
    block_diagonal,
)
from .closure_hessian import ClosureGraph, ClosureHessianOperator
from .curvature import CurvatureOperator
from .fisher import EmpiricalFisherOperator
from .ggn import GGNOperator
from .hessian import HessianOperator

__all__ = [
    "LinearOperator", "IdentityOperator", "ScaledOperator", "SumOperator", "DenseOperator", "ScipyOperator",
    "FunctionOperator", "BlockDiagonalOperator", "as_operator", "block_diagonal",
    "CurvatureOperator", "HessianOperator", "GGNOperator", "EmpiricalFisherOperator",
    "ClosureHessianOperator", "ClosureGraph",
]
