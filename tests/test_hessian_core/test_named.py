"""Per-layer results keyed by name: hessian_blocks (labelled, summaries, clear errors for unknown groups),
hessian_diagonal, NewtonStep and the spectral results' parameter-shaped views; compact reprs."""

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc

D = torch.float64


def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    return model, nn.MSELoss(), (X, Y), autograd_hessian(model, nn.MSELoss(), X, Y)


SPANS = {"0": (0, 20), "2": (20, 44), "4": (44, 54)}


def test_blocks_by_module_are_labelled_and_summarized():
    model, loss_fn, data, H = setup()
    blocks = hc.hessian_blocks(model, loss_fn, data, groups="module")
    assert isinstance(blocks, list) and len(blocks) == 3 and blocks.names == ["0", "2", "4"]
    assert blocks.params["2"] == ["2.weight", "2.bias"]
    for name, (a, b) in SPANS.items():
        torch.testing.assert_close(blocks[name], H[a:b, a:b], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(blocks[1], blocks["2"])  # positions work as before
    summary = blocks.summary()
    for name, (a, b) in SPANS.items():
        ev = torch.linalg.eigvalsh(H[a:b, a:b])
        row = summary[name]
        assert row["size"] == b - a
        assert row["trace"] == pytest.approx(float(H[a:b, a:b].trace()), rel=1e-10)
        assert row["min_eigenvalue"] == pytest.approx(float(ev[0]), abs=1e-10)
        assert row["max_eigenvalue"] == pytest.approx(float(ev[-1]), rel=1e-10)
    table = blocks.table()
    assert table.splitlines()[0].split()[:3] == ["block", "size", "trace"] and len(table.splitlines()) == 4
    assert "HessianBlocks(3 blocks" in repr(blocks) and "tensor(" not in repr(blocks)


def test_blocks_groups_by_parameter_list_dict_and_module_name():
    model, loss_fn, data, H = setup()
    per_param = hc.hessian_blocks(model, loss_fn, data)
    assert per_param.names == [n for n, _ in model.named_parameters()]
    torch.testing.assert_close(per_param["2.bias"], H[40:44, 40:44], rtol=1e-10, atol=1e-12)
    assert hc.hessian_blocks(model, loss_fn, data, groups="parameter").names == per_param.names
    custom = hc.hessian_blocks(model, loss_fn, data, groups={"first and last": ["0", "4.weight"]})
    idx = torch.cat([torch.arange(0, 20), torch.arange(44, 52)])
    torch.testing.assert_close(custom["first and last"], H[idx][:, idx], rtol=1e-10, atol=1e-12)
    listed = hc.hessian_blocks(model, loss_fn, data, groups=[["0.bias", "4.weight"], "2"])
    assert listed.names == ["0.bias+4.weight", "2"]


@pytest.mark.parametrize("groups, match", [
    ("layer", "groups='layer' is not understood"),
    ("modules", "not understood"),
    ([["conv9"]], "'conv9' names no parameter or module"),
    ([], "empty"),
    (3, "groups must be"),
])
def test_unknown_groups_are_clear_errors(groups, match):
    """groups='layer' used to be split into the characters 'l', 'a', 'y', ..."""
    model, loss_fn, data, _ = setup()
    with pytest.raises(hc.InvalidInputError, match=match):
        hc.hessian_blocks(model, loss_fn, data, groups=groups)


def test_diagonal_and_parameter_views_are_keyed_by_name():
    model, loss_fn, data, H = setup()
    diag = hc.hessian_diagonal(model, loss_fn, data)
    torch.testing.assert_close(diag["4.bias"], H.diagonal()[52:54], rtol=1e-10, atol=1e-12)
    assert [t.shape for t in diag] == [p.shape for p in model.parameters()]
    assert dict(diag.items()).keys() == dict(model.named_parameters()).keys()
    op = hc.HessianOperator(model, loss_fn, data)
    eig = hc.eigsh(op, k=2, seed=0)
    assert eig.param_vectors[0]["0.weight"].shape == (5, 3)
    est = hc.diagonal_estimate(op, num_matvecs=54 * 2, method="xdiag", seed=0)
    torch.testing.assert_close(est.param_estimate["2.weight"], diag["2.weight"], rtol=1e-8, atol=1e-10)


def test_newton_step_is_named_and_prints_compactly():
    model, loss_fn, data, H = setup()
    res = hc.newton_step(model, loss_fn, data, damping=10.0)
    assert res.step["0.weight"].shape == (5, 3) and res.params["4.bias"].shape == (2,)
    text = repr(res)
    assert text.startswith("NewtonStep(P=54") and "tensor(" not in text and len(text) < 400
    assert "method='cholesky'" in text


def test_plot_is_part_of_the_public_api():
    assert hc.plot.plot_spectral_density is not None and "plot" in hc.__all__
