"""The inverse of curvature: damped solves, influence functions, Laplace approximations, pruning.

* :func:`solve` / :class:`SolveResult` (``solve.py``, Krylov methods in ``krylov.py``, dense factors in
  ``factor.py``) and :class:`InverseOperator` (``inverse_operator.py``);
* :func:`influence_scores` (``influence.py``), on per-sample derivatives (``per_sample.py``);
* :class:`Laplace` (``laplace.py``), with the likelihood factors (``likelihood.py``), the posterior
  structures and their extension point :func:`register_structure` (``posterior.py``; the Kronecker-factored
  ones on :mod:`hessian_core.kfac` in ``kron_posterior.py``) and the predictive (``predictive.py``);
* pruning saliencies and masks (``pruning.py``).

The conventions and normalization factors are in ``docs/inverse.md``.
"""

from .influence import influence_scores
from .inverse_operator import InverseOperator
from .laplace import Laplace
from .posterior import register_structure
from .predictive import Predictive
from .pruning import OBSSaliencies, PruneResult, Sensitivity, obd_saliencies, obs_saliencies, prune, trace_sensitivities
from .solve import SolveResult, solve

__all__ = ["solve", "SolveResult", "InverseOperator", "influence_scores", "Laplace", "Predictive",
           "register_structure", "obd_saliencies", "obs_saliencies", "OBSSaliencies", "trace_sensitivities",
           "Sensitivity", "prune", "PruneResult"]
