"""Exceptions raised by hessian_core. Every error names what is wrong and what to do instead."""


class HessianCoreError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(HessianCoreError, ValueError):
    """The model, loss, data or vector given cannot be used as they are (shape, type, reduction...)."""


class MemoryBudgetError(HessianCoreError, MemoryError):
    """A requested dense result or work buffer does not fit the memory budget."""


class NonFiniteError(HessianCoreError, FloatingPointError):
    """NaN or Inf appeared in a loss, gradient or curvature product."""
