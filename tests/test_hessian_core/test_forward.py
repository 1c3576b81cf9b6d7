"""analysis_scope: what a forward needs inside hessian_core, all put back afterwards, errors included."""

import pytest
import torch
import torch.utils.checkpoint as checkpoint_module
from torch import nn
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize

import hessian_core as hc
from hessian_core.forward import analysis_scope

D = torch.float64


def globals_now():
    return (checkpoint_module.CheckpointFunction.__dict__.get("apply"),
            checkpoint_module._checkpoint_without_reentrant_generator,
            module_globals._global_backward_hooks, module_globals._global_backward_pre_hooks,
            parametrize._cache_enabled, parametrize._cache)


class Failing(nn.Module):
    def __init__(self):
        super().__init__()
        self.lrn = nn.CrossMapLRN2d(3)
        self.lrn.register_full_backward_hook(lambda *a: None)

    def forward(self, x):
        checkpoint_module.checkpoint(self.lrn, x, use_reentrant=True)
        raise ValueError("boom")


@pytest.mark.parametrize("raises", [False, True])
def test_everything_is_put_back(raises):
    model = Failing()
    before, hooks = globals_now(), (model.lrn._backward_hooks, dict(model.lrn._backward_hooks))
    with parametrize.cached():
        outer = globals_now()
        try:
            with analysis_scope(model, used={}):
                assert "forward" in vars(model.lrn)  # the composite is in place
                assert not model.lrn._backward_hooks
                assert parametrize._cache_enabled == 0
                if raises:
                    model(torch.randn(1, 3, 2, 2))
        except ValueError:
            pass
        assert globals_now() == outer
    assert globals_now() == before
    assert "forward" not in vars(model.lrn)
    assert model.lrn._backward_hooks is hooks[0] and dict(model.lrn._backward_hooks) == hooks[1]


def test_checkpointed_model_runs_and_users_checkpoint_still_works_afterwards():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.b(checkpoint_module.checkpoint(torch.tanh, self.a(x), use_reentrant=True))

    model = Net().to(D)
    X, Y = torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D)
    H = hc.hessian(model, nn.MSELoss(), (X, Y))
    assert torch.allclose(H, H.T)
    nn.MSELoss()(model(X), Y).backward()  # torch's own checkpoint machinery, unpatched
    assert model.a.weight.grad is not None


def test_checkpointing_that_starts_after_the_first_batch_is_refused_by_name():
    # Products of a model whose first batch needed nothing run it directly (no scopes that cost on every
    # product); reentrant checkpointing it starts later cannot be differentiated by .grad(): a named error
    class Late(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.checkpointing = nn.Linear(3, 4), nn.Linear(4, 2), False

        def forward(self, x):
            h = self.a(x)
            h = checkpoint_module.checkpoint(torch.tanh, h, use_reentrant=True) if self.checkpointing else torch.tanh(h)
            return self.b(h)

    model = Late().double()
    X, Y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    v = torch.ones(op.size, dtype=torch.float64)
    before = op.matvec(v)
    model.checkpointing = True
    with pytest.raises(hc.InvalidInputError, match="checkpoint"):
        op.matvec(v)
    # checkpointing from the first batch on: run as the plain call, the same Hessian
    fresh = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    torch.testing.assert_close(fresh.matvec(v), before, rtol=1e-12, atol=1e-14)
    assert fresh.objective.probe.composites == ("checkpoint",)


class _Scale(nn.Module):
    def forward(self, w):
        return 2 * w


def _standard_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)


@pytest.mark.parametrize("change", [None, "backward hook", "global backward hook", "forward hook",
                                    "parametrization", "custom module", "forward set on the instance"])
def test_standard_models_skip_the_scopes_only_without_hooks_or_custom_modules(change):
    """A model of plain torch.nn layers is called as it is (model_mode.standard); anything a scope exists
    for makes it take them: a backward hook that doubles gradients changes nothing (the reference is taken
    after it is removed)."""
    from hessian_core.forward import model_mode

    model = _standard_model()
    handle = None
    if change == "backward hook":  # doubles the gradient flowing through: set aside inside hessian_core
        handle = model[2].register_full_backward_hook(lambda m, gi, go: tuple(2 * g for g in gi))
    elif change == "global backward hook":
        handle = nn.modules.module.register_module_full_backward_hook(lambda m, gi, go: None)
    elif change == "forward hook":
        handle = model[1].register_forward_hook(lambda m, i, o: o)
    elif change == "parametrization":
        parametrize.register_parametrization(model[0], "weight", _Scale())
    elif change == "custom module":
        model.append(nn.Sequential())
        model[3].__class__ = type("Custom", (nn.Sequential,), {})
    elif change == "forward set on the instance":  # keeps its output as an attribute: put back afterwards
        def keep(x, lin=model[2]):
            lin.last = nn.functional.linear(x, lin.weight, lin.bias)
            return lin.last

        model[2].forward = keep
        model[2].last = before = torch.zeros(())
    try:
        with model_mode(model, False) as mode:
            assert mode.standard == (change is None)
        X, Y = torch.randn(5, 3, dtype=D), torch.randn(5, 2, dtype=D)
        op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), progress=False)
        v = torch.randn(op.size, dtype=D)
        params = [p for p in model.parameters()]

        def f(*ps):
            return nn.MSELoss()(torch.func.functional_call(model, dict(zip([n for n, _ in model.named_parameters()],
                                                                             ps)), (X,)), Y)

        with torch.no_grad():  # after an update, as in an optimizer's loop
            params[-1].add_(0.1)
        Hv = op.matvec(v)
    finally:
        if handle is not None:
            handle.remove()
    if change == "forward set on the instance":
        assert model[2].last is before
    vs = list(torch.split(v, [p.numel() for p in params]))
    _, ref = torch.autograd.functional.hvp(f, tuple(params), tuple(t.view_as(p) for t, p in zip(vs, params)))
    torch.testing.assert_close(Hv, torch.cat([r.reshape(-1) for r in ref]), rtol=1e-12, atol=1e-12)
