"""The data contract: every pass over the data must present the same samples; a loader whose passes
differ is refused with what changed, before an eigensolver burns its budget on a moving matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import autograd_hessian
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import hessian_core as hc

D = torch.float64


def problem(n=20):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    return model, torch.randn(n, 3, dtype=D), torch.randn(n, 2, dtype=D)


def test_shuffled_loader_dropping_the_last_batch_is_refused():
    model, X, Y = problem(22)
    loader = DataLoader(TensorDataset(X, Y), batch_size=4, shuffle=True, drop_last=True)
    with pytest.raises(hc.InvalidInputError, match="changed between two passes"):
        for _ in range(6):  # two passes drop the same 2 of 22 samples with probability 1/231
            hc.HessianOperator(model, nn.MSELoss(), loader)  # refused when built, before any product
    with pytest.raises(hc.InvalidInputError, match="shuffle=False"):
        for _ in range(6):
            hc.hessian(model, nn.MSELoss(), loader)  # also a result from a single pass


def test_data_changing_after_the_operator_was_built_is_refused():
    model, X, Y = problem(12)
    loader = DataLoader(TensorDataset(X, Y), batch_size=4)
    op = hc.HessianOperator(model, nn.MSELoss(), loader)
    v = torch.randn(op.shape[0], dtype=D)
    op.matvec(v)
    X.mul_(2)  # the dataset's tensor, changed in place: a DataLoader's data is not fixed
    with pytest.raises(hc.InvalidInputError, match="build a new operator"):
        op.matvec(v)
    torch.testing.assert_close(hc.HessianOperator(model, nn.MSELoss(), loader).matvec(v),
                               autograd_hessian(model, nn.MSELoss(), X, Y) @ v)


def test_shuffling_the_same_samples_in_eval_mode_is_the_same_objective():
    model, X, Y = problem(20)
    loader = DataLoader(TensorDataset(X, Y), batch_size=6, shuffle=True)  # 6, 6, 6, 2 in a new order each pass
    op = hc.HessianOperator(model, nn.MSELoss(), loader)
    ref = autograd_hessian(model, nn.MSELoss(), X, Y)
    V = torch.randn(op.shape[0], 3, dtype=D)
    for _ in range(3):
        torch.testing.assert_close(op @ V, ref @ V, rtol=1e-10, atol=1e-12)


class Augmented(Dataset):
    """Random horizontal flips: the same set of pixel values, in other places."""

    def __init__(self, X, Y):
        self.X, self.Y = X, Y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        x = self.X[i]
        return (x.flip(-1) if torch.rand(()) < 0.5 else x), self.Y[i]


def test_random_augmentation_is_refused():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2)).to(D)
    X, Y = torch.randn(12, 2, 4, dtype=D), torch.randn(12, 2, dtype=D)
    with pytest.raises(hc.InvalidInputError, match="samples differ"):
        for _ in range(5):  # (all 12 flips agreeing between two passes: probability 2^-12)
            hc.GGNOperator(model, nn.MSELoss(), DataLoader(Augmented(X, Y), batch_size=4))


class RandomLength(IterableDataset):
    def __init__(self, X, Y):
        self.X, self.Y = X, Y

    def __iter__(self):
        n = int(torch.randint(10, 20, ()))
        return iter([(self.X[i], self.Y[i]) for i in range(n)])


def test_a_changing_number_of_samples_is_refused():
    model, X, Y = problem(20)
    with pytest.raises(hc.InvalidInputError, match="changed between two passes"):
        for _ in range(6):
            hc.HessianOperator(model, nn.MSELoss(), DataLoader(RandomLength(X, Y), batch_size=4))


def test_train_mode_needs_the_same_batches_in_the_same_order():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).to(D)
    X, Y = torch.randn(12, 3, dtype=D), torch.randn(12, 1, dtype=D)
    loader = DataLoader(TensorDataset(X, Y), batch_size=4, shuffle=True)
    with pytest.raises(hc.InvalidInputError, match="batch .* differs"):
        for _ in range(6):  # batch statistics depend on which samples share a batch
            hc.HessianOperator(model, nn.MSELoss(), loader, train_mode=True)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=D)
    fixed = DataLoader(TensorDataset(X, Y), batch_size=4)
    op = hc.HessianOperator(model, nn.MSELoss(), fixed, train_mode=True)
    torch.testing.assert_close(op.matvec(v), op.matvec(v))


def test_numpy_data_is_refused_with_what_to_pass():
    model, X, Y = problem()
    with pytest.raises(hc.InvalidInputError, match="torch.from_numpy"):
        hc.hessian(model, nn.MSELoss(), (X.numpy(), Y.numpy()))
    with pytest.raises(hc.InvalidInputError, match="numpy"):
        hc.hessian(model, nn.MSELoss(), (np.asarray(X), Y))
