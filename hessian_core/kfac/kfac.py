"""KFAC (Martens & Grosse 2015; Grosse & Martens 2016 for convolutions; Eschenhagen et al. 2023 for weight
sharing) as an operator: one Kronecker block ``G ⊗ A`` per covered layer, block-diagonal over layers."""

from __future__ import annotations

from .factors import kronecker_factors
from .kronecker import KroneckerOperator
from .model_operator import KroneckerFactoredCurvature, input_factor_of


class KFACOperator(KroneckerFactoredCurvature):
    """Kronecker-factored approximate curvature of ``loss_fn(model(inputs), targets)`` over ``data``.

    ``KFACOperator(model, loss_fn, data, *, type="exact", mc_samples=1, approx="expand",
    separate_bias=True, uncovered="error", **objective_options)`` or ``KFACOperator(objective, ...)``.

    Args:
        type: what ``G`` backpropagates: ``"exact"`` the loss Hessian w.r.t. the outputs (GGN),
            ``"mc"`` ``mc_samples`` labels drawn from the model's predictive distribution per sample (seeded
            by ``seed=`` and the batch index), ``"empirical"`` each sample's own loss gradient (empirical
            Fisher). See :mod:`hessian_core.kfac.output_curvature`.
        approx: ``"expand"`` or ``"reduce"`` for layers applied over positions (sequences, conv pixels);
            the same when there are none. See :mod:`hessian_core.kfac.factors`.
        separate_bias: ``True``: a weight block ``G ⊗ A`` and a bias block ``G``; ``False``: one block for
            ``[W | b]`` with inputs ``[a, 1]``.
        uncovered: parameters outside nn.Linear / nn.Conv2d layers: ``"error"`` (the default, naming them),
            ``"exact"`` (their exact curvature block of the same type, GGN or empirical Fisher, dense) or
            ``"diagonal"`` (its exact diagonal).
        objective_options: ``reduction``, ``count_fn``, ``params``, ``train_mode``, ``seed``,
            ``memory_budget``, ``progress``, ``distributed`` as for every operator (the normalization
            contract of :mod:`hessian_core.objective`).

    ``op.factors[layer] -> (A, G)``; ``op.block(key)`` (keys ``"fc"`` or ``"fc.weight"``/``"fc.bias"``,
    ``"uncovered"``); ``op.inverse(damping)`` is ``(op + damping I)^{-1}`` exactly (``split="pi"``:
    Martens & Grosse's factored damping), ``op.logdet(damping)``, ``op.trace()``, ``op.eigenvalues()``
    exact from the factors; ``to_dense()`` within the memory budget. The factors are computed once, at
    construction; see :mod:`hessian_core.kfac.model_operator` for stale factors.
    """

    kind = "KFAC"

    def _layer_blocks(self, layers, curvature):
        #: ``{layer name: (A, G)}``: ``A`` ``(d_in [+1], d_in [+1])`` over inputs (``None`` when only the bias is
        #: differentiated), ``G`` ``(d_out, d_out)`` over outputs
        self.factors = kronecker_factors(self.objective, layers, curvature, self.approx)
        budget = self.objective.budget
        blocks = []
        for layer in layers:
            A, G = self.factors[layer.name]
            for block in layer.blocks:
                op = KroneckerOperator(input_factor_of(block, A, G), G, budget=budget, name=block.key, check=False)
                blocks.append((block.key, block.positions, op))
        return blocks
