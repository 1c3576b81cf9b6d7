"""EKFAC (George et al. 2018) as an operator: KFAC's Kronecker eigenbasis with the curvature's own
diagonal in that basis instead of the products of the factors' eigenvalues."""

from __future__ import annotations

import torch

from .corrections import eigenvalue_corrections
from .factors import kronecker_factors
from .kronecker import KroneckerEigenOperator
from .model_operator import KroneckerFactoredCurvature, input_factor_of


class EKFACOperator(KroneckerFactoredCurvature):
    """Eigenvalue-corrected KFAC: per block ``(Q_G ⊗ Q_A) diag(S) (Q_G ⊗ Q_A)^T`` with ``Q_A``, ``Q_G`` the
    eigenvectors of KFAC's factors and ``S`` the exact diagonal of the curvature in that basis
    (:mod:`hessian_core.kfac.corrections`). Same arguments as :class:`~hessian_core.kfac.KFACOperator`
    (``approx`` chooses the factors whose eigenbasis is used; the corrections always use the whole
    per-sample gradients). Two passes over the data (factors, then corrections).

    ``op.factors[layer] -> (A, G)``, ``op.eigenbases[layer] -> (Q_A, Q_G)``,
    ``op.corrected_eigenvalues[key] -> S`` ``(d_out, d_A)``; ``inverse(damping)``, ``logdet(damping)``,
    ``trace()``, ``eigenvalues()`` exact from them (``split="pi"`` does not apply: no factors to split).
    """

    kind = "EKFAC"

    def _layer_blocks(self, layers, curvature):
        self.factors = kronecker_factors(self.objective, layers, curvature, self.approx)
        #: ``{layer name: (Q_A or None, Q_G)}``
        self.eigenbases = {}
        for name, (A, G) in self.factors.items():
            QA = torch.linalg.eigh(A).eigenvectors if A is not None else None
            self.eigenbases[name] = (QA, torch.linalg.eigh(G).eigenvectors)
        #: ``{block key: S (d_out, d_A)}``
        self.corrected_eigenvalues = eigenvalue_corrections(self.objective, layers, curvature, self.eigenbases)
        budget = self.objective.budget
        blocks = []
        for layer in layers:
            QA, QG = self.eigenbases[layer.name]
            for block in layer.blocks:
                op = KroneckerEigenOperator(QG, input_factor_of(block, QA, QG), self.corrected_eigenvalues[block.key],
                                            budget=budget, name=block.key)
                blocks.append((block.key, block.positions, op))
        return blocks
