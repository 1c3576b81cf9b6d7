"""The functional entry points list every option they take in their own docstrings (help(hc.hessian)
shows them), and an unknown or misspelt option is an error that names the options."""

import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.objective import OBJECTIVE_OPTIONS, keyword_options
from hessian_core.operators.base import LinearOperator

ENTRY_POINTS = [hc.hessian, hc.hvp, hc.hessian_diagonal, hc.hessian_blocks, hc.newton_step]


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_every_option_is_listed_in_the_docstring(fn):
    """Before, hvp and hessian_diagonal said 'see the module docstring', hessian named its options without
    saying what they do, and none listed self_check."""
    options = set(OBJECTIVE_OPTIONS) | set(keyword_options(hc.HessianOperator, LinearOperator))
    assert {"reduction", "memory_budget", "strategy", "chunk_size", "self_check"} <= options
    missing = [o for o in sorted(options) if f"* ``{o}``" not in fn.__doc__]
    assert not missing, f"{fn.__name__} does not list {missing}"


def small():
    torch.manual_seed(0)
    return nn.Linear(3, 2).double(), nn.MSELoss(), (torch.randn(5, 3, dtype=torch.float64),
                                                   torch.randn(5, 2, dtype=torch.float64))


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_operator_options_work_everywhere_and_unknown_ones_are_named(fn):
    """newton_step passed its options to Objective, so strategy=, chunk_size= and self_check= (documented)
    raised TypeError; a misspelt option raised "Objective.__init__() got an unexpected keyword argument"."""
    model, loss_fn, data = small()
    args = (torch.ones(8, dtype=torch.float64),) if fn is hc.hvp else ()
    fn(model, loss_fn, data, *args, strategy="generic", chunk_size=3, self_check=False)
    with pytest.raises(hc.InvalidInputError, match=r"unknown option 'memory_buget' \(did you mean 'memory_budget'"):
        fn(model, loss_fn, data, *args, memory_buget="1GB")
    with pytest.raises(hc.InvalidInputError, match="unknown option 'strategy'.*mc_samples"):
        hc.GGNOperator(model, loss_fn, data, strategy="generic")
