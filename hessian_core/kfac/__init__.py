"""Kronecker-factored curvature: KFAC and EKFAC as operators (one block per nn.Linear / nn.Conv2d layer),
with exact inverse, log-determinant and trace from the factors. See docs/kfac.md.

* :class:`KFACOperator`, :class:`EKFACOperator`: from a model, a loss and data (the normalization contract
  of :mod:`hessian_core.objective`).
* :class:`KroneckerOperator` (``G ⊗ A``), :class:`KroneckerEigenOperator` (a Kronecker eigenbasis with
  eigenvalues), :class:`FactoredBlockOperator` (their block diagonal): the building blocks.
"""

from .dense_blocks import DiagonalOperator, EigenOperator
from .ekfac import EKFACOperator
from .factored import FactoredBlockOperator
from .kfac import KFACOperator
from .kronecker import KroneckerEigenOperator, KroneckerOperator

__all__ = ["KFACOperator", "EKFACOperator", "KroneckerOperator", "KroneckerEigenOperator", "FactoredBlockOperator",
           "EigenOperator", "DiagonalOperator"]
