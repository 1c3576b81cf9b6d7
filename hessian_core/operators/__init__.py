"""Curvature operators: Hessian, generalized Gauss-Newton, empirical Fisher."""

from .base import CurvatureOperator
from .ggn import EmpiricalFisherOperator, GGNOperator
from .hessian import HessianOperator

__all__ = ["CurvatureOperator", "HessianOperator", "GGNOperator", "EmpiricalFisherOperator"]
