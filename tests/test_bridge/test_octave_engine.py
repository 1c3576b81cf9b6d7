"""MatlabSession against a real interpreter: GNU Octave through bridge.octave_engine, with the toolbox's
dlnetworkToSpec / updateLearnables and the test doubles of dlnetwork (tests/octave). Skipped without Octave."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from matlab_refs import fc, half_mse, ref_hessian, unpack

from bridge import MatlabSession

pytestmark = pytest.mark.skipif(shutil.which("octave-cli") is None and shutil.which("octave") is None,
                                reason="GNU Octave is not installed")


def test_pull_hessian_newton_push_through_octave():
    from bridge.octave_engine import start_octave

    eng = start_octave(test_doubles=True)
    try:
        eng.eval("net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) reluLayer "
                 "fullyConnectedLayer(2)]);", nargout=0)
        eng.eval("X = dlarray(randn(3, 5), 'CB'); T = randn(2, 5);", nargout=0)
        s = MatlabSession(engine=eng)
        spec = s.pull_spec("net")
        learn = [(lay, par, np.asarray(v, dtype=np.float64)) for lay, par, v in
                 zip(spec["Learnables"]["Layer"], spec["Learnables"]["Parameter"], spec["Learnables"]["Value"])]
        assert [v.shape for _, _, v in learn] == [(4, 3), (4, 1), (2, 4), (2, 1)]
        X, _ = s.pull_data("X")
        T, _ = s.pull_data("T")
        Xt, Tt = torch.tensor(X), torch.tensor(T)

        def f(theta):
            W1, b1, W2, b2 = unpack(theta, learn)
            return half_mse(fc(W2, b2, torch.relu(fc(W1, b1, Xt))), Tt, 5)

        np.testing.assert_allclose(s.hessian(), ref_hessian(f, learn), rtol=1e-10, atol=1e-12)
        result = s.newton_update(damping=1e-2)
        pulled = s.pull_spec("net")["Learnables"]["Value"]
        for got, want, (_, _, old) in zip(pulled, result["values"], learn):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)  # single in the double
            assert not np.allclose(np.asarray(got), old)
        assert result["loss_after"] < result["loss_before"]
    finally:
        eng.quit()
