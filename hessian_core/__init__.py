"""hessian_core: exact second-order information of neural-network losses in PyTorch.

Quick start::

    import hessian_core as hc
    H = hc.hessian(model, torch.nn.MSELoss(), (X, y))          # (P, P), exact
    op = hc.HessianOperator(model, loss_fn, loader)            # matrix-free, .matvec / .matmat / .to_scipy()

See :mod:`hessian_core.objective` for the normalization contract and the model policy, and
:mod:`hessian_core.operators` for the operator base and its compositions.
"""

from . import (
    distributed,  # data-parallel curvature on torch.distributed: closure, shared_seed
    inverse,  # solves, influence functions, Laplace approximations, pruning
    optim,  # hessian_core.optim.Newton / NewtonCG / HessianFree
)
from .errors import HessianCoreError, InvalidInputError, MemoryBudgetError, NonFiniteError
from .functional import hessian, hessian_blocks, hessian_diagonal, hvp
from .inverse import (
    InverseOperator,
    Laplace,
    OBSSaliencies,
    Predictive,
    PruneResult,
    Sensitivity,
    SolveResult,
    influence_scores,
    obd_saliencies,
    obs_saliencies,
    prune,
    solve,
    trace_sensitivities,
)
from .kfac import EKFACOperator, KFACOperator, KroneckerEigenOperator, KroneckerOperator
from .losses import CausalLMLoss
from .newton_step import NewtonStep, newton_step
from .objective import Objective
from .operators import (
    BlockDiagonalOperator,
    ClosureHessianOperator,
    CurvatureOperator,
    DenseOperator,
    EmpiricalFisherOperator,
    FunctionOperator,
    GGNOperator,
    HessianOperator,
    IdentityOperator,
    LinearOperator,
    ScaledOperator,
    SumOperator,
    as_operator,
    block_diagonal,
)
from .params import ParamSpec
from .spectral import condition_number, diagonal_estimate, eigsh, logdet, spectral_density, trace

__version__ = "0.1.0"

__all__ = [
    "hessian", "hvp", "hessian_diagonal", "hessian_blocks",
    "LinearOperator", "IdentityOperator", "ScaledOperator", "SumOperator", "DenseOperator", "FunctionOperator",
    "BlockDiagonalOperator", "as_operator", "block_diagonal",
    "CurvatureOperator", "HessianOperator", "GGNOperator", "EmpiricalFisherOperator", "ClosureHessianOperator",
    "Objective", "ParamSpec", "CausalLMLoss",
    "HessianCoreError", "InvalidInputError", "MemoryBudgetError", "NonFiniteError",
    "newton_step", "NewtonStep", "optim", "distributed", "inverse",
    "eigsh", "trace", "diagonal_estimate", "spectral_density", "condition_number", "logdet",
    "solve", "SolveResult", "InverseOperator", "influence_scores", "Laplace", "Predictive",
    "obd_saliencies", "obs_saliencies", "OBSSaliencies", "trace_sensitivities", "Sensitivity", "prune", "PruneResult",
    "KFACOperator", "EKFACOperator", "KroneckerOperator", "KroneckerEigenOperator",
]
