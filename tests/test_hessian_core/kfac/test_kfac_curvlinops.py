"""Agreement with curvlinops' KFACLinearOperator / EKFACLinearOperator / KFACInverseLinearOperator (3.0.1) on
the same models, data and settings, to float64 precision where the definitions coincide, and the exact
factor where they differ (see docs/kfac.md, "Differences from curvlinops")."""

import warnings

import pytest
import torch
from optional import need
from torch import nn

import hessian_core as hc

curvlinops = need("curvlinops")

D = torch.float64
TYPES = {"exact": "type-2", "empirical": "empirical"}


def theirs(cls, model, loss, batches, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op = cls(model, loss, list(model.parameters()), batches, check_deterministic=False, **kw)
        return op @ torch.eye(op.shape[1], dtype=D)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def split(X, Y):
    return [(X[:4], Y[:4]), (X[4:8], Y[4:8]), (X[8:], Y[8:])]  # unequal batches: 4, 4, 2


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


@pytest.mark.parametrize("loss_name,separate_bias", [("ce", True), ("ce", False), ("ce-sum", True), ("mse", True),
                                                      ("mse", False), ("mse-sum", True), ("bce", True)])
def test_mlp_kfac_and_ekfac_agree(loss_name, separate_bias):
    torch.manual_seed(1)
    X = torch.randn(10, 4, dtype=D)
    loss, Y = {
        "ce": (nn.CrossEntropyLoss(), torch.randint(0, 3, (10,))),
        "ce-sum": (nn.CrossEntropyLoss(reduction="sum"), torch.randint(0, 3, (10,))),
        "mse": (nn.MSELoss(), torch.randn(10, 3, dtype=D)),
        "mse-sum": (nn.MSELoss(reduction="sum"), torch.randn(10, 3, dtype=D)),
        "bce": (nn.BCEWithLogitsLoss(), torch.randint(0, 2, (10, 3)).to(D)),
    }[loss_name]
    model, data = mlp(), split(X, Y)
    for ours_type, their_type in TYPES.items():
        for ours_cls, their_cls in ((hc.KFACOperator, curvlinops.KFACLinearOperator),
                                    (hc.EKFACOperator, curvlinops.EKFACLinearOperator)):
            ours = ours_cls(model, loss, data, type=ours_type, separate_bias=separate_bias).to_dense()
            ref = theirs(their_cls, model, loss, data, fisher_type=their_type,
                         separate_weight_and_bias=separate_bias)
            if ours_type == "empirical" and loss.reduction == "mean" and not isinstance(loss, nn.CrossEntropyLoss):
                # curvlinops' empirical Fisher of an elementwise mean loss takes each sample's loss as the sum
                # over its C outputs; ours is loss_fn on the sample (the mean over them): a factor C
                ref = ref / Y.shape[1]
            assert rel(ours, ref) < 1e-12, (ours_cls.__name__, ours_type)


def test_weight_sharing_expand_reduce_and_convolutions():
    torch.manual_seed(2)

    class Pool(nn.Module):
        def forward(self, x):
            return x.mean(1)

    X = torch.randn(10, 6, 4, dtype=D)
    positionwise = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    Ys = torch.randn(10, 6, 3, dtype=D)
    pooled = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), Pool(), nn.Linear(5, 3)).double()
    Yp = torch.randn(10, 3, dtype=D)
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 2, stride=2), nn.Flatten(),
                        nn.Linear(2 * 2 * 2, 3)).double()
    # more samples than inputs per patch: A has no zero eigenvalues under 'reduce', so its eigenbasis (hence
    # EKFAC) is unique; within a degenerate eigenspace any basis is as valid, and libraries may differ there
    Xc, yc = torch.randn(30, 2, 5, 5, dtype=D), torch.randint(0, 3, (30,))
    mse, ce = nn.MSELoss(), nn.CrossEntropyLoss()
    for approx in ("expand", "reduce"):
        # pooled sequence and CNN: the same for both types and both approximations, EKFAC too
        for model, loss, data in ((pooled, mse, split(X, Yp)), (cnn, ce, split(Xc, yc))):
            for ours_type, their_type in TYPES.items():
                ours = hc.KFACOperator(model, loss, data, type=ours_type, approx=approx).to_dense()
                ref = theirs(curvlinops.KFACLinearOperator, model, loss, data, fisher_type=their_type,
                             kfac_approx=approx)
                if ours_type == "empirical" and loss is mse:
                    ref = ref / 3
                assert rel(ours, ref) < 1e-12, (approx, ours_type)
            ours = hc.EKFACOperator(model, loss, data, approx=approx).to_dense()
            ref = theirs(curvlinops.EKFACLinearOperator, model, loss, data, fisher_type="type-2", kfac_approx=approx)
            assert rel(ours, ref) < 1e-12, (approx, "EKFAC", type(model[0]).__name__)
    # one loss term per position (outputs (B, T, C)), position-wise network: expand agrees
    data = split(X, Ys)
    ours = hc.KFACOperator(positionwise, mse, data).to_dense()
    assert rel(ours, theirs(curvlinops.KFACLinearOperator, positionwise, mse, data, fisher_type="type-2")) < 1e-12
    # ... the empirical type: curvlinops treats each of the T*C outputs' squared errors as a sample's loss
    ours = hc.KFACOperator(positionwise, mse, data, type="empirical").to_dense()
    ref = theirs(curvlinops.KFACLinearOperator, positionwise, mse, data, fisher_type="empirical")
    assert rel(ours, ref / (6 * 3)) < 1e-12
    # ... reduce: curvlinops sums the columns of different positions' loss terms before squaring them (products
    # between different terms, which the GGN does not have); ours squares each term's column: they differ
    ours = hc.KFACOperator(positionwise, mse, data, approx="reduce").to_dense()
    ref = theirs(curvlinops.KFACLinearOperator, positionwise, mse, data, fisher_type="type-2", kfac_approx="reduce")
    assert rel(ours, ref) > 0.1


def test_inverses_and_logdet_agree():
    torch.manual_seed(3)
    X, y, Ym = torch.randn(10, 4, dtype=D), torch.randint(0, 3, (10,)), torch.randn(10, 3, dtype=D)
    model, data = mlp(), split(X, y)
    params = list(model.parameters())
    ce = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_kfac = curvlinops.KFACLinearOperator(model, ce, params, data, fisher_type="type-2",
                                                   check_deterministic=False)
        exact = curvlinops.KFACInverseLinearOperator(their_kfac, damping=1e-2, use_exact_damping=True)
        heuristic = curvlinops.KFACInverseLinearOperator(their_kfac, damping=1e-2, use_heuristic_damping=True,
                                                         min_damping=0.0)
        I = torch.eye(their_kfac.shape[1], dtype=D)  # noqa: E741
        ref_exact, ref_heuristic = exact @ I, heuristic @ I
        mse_kfac = curvlinops.KFACLinearOperator(model, nn.MSELoss(), params, split(X, Ym), fisher_type="type-2",
                                                 check_deterministic=False)
        ref_logdet = float(mse_kfac.logdet)
    ours = hc.KFACOperator(model, ce, data)
    assert rel(ours.inverse(1e-2).to_dense(), ref_exact) < 1e-10
    # Martens & Grosse's factored damping: the same on the weight blocks; a bias alone (input factor 1) is damped
    # exactly here, (G + damping I)^-1, where curvlinops reuses the weight's damped G, (G + damping^(1/2)/pi I)^-1
    pi = ours.inverse(1e-2, split="pi")
    for key, (idx, b) in zip(pi.keys, pi.blocks):
        if key.endswith("weight"):
            assert rel(b.to_dense(), ref_heuristic[idx][:, idx]) < 1e-10
        else:
            G = ours.factors[key.split(".")[0]][1]
            assert rel(b.to_dense(), torch.linalg.inv(G + 1e-2 * torch.eye(G.shape[0], dtype=D))) < 1e-10
    # log-determinants: the same for a nonsingular KFAC (MSE); cross-entropy's G is singular (softmax's Hessian
    # annihilates the all-ones direction), where ours is -inf and curvlinops' the log of round-off
    assert abs(hc.KFACOperator(model, nn.MSELoss(), split(X, Ym)).logdet() - ref_logdet) < 1e-10 * abs(ref_logdet)
    assert ours.logdet() == float("-inf")
