"""Posterior predictive of a Laplace approximation: the result type and the link approximations.

The linearized (GLM) predictive of outputs ``f(x)`` is Gaussian, ``N(f(x; theta*), J Sigma J^T)`` with ``J``
the Jacobian of the outputs and ``Sigma`` the posterior covariance (Immer et al. 2021; laplace-torch's
``pred_type="glm"``). Through a softmax or a sigmoid it has no closed form:

* ``link="probit"``: ``softmax(f / sqrt(1 + pi/8 * diag(cov)))`` (MacKay 1992; laplace-torch's default);
  for a sigmoid the same formula is MacKay's probit approximation;
* ``link="mc"``: the mean of ``softmax(f_s)`` over draws ``f_s`` of the Gaussian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Predictive:
    """Predictive distribution at ``n`` inputs (outputs flattened per sample: ``O`` of them).

    Attributes:
        mean: regression: ``E[y]`` ``(n, O)``; classification: class probabilities ``(n, C)``; binary: the
            probability of each output being 1 ``(n, O)``.
        variance: regression: ``Var[y] = diag Cov[f] + sigma_noise^2`` ``(n, O)``; ``None`` otherwise.
        f_mean: ``E[f]`` ``(n, O)`` (``f(x; theta*)`` for the GLM predictive, the sample mean for MC).
        f_covariance: ``Cov[f]`` ``(n, O, O)`` (``J Sigma J^T`` for the GLM, the sample covariance for MC).
        mode, link: how it was computed.
    """

    mean: torch.Tensor
    variance: torch.Tensor | None
    f_mean: torch.Tensor
    f_covariance: torch.Tensor
    mode: str
    link: str | None


def gaussian_draws(mean: torch.Tensor, cov: torch.Tensor, n: int, generator) -> torch.Tensor:
    """``n`` draws ``(n, m, O)`` of ``N(mean[i], cov[i])`` for ``mean`` ``(m, O)``, ``cov`` ``(m, O, O)``
    (positive semi-definite: square roots by eigendecomposition, clipped at 0)."""
    lam, V = torch.linalg.eigh((cov + cov.transpose(1, 2)) / 2)
    root = V * lam.clamp_min(0).sqrt()[:, None, :]
    Z = torch.randn(n, *mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
    return mean + torch.einsum("mab,smb->sma", root, Z)


def classify(kind: str, f: torch.Tensor, cov: torch.Tensor, link: str, n_samples: int, generator) -> torch.Tensor:
    """Probabilities from a Gaussian over logits: ``kind`` ``"classification"`` (softmax) or ``"binary"``
    (sigmoid), ``link`` ``"probit"`` or ``"mc"``."""
    squash = (lambda z: torch.softmax(z, dim=-1)) if kind == "classification" else torch.sigmoid
    if link == "probit":
        return squash(f / torch.sqrt(1 + math.pi / 8 * torch.diagonal(cov, dim1=1, dim2=2)))
    return squash(gaussian_draws(f, cov, n_samples, generator)).mean(0)
