"""Laplace approximation of the posterior of a trained network: :class:`Laplace`.

Model: likelihood from the loss (:mod:`.likelihood`: Gaussian for ``MSELoss`` with noise ``sigma_noise``,
categorical for ``CrossEntropyLoss``, Bernoulli for ``BCEWithLogitsLoss``), prior ``N(0, 1/prior_precision)``
on the parameters (scalar, one per parameter tensor, or one per parameter), as in laplace-torch. At the
parameters ``theta*`` (assumed a MAP, as laplace-torch assumes) the posterior is approximated by
``N(theta*, Lambda^{-1})`` with

    Lambda = s * C(theta*) + diag(prior_precision)

where ``C`` is the curvature of the *normalized* objective ``L`` (the mean loss for ``"mean"`` losses) and
``s`` the factor to the negative log likelihood of the data set, ``NLL = a L + c``: ``s = a`` for the GGN
(default, as in laplace-torch) and the Hessian, ``s = a^2/W`` for the empirical Fisher. For ``MSELoss``
with the mean over ``N`` samples of ``O`` outputs, ``a = N O / (2 sigma^2)``; for ``CrossEntropyLoss``,
``a = N``. The log marginal likelihood (evidence) is

    log p(D) ~= -NLL(theta*) - 1/2 theta*^T diag(prior) theta* + 1/2 log det diag(prior) - 1/2 log det Lambda,

exact for Bayesian linear regression (a linear model with ``MSELoss``) at its MAP.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch

from ..arguments import check_choice, check_int, check_real, check_seed
from ..data import to_device
from ..errors import InvalidInputError
from ..forward import model_mode, model_versions
from ..memory import check_fits
from ..objective import Objective
from .likelihood import Likelihood, likelihood_kind
from .per_sample import check_separable, jacobians, num_samples, refuse_train_mode, sample_chunk
from .posterior import CURVATURES, STRUCTURES
from .predictive import Predictive, classify

MODES = ("glm", "mc")
LINKS = ("probit", "mc")


class Laplace:
    """Laplace approximation at the current parameters of ``model`` (see the module docstring).

    Args:
        model: the trained network (never modified; it must not change while this object is used).
        loss_fn: ``nn.MSELoss``, ``nn.CrossEntropyLoss`` (class-index targets) or ``nn.BCEWithLogitsLoss``,
            reduction ``"mean"`` or ``"sum"``: the loss the model was trained with, without weights.
        train_data: ``(inputs, targets)`` or an iterable of them (a ``DataLoader``; unequal batches are fine).
        structure: ``"full"`` (dense ``P x P``), ``"diag"`` (exact diagonal of the curvature), ``"last_layer"``
            (full, over the parameters of the module owning the last parameter, the rest fixed), ``"kron"``
            (KFAC, :class:`~hessian_core.kfac.KFACOperator`), ``"ekfac"`` (EKFAC), or a name registered with
            :func:`~hessian_core.inverse.register_structure`. ``params=`` restricts any structure to a
            subnetwork.
        curvature: ``"ggn"`` (default, positive semi-definite, as laplace-torch), ``"hessian"`` (exact; may be
            indefinite away from a minimum; not for ``"kron"``/``"ekfac"``) or ``"ef"`` (empirical Fisher).
        prior_precision: ``> 0``: a number, one per parameter tensor (layerwise) or one per parameter
            (``"kron"``/``"ekfac"``: a number or one per parameter tensor).
        sigma_noise: observation noise of the Gaussian likelihood (``MSELoss`` only).
        structure_options: keywords for the structure's builder: for ``"kron"``/``"ekfac"`` KFAC's ``type``
            (``"exact"`` or ``"mc"`` with curvature ``"ggn"``), ``mc_samples``, ``approx``, ``separate_bias``,
            ``uncovered`` (see docs/kfac.md).
        **options: :class:`~hessian_core.objective.Objective` options (``params``, ``memory_budget``,
            ``progress``, ``reduction``).

    Attributes: ``mean`` (``theta*``, flat ``(P,)``), ``params`` (ParamSpec of the Laplace parameters),
    ``likelihood`` (:class:`~hessian_core.inverse.likelihood.Likelihood`), ``loss`` (``L(theta*)``),
    ``posterior`` (the structure), ``n_params``, ``n_data``.
    """

    def __init__(self, model, loss_fn, train_data, *, structure: str = "full", curvature: str = "ggn",
                 prior_precision=1.0, sigma_noise: float = 1.0, structure_options: dict | None = None, **options):
        kind = likelihood_kind(loss_fn)
        names = tuple(STRUCTURES) + ("last_layer",)
        self.structure = check_choice(structure, "structure", names)
        self.curvature = check_choice(curvature, "curvature", CURVATURES)
        build = STRUCTURES["full" if structure == "last_layer" else structure]
        structure_options = _check_structure_options(build, structure, self.curvature, structure_options)
        if "count_fn" in options:
            raise InvalidInputError("Laplace takes no count_fn: the likelihood is a sum over samples")
        objective = Objective(model, loss_fn, train_data, **options)
        refuse_train_mode(objective, "a Laplace approximation")
        if objective.reducer is not None:
            raise InvalidInputError("Laplace does not run distributed yet; pass distributed=False")
        if structure == "last_layer":
            objective = objective.with_params(last_layer(objective.params.names))
        self.objective = objective
        self.params = objective.params
        self.n_params = self.params.numel
        if kind != "regression" and sigma_noise != 1.0:
            raise InvalidInputError(f"sigma_noise is the noise of a Gaussian likelihood (MSELoss); the {kind} "
                                    "likelihood has none: leave it at 1")
        self.sigma_noise = sigma_noise
        self.posterior = None  # built below, after the prior has been validated
        self.prior_precision = prior_precision  # validated before any pass over the data
        self.mean = self.params.flatten(self.params.primals()).clone()
        self._fitted_versions = model_versions(model)
        self.loss, n = self._loss_and_count()
        self.n_data = n
        self.likelihood = Likelihood(kind, objective.reduction, n, _outputs_per_sample(objective, kind))
        self.posterior = build(objective, self.curvature, **structure_options)
        self._check_prior(self._prior_vector(self._prior_precision))

    def __repr__(self) -> str:
        return (f"Laplace(structure={self.structure!r}, curvature={self.curvature!r}, likelihood="
                f"{self.likelihood.kind!r}, P={self.n_params}, N={self.n_data}, prior_precision="
                f"{self.prior_precision.tolist()}, sigma_noise={float(self.sigma_noise):g})")

    # -- hyperparameters ---------------------------------------------------------------------------
    @property
    def prior_precision(self) -> torch.Tensor:
        """The prior precision as set: 0-d (scalar), ``(number of parameter tensors,)`` or ``(P,)``."""
        return self._prior_precision

    @prior_precision.setter
    def prior_precision(self, value) -> None:
        t = torch.as_tensor(value, dtype=self.params.dtype, device=self.params.device).detach().clone()
        vector = self._prior_vector(t)  # validates
        if self.posterior is not None:
            self._check_prior(vector)
        self._prior_precision = t

    def _check_prior(self, prior: torch.Tensor) -> None:
        check = getattr(self.posterior, "check_prior", None)
        if check is not None:
            check(prior)

    @property
    def sigma_noise(self) -> torch.Tensor:
        return self._sigma_noise

    @sigma_noise.setter
    def sigma_noise(self, value) -> None:
        check_real(value, "sigma_noise", positive=True)
        self._sigma_noise = torch.as_tensor(float(value), dtype=self.params.dtype, device=self.params.device)

    def _prior_vector(self, t: torch.Tensor) -> torch.Tensor:
        """0-d for a scalar prior, else ``(P,)`` (layerwise values expanded over their tensors)."""
        if t.dim() == 1 and t.numel() == 1:
            t = t.reshape(())
        if t.dim() == 0:
            out = t
        elif t.dim() == 1 and t.numel() == self.n_params:
            out = t
        elif t.dim() == 1 and t.numel() == len(self.params):
            out = torch.repeat_interleave(t, torch.tensor(self.params.numels, device=t.device))
        else:
            raise InvalidInputError(
                f"prior_precision must be a number, {len(self.params)} values (one per parameter tensor) or "
                f"{self.n_params} (one per parameter), got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise InvalidInputError(f"prior_precision must be finite and > 0, got {t.detach().tolist()}")
        return out

    def _sigma(self, sigma_noise) -> torch.Tensor:
        if sigma_noise is None:
            return self._sigma_noise
        if self.likelihood.kind != "regression":
            raise InvalidInputError("sigma_noise applies to the Gaussian likelihood (MSELoss) only")
        t = torch.as_tensor(sigma_noise, dtype=self.params.dtype, device=self.params.device)
        if t.numel() != 1 or not float(t.detach()) > 0:
            raise InvalidInputError(f"sigma_noise must be one number > 0, got {sigma_noise!r}")
        return t.reshape(())

    # -- evidence ----------------------------------------------------------------------------------
    def log_likelihood(self, sigma_noise=None) -> torch.Tensor:
        """``log p(D | theta*) = -(a L(theta*) + c)`` (0-d tensor)."""
        return -self.likelihood.nll(self.loss, self._sigma(sigma_noise))

    def log_marginal_likelihood(self, prior_precision=None, sigma_noise=None) -> torch.Tensor:
        """Laplace's ``log p(D)`` (module docstring) as a 0-d tensor, at the stored hyperparameters or at the
        ones given (this object's own are not changed); differentiable in tensors that require grad."""
        prior = self._prior_vector(self._prior_precision if prior_precision is None else
                                   torch.as_tensor(prior_precision, dtype=self.params.dtype,
                                                   device=self.params.device))
        sigma = self._sigma(sigma_noise)
        s = self.likelihood.curvature_scale(self.curvature, sigma)
        theta = self.mean
        if prior.dim() == 0:
            scatter = prior * (theta @ theta)
            logdet_prior = self.n_params * prior.log()
        else:
            scatter = (prior * theta * theta).sum()
            logdet_prior = prior.log().sum()
        logdet = self.posterior.logdet(s, prior)
        return -self.likelihood.nll(self.loss, sigma) - 0.5 * (logdet - logdet_prior + scatter)

    def optimize_prior_precision(self, structure: str = "scalar", *, sigma_noise: bool = False,
                                 max_iter: int = 500) -> torch.Tensor:
        """Maximize :meth:`log_marginal_likelihood` over the prior precision (``structure``: ``"scalar"``,
        ``"layerwise"`` or ``"diag"``) and, with ``sigma_noise=True`` (regression), the noise too, with
        ``theta*`` fixed (laplace-torch's ``method="marglik"``). L-BFGS-B on the logarithms with autograd
        gradients (in the log of a scalar prior the objective is concave for a positive semi-definite
        curvature). Sets and returns the new prior precision (the noise is in ``sigma_noise``).

        ``theta*`` is the MAP of the prior it was trained with; for another prior it is not, so alternate
        retraining with this (MacKay's procedure) to reach the evidence maximum of the hyperparameters."""
        from scipy.optimize import minimize

        structure = check_choice(structure, "structure", ("scalar", "layerwise", "diag"))
        check_int(max_iter, "max_iter")
        allowed = getattr(self.posterior, "prior_structures", None)
        if allowed is not None and structure not in allowed:
            raise InvalidInputError(f"the {self.structure} posterior takes {' or '.join(map(repr, allowed))} prior "
                                    f"precisions, not {structure!r}")
        if sigma_noise and self.likelihood.kind != "regression":
            raise InvalidInputError("sigma_noise=True needs the Gaussian likelihood (MSELoss)")
        prepare = getattr(self.posterior, "prepare_many", None)
        if prepare is not None:
            prepare()
        start = self._prior_vector(self._prior_precision)
        size = {"scalar": 1, "layerwise": len(self.params), "diag": self.n_params}[structure]
        if structure == "layerwise" and start.dim() == 1:
            init = torch.stack([start[s].mean() for s in self.params.slices])
        else:
            init = start.mean().expand(size) if start.dim() == 1 or size > 1 else start.reshape(1)
        u0 = init.log()
        if sigma_noise:
            u0 = torch.cat([u0, self._sigma_noise.log().reshape(1)])
        dtype, device = self.params.dtype, self.params.device

        def fun(u_np):
            u = torch.as_tensor(u_np, dtype=dtype, device=device).requires_grad_(True)
            prior = u[:size].exp()
            prior = prior.reshape(()) if structure == "scalar" else prior
            sigma = u[size].exp() if sigma_noise else None
            try:
                value = -self.log_marginal_likelihood(prior, sigma)
            except InvalidInputError:  # not positive definite there (indefinite curvature): not a candidate
                return np.inf, np.zeros_like(u_np)
            (grad,) = torch.autograd.grad(value, u)
            return float(value.detach()), grad.detach().cpu().numpy().astype(np.float64)

        res = minimize(fun, u0.detach().cpu().numpy().astype(np.float64), jac=True, method="L-BFGS-B",
                       bounds=[(-40.0, 40.0)] * len(u0), options={"maxiter": max_iter, "gtol": 1e-10, "ftol": 1e-15})
        if not res.success and "ABNORMAL" not in str(res.message):
            warnings.warn(f"optimize_prior_precision: L-BFGS-B stopped: {res.message}", RuntimeWarning, stacklevel=2)
        u = torch.as_tensor(res.x, dtype=dtype, device=device)
        self.prior_precision = u[:size].exp().reshape(()) if structure == "scalar" else u[:size].exp()
        if sigma_noise:
            self.sigma_noise = float(u[size].exp())
        return self.prior_precision

    # -- posterior ---------------------------------------------------------------------------------
    def _scale_and_prior(self):
        return (self.likelihood.curvature_scale(self.curvature, self._sigma_noise),
                self._prior_vector(self._prior_precision))

    def posterior_precision(self):
        """``Lambda`` as a :class:`~hessian_core.operators.LinearOperator`: dense, diagonal, or for ``"kron"`` /
        ``"ekfac"`` block-diagonal with the blocks in their Kronecker eigenbases (a
        :class:`~hessian_core.kfac.FactoredBlockOperator`: ``.inverse()`` is the covariance as an operator,
        ``.logdet()`` exact)."""
        return self.posterior.precision(*self._scale_and_prior())

    def posterior_covariance(self) -> torch.Tensor:
        """``Lambda^{-1}``: dense ``(P, P)`` (budget checked), or the variances ``(P,)`` for ``"diag"``."""
        s, prior = self._scale_and_prior()
        if self.structure == "diag":
            return self.posterior.inv_matmat(s, prior, torch.ones(self.n_params, 1, dtype=self.mean.dtype,
                                                                  device=self.mean.device))[:, 0]
        from .factor import check_dense_fits

        check_dense_fits(self.n_params, self.mean.dtype, self.objective.budget, 2, "the posterior covariance",
                         "sample() or predictive()")
        return self.posterior.inv_matmat(s, prior, torch.eye(self.n_params, dtype=self.mean.dtype,
                                                             device=self.mean.device))

    def sample(self, n: int = 100, seed: int | None = None) -> torch.Tensor:
        """``n`` draws ``(n, P)`` of the posterior ``N(theta*, Lambda^{-1})`` (ParamSpec order of ``params``)."""
        n = check_int(n, "n")
        self._check_draws(n, self.n_params, f"{n} posterior draws", "fewer draws (n=) per call")
        self._check_unchanged()
        s, prior = self._scale_and_prior()
        return self.mean + self.posterior.sample(s, prior, n, _generator(seed, self.mean.device))

    def predictive(self, x, mode: str = "glm", *, link: str = "probit", n_samples: int = 100,
                   seed: int | None = None) -> Predictive:
        """Posterior predictive at inputs ``x`` (a tensor or tuple of tensors, samples along dim 0).

        ``mode="glm"``: the linearized network (Gaussian over outputs with ``J Lambda^{-1} J^T``), then the
        ``link`` approximation for classification (``"probit"`` or ``"mc"`` with ``n_samples``, see
        :mod:`.predictive`); ``mode="mc"``: the network evaluated at ``n_samples`` posterior draws. Returns
        :class:`~hessian_core.inverse.predictive.Predictive`."""
        mode = check_choice(mode, "mode", MODES)
        link = check_choice(link, "link", LINKS)
        n_samples = check_int(n_samples, "n_samples")
        self._check_unchanged()
        gen = _generator(seed, self.mean.device)
        obj = self.objective
        x = to_device(x, obj.params.device, obj.params.dtype)
        outputs = _rows(x) * self.likelihood.n_outputs
        # the predictive covariances, (inputs, O, O) in either mode
        self._check_draws(1, outputs * self.likelihood.n_outputs, f"the {_rows(x)} output covariances "
                          f"({self.likelihood.n_outputs} x {self.likelihood.n_outputs} each)", "fewer inputs per call")
        if mode == "mc":  # the parameter draws and the network's outputs at each
            self._check_draws(n_samples, self.n_params + outputs, f"{n_samples} posterior draws (mode='mc')",
                              "fewer n_samples per call, or mode='glm'")
        elif link == "mc" and self.likelihood.kind != "regression":  # draws of the logits
            self._check_draws(n_samples, outputs, f"{n_samples} draws of the logits (link='mc')",
                              "fewer n_samples, fewer inputs per call, or link='probit'")
        with model_mode(obj.model, False):
            if mode == "glm":
                f, cov = self._glm(x)
                probs = None
            else:
                f, cov, probs = self._mc(x, n_samples, gen)
        kind = self.likelihood.kind
        if kind == "regression":
            var = torch.diagonal(cov, dim1=1, dim2=2) + self._sigma_noise ** 2
            return Predictive(f, var, f, cov, mode, None)
        if mode == "mc":
            return Predictive(probs, None, f, cov, mode, None)
        return Predictive(classify(kind, f, cov, link, n_samples, gen), None, f, cov, mode, link)

    def _glm(self, x):
        s, prior = self._scale_and_prior()
        P = self.n_params
        n = _rows(x)
        step = sample_chunk(self.objective, 3 * self.likelihood.n_outputs * P)
        fs, covs = [], []
        for a in range(0, n, step):
            f, J = jacobians(self.objective, _take(x, a, min(a + step, n)))
            m = f.shape[0]
            SJ = self.posterior.inv_matmat(s, prior, J.reshape(m * f.shape[1], P).T).detach()
            covs.append(torch.bmm(J, SJ.T.reshape(m, f.shape[1], P).transpose(1, 2)))
            fs.append(f)
        return torch.cat(fs), torch.cat(covs)

    def _mc(self, x, n_samples, gen):
        """``(E f, Cov f, probabilities or None)`` over ``n_samples`` posterior draws of the parameters."""
        thetas = self.mean + self.posterior.sample(*self._scale_and_prior(), n_samples, gen)
        outs = []
        with torch.no_grad():
            for theta in thetas:
                out = self.objective.forward(tuple(self.params.unflatten(theta)), x)
                outs.append(out.reshape(out.shape[0], -1))
        F = torch.stack(outs)  # (S, n, O)
        f = F.mean(0)
        D = F - f
        cov = torch.einsum("sna,snb->nab", D, D) / max(n_samples - 1, 1)
        kind = self.likelihood.kind
        probs = (torch.softmax(F, dim=-1).mean(0) if kind == "classification" else
                 torch.sigmoid(F).mean(0) if kind == "binary" else None)
        return f, cov, probs

    # -- bookkeeping -------------------------------------------------------------------------------
    def _check_draws(self, n: int, numbers: int, what: str, instead: str) -> None:
        """``n`` draws of ``numbers`` values each (and as many temporaries) fit the memory budget."""
        check_fits(2 * n * numbers * self.mean.element_size(), self.objective.budget, what, instead)

    def _loss_and_count(self) -> tuple[float, int]:
        obj = self.objective
        primals = obj.params.primals()
        out = torch.zeros((), dtype=obj.params.dtype, device=obj.params.device)
        count = [0]
        kind = likelihood_kind(obj.loss_fn)

        def contribution(ctx, acc, w):
            if count[0] == 0:
                _check_targets(ctx, kind)
                check_separable(obj, ctx)
            with torch.no_grad():
                acc.add_(ctx.loss(primals), alpha=w)
            count[0] += num_samples(ctx)

        obj.accumulate(contribution, out, desc="loss")
        return float(out), count[0]

    def _check_unchanged(self) -> None:
        if model_versions(self.objective.model) != self._fitted_versions:
            raise InvalidInputError(
                "the model's parameters or buffers changed since this Laplace approximation was built (its "
                "curvature and mean belong to the old values); build a new Laplace for the new model")


def _check_structure_options(build, structure: str, curvature: str, options) -> dict:
    """``options`` as keywords that ``build(objective, curvature, **options)`` accepts (checked by its
    signature and its ``validate`` when it has one), before any pass over the data."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidInputError(f"structure_options must be a dict of keywords, got {options!r}")
    if options:
        try:
            inspect.signature(build).bind(None, curvature, **options)
        except TypeError:
            raise InvalidInputError(f"structure={structure!r} takes no structure_options (got {sorted(options)}); "
                                    "they are for 'kron' and 'ekfac'") from None
    validate = getattr(build, "validate", None)
    if validate is not None:
        validate(curvature, **options)
    return dict(options)


def last_layer(names: list[str]) -> list[str]:
    """The parameters of the module that owns the last parameter (``nn.Sequential``: the last layer)."""
    owner = names[-1].rsplit(".", 1)[0] if "." in names[-1] else ""
    return [n for n in names if (n.rsplit(".", 1)[0] if "." in n else "") == owner]


def _outputs_per_sample(objective, kind: str) -> int:
    shape = objective.validate().output_shape
    if not (isinstance(shape, tuple) and len(shape) >= 1 and all(isinstance(s, int) for s in shape)):
        raise InvalidInputError("a Laplace approximation needs a model that returns one tensor")
    if kind == "classification" and len(shape) != 2:
        raise InvalidInputError(f"the categorical likelihood needs outputs of shape (N, C), got {shape}")
    return max(1, int(np.prod(shape[1:])))


def _check_targets(ctx, kind: str) -> None:
    y = ctx.targets
    if kind == "classification" and (y.dtype.is_floating_point or y.dim() != 1):
        raise InvalidInputError(
            f"the categorical likelihood needs class-index targets of shape (N,), got {tuple(y.shape)} {y.dtype} "
            "(soft labels are not a likelihood of the data)")


def _generator(seed, device):
    seed = check_seed(seed)
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def _rows(x) -> int:
    return int(x.shape[0]) if isinstance(x, torch.Tensor) else _rows(x[0])


def _take(x, a, b):
    return x[a:b] if isinstance(x, torch.Tensor) else type(x)(_take(t, a, b) for t in x)
