"""hessian_core: exact second-order information of neural-network losses in PyTorch.

Quick start::

    import hessian_core as hc
    H = hc.hessian(model, torch.nn.MSELoss(), (X, y))          # (P, P), exact
    op = hc.HessianOperator(model, loss_fn, loader)            # matrix-free, .matvec / .matmat / .to_scipy()

See :mod:`hessian_core.objective` for the normalization contract and the model policy.
"""

from .dense import hessian, hessian_blocks, hessian_diagonal, hvp
from .errors import HessianCoreError, InvalidInputError, MemoryBudgetError, NonFiniteError
from .objective import Objective
from .operators import CurvatureOperator, EmpiricalFisherOperator, GGNOperator, HessianOperator
from .params import ParamSpec

__version__ = "0.1.0"

__all__ = [
    "hessian", "hvp", "hessian_diagonal", "hessian_blocks",
    "CurvatureOperator", "HessianOperator", "GGNOperator", "EmpiricalFisherOperator",
    "Objective", "ParamSpec",
    "HessianCoreError", "InvalidInputError", "MemoryBudgetError", "NonFiniteError",
]
