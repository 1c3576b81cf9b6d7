"""Levenberg-Marquardt adaptation of a damping ``lambda`` (or of a trust radius) from the gain ratio.

``rho = (f(theta + s) - f(theta)) / m(s)``: the actual change of the loss over the change the quadratic
model ``m`` predicted. ``rho`` near 1: the model is trusted, damp less; ``rho`` small: damp more; ``rho <= 0``
or not finite: the step is rejected.
"""

from __future__ import annotations

import math


def gain_ratio(actual: float, predicted: float, roundoff: float = 0.0) -> float:
    """``actual / predicted`` change; ``-inf`` when the step made things worse or is not finite, ``1`` when
    both are 0 (nothing to gain: the model is exact).

    ``roundoff`` (``delta >= 0``): the error of evaluating the loss. The ratio is then
    ``(actual - delta) / (predicted - delta)`` (Conn, Gould & Toint 2000, section 17.4.2), which tends to 1
    when both changes are below the round-off level instead of being the ratio of two round-off errors.
    """
    if not math.isfinite(actual):
        return -math.inf
    if predicted >= 0:
        return 1.0 if actual <= 0 and predicted == 0 else -math.inf
    return (actual - roundoff) / (predicted - roundoff)


class LevenbergMarquardt:
    """Damping ``lambda`` adapted by Martens' rule (Martens 2010, section 4.1, after Moré 1978).

    ``update(rho)``: ``lambda *= boost`` if ``rho < low``; ``lambda *= drop`` if ``rho > high``;
    ``reject()``: ``lambda *= reject_boost`` after a rejected step. A zero ``lambda`` that must grow
    starts at ``floor``. ``lambda`` stays in ``[0, ceiling]``.
    """

    def __init__(self, damping: float, *, boost: float = 1.5, drop: float = 2 / 3, low: float = 0.25,
                 high: float = 0.75, reject_boost: float = 4.0, floor: float = 1e-8, ceiling: float = 1e12):
        self.damping = float(damping)
        self.boost, self.drop, self.low, self.high = boost, drop, low, high
        self.reject_boost, self.floor, self.ceiling = reject_boost, floor, ceiling

    def _grow(self, factor: float) -> float:
        self.damping = min(max(self.damping * factor, self.floor), self.ceiling)
        return self.damping

    def update(self, rho: float) -> float:
        if rho < self.low:
            return self._grow(self.boost)
        if rho > self.high:
            self.damping *= self.drop
        return self.damping

    def reject(self) -> float:
        return self._grow(self.reject_boost)
