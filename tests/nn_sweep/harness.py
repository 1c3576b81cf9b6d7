"""References for the torch.nn sweep that share nothing with the engine and use no second derivative of
PyTorch's: central finite differences of first-order gradients (``loss.backward()`` on a private deep copy
of the model), at two step sizes to detect kinks, and the user-visible state of a model, compared bit for bit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

D = torch.float64


@dataclass
class Setup:
    """One sweep case: what a user hands to hessian_core.

    ``reference_model``: a model computing the intended function whose *first-order* PyTorch gradient is
    right (same parameters in the same order), for the few modules whose PyTorch gradient is not the
    gradient of what their forward computes (``Embedding(max_norm=...)``, ``scale_grad_by_freq``); default
    the model itself. ``reference_data``: one batch holding all samples (default: the data, if one batch).
    ``reference_loss_fn``: the same for the loss (``CTCLoss``: PyTorch's gradient with respect to the
    log-probabilities assumes they come from a log_softmax). ``held``: parameter rows whose gradient PyTorch
    defines as zero (``padding_idx``), held constant: their rows and columns of the reference are zeroed.
    """

    model: nn.Module
    loss_fn: object
    data: object
    options: dict
    reference_model: nn.Module | None = None
    reference_data: tuple | None = None
    reference_loss_fn: object = None  # the loss with a right first-order gradient, where PyTorch's is not
    held: dict | None = None  # {parameter name: indices held constant (zero rows and columns), as padding_idx}


class DocumentedDraws(TorchFunctionMode):
    """The random draws hessian_core documents for forwards that draw (docs/models.md), written here from
    that description: a dropout mask is ``torch.rand(shape) < 1 - p`` (one draw per sample and channel for
    channel dropout), RReLU's slopes ``lower + (upper - lower) * torch.rand(shape)``, ``randn_like`` is
    ``torch.randn(shape)``. The reference runs the user's model under it, so both see the same draws."""

    CHANNEL = {F.dropout1d: (2, 3), F.dropout2d: (3, 4), F.dropout3d: (4, 5), F.feature_alpha_dropout: None}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (F.dropout, F.alpha_dropout, *self.CHANNEL):
            names = ("input", "p", "training", "inplace")
            a = dict(zip(names, args), **kwargs)
            x, p, training = a["input"], a.get("p", 0.5), a.get("training", True)
            if training and p > 0:
                shape = tuple(x.shape)
                if func in self.CHANNEL:
                    batched = func is F.feature_alpha_dropout or func is F.dropout2d or x.dim() == self.CHANNEL[func][1]
                    lead = 2 if batched else 1
                    shape = shape[:lead] + (1,) * (x.dim() - lead)
                keep = (torch.rand(shape, dtype=x.dtype) < 1 - p).to(x.dtype)
                if func in (F.alpha_dropout, F.feature_alpha_dropout):
                    alpha = 1.7580993408473766
                    scale = ((alpha * alpha * p + 1) * (1 - p)) ** -0.5
                    return x * keep * scale + (keep - 1 + p) * alpha * scale
                return x * keep / (1 - p)
        if func is F.rrelu:
            a = dict(zip(("input", "lower", "upper", "training"), args), **kwargs)
            x, lower, upper = a["input"], a.get("lower", 1 / 8), a.get("upper", 1 / 3)
            if a.get("training", False):
                slopes = lower + (upper - lower) * torch.rand(x.shape, dtype=x.dtype)
                return torch.where(x >= 0, x, x * slopes)
        if func is torch.randn_like:
            return torch.randn(args[0].shape, dtype=args[0].dtype)
        return func(*args, **kwargs)


def _as_args(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


class Reference:
    """Gradient of the case's loss as a function of a flat parameter vector, first-order autograd only."""

    def __init__(self, setup: Setup, seed: int | None):
        self.setup = setup
        model = setup.reference_model if setup.reference_model is not None else setup.model
        # Tensors a legacy hook assigned as attributes (not graph leaves) cannot be deep-copied: copy them detached.
        memo = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
                if isinstance(v, torch.Tensor) and not v.is_leaf}
        self.model = copy.deepcopy(model, memo)
        self.model.train(bool(setup.options.get("train_mode", False)))
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for n, p in self.model.named_parameters() if p.requires_grad]
        self.buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        data = setup.reference_data if setup.reference_data is not None else setup.data
        if isinstance(data, list):
            assert len(data) == 1, "several batches need reference_data (all samples in one batch)"
            data = data[0]
        self.inputs, self.targets = data
        self.seed = seed
        self.loss_fn = setup.reference_loss_fn or setup.loss_fn
        self.theta0 = torch.cat([p.detach().reshape(-1) for p in self.params]).clone()

    def _load(self, theta):
        with torch.no_grad():
            offset = 0
            for p in self.params:
                p.copy_(theta[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
            for n, b in self.model.named_buffers():
                b.copy_(self.buffers[n])
        for p in self.model.parameters():
            p.grad = None

    def outputs(self, theta):
        self._load(theta)
        if self.seed is not None:
            torch.default_generator.manual_seed(self.seed)  # (torch.manual_seed costs ~7 ms: it formats stacks)
        inputs = tuple(t.clone() for t in _as_args(self.inputs))  # a forward may write into its input
        with DocumentedDraws():
            return self.model(*inputs)

    def grad(self, theta) -> torch.Tensor:
        with torch.enable_grad():
            loss = self.loss_fn(self.outputs(theta), self.targets)
            loss.backward()
        return self._flat_grad()

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad.to_dense()).reshape(-1)
                          for p in self.params])

    def held_indices(self) -> list[int]:
        """Flat indices of the held entries."""
        out, offset = [], 0
        for name, p in zip(self.names, self.params):
            for index in (self.setup.held or {}).get(name, []):
                flat = torch.zeros(p.shape, dtype=torch.bool)
                flat[index] = True
                out += (offset + torch.nonzero(flat.reshape(-1))[:, 0]).tolist()
            offset += p.numel()
        return out

    def held_out(self, M: torch.Tensor) -> torch.Tensor:
        """``M`` with the rows and columns of the held entries set to zero."""
        index = self.held_indices()
        M[index, :] = 0
        M[:, index] = 0
        return M

    def hessian(self, step: float) -> torch.Tensor:
        """Central differences of the gradient, column by column: ``(g(t + h e_j) - g(t - h e_j)) / 2h``."""
        P = self.theta0.numel()
        cols, held = [], set(self.held_indices())
        for j in range(P):
            if j in held:
                cols.append(torch.zeros(P, dtype=self.theta0.dtype))
                continue
            e = torch.zeros(P, dtype=self.theta0.dtype)
            e[j] = step
            cols.append((self.grad(self.theta0 + e) - self.grad(self.theta0 - e)) / (2 * step))
        self._load(self.theta0)
        return self.held_out(torch.stack(cols, dim=1))

    def ggn(self, step: float) -> torch.Tensor:
        """``J^T H_L J``: ``J`` by one first-order backward per output entry, ``H_L`` by central differences
        of the first-order gradient of the loss in the (floating) outputs; tuple and dict outputs as one."""
        with torch.enable_grad():
            out = self.outputs(self.theta0)
            leaves, spec = tree_flatten(out)
            floating = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.is_floating_point()]
            flat = torch.cat([leaves[i].reshape(-1) for i in floating])
            rows = []
            for k in range(flat.numel()):  # .backward(), as reentrant checkpointing refuses autograd.grad
                for p in self.params:
                    p.grad = None
                flat[k].backward(retain_graph=True)
                rows.append(self._flat_grad())
            J = torch.stack(rows)
        base = flat.detach()
        frozen = [t.detach() if isinstance(t, torch.Tensor) else t for t in leaves]

        def loss_grad(z):
            z = z.clone().requires_grad_(True)
            parts, offset = list(frozen), 0
            for i in floating:
                n = leaves[i].numel()
                parts[i] = z[offset:offset + n].view_as(leaves[i])
                offset += n
            with torch.enable_grad():
                loss = self.loss_fn(tree_unflatten(parts, spec), self.targets)
                (g,) = torch.autograd.grad(loss, z)
            return g

        m = base.numel()
        HL = torch.stack([(loss_grad(base + step * e) - loss_grad(base - step * e)) / (2 * step)
                          for e in torch.eye(m, dtype=base.dtype)], dim=1)
        self._load(self.theta0)
        return self.held_out(J.T @ HL @ J)


def finite_difference(ref: Reference, what: str, steps=(1e-4, 5e-5)):
    """``(matrix, kink)``: the Richardson-extrapolated central differences at two step sizes, and their
    disagreement relative to the matrix's scale (large at a kink of a piecewise smooth function)."""
    fn = ref.hessian if what == "hessian" else ref.ggn
    a, b = fn(steps[0]), fn(steps[1])
    ratio = (steps[0] / steps[1]) ** 2
    extrapolated = (ratio * b - a) / (ratio - 1)
    scale = max(float(extrapolated.abs().max()), 1e-3)
    return extrapolated, float((a - b).abs().max()) / scale


# -- the user's state, bit for bit ----------------------------------------------------------------------
def _bits(t: torch.Tensor):
    t = t.detach()
    if t.is_sparse:
        t = t.to_dense()
    return (t.dtype, tuple(t.shape), t.contiguous().reshape(-1).view(torch.uint8).clone())


def _same_bits(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def _tensors(x) -> list:
    leaves, _ = tree_flatten(x)
    return [t for t in leaves if isinstance(t, torch.Tensor)]


def state_of(model: nn.Module, data) -> dict:
    """Everything of the user's that analysis must leave as it was."""
    state = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if isinstance(t, nn.parameter.UninitializedParameter):  # a lazy module before its first forward
            state[f"state_dict[{name}]"] = ((type(t), (), torch.zeros(0, dtype=torch.uint8)), t.requires_grad, id(t))
            continue
        state[f"state_dict[{name}]"] = (_bits(t), t.requires_grad, id(t))
    for name, p in model.named_parameters(remove_duplicate=False):
        state[f"{name}.grad"] = None if p.grad is None else _bits(p.grad)
    for name, m in model.named_modules(remove_duplicate=False):
        hooks = tuple(len(getattr(m, h, None) or {}) for h in (
            "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
        state[f"module[{name}]"] = (type(m), m.training, hooks, tuple(sorted(vars(m))))
        for k, v in vars(m).items():  # tensors kept as plain attributes (legacy weight_norm/spectral_norm hooks)
            if isinstance(v, torch.Tensor):
                state[f"attribute[{name}.{k}]"] = (_bits(v), v.requires_grad, id(v))
    batches = data if isinstance(data, list) else [data]
    for i, t in enumerate(_tensors(batches)):
        state[f"data[{i}]"] = (_bits(t), t.requires_grad)
    return state


def changes(before: dict, after: dict) -> list[str]:
    """Names of what differs between two :func:`state_of` snapshots."""
    out = [k for k in before.keys() | after.keys() if k not in before or k not in after]
    for k in before.keys() & after.keys():
        a, b = before[k], after[k]
        if k.startswith("module["):
            same = a == b
        elif k.endswith(".grad"):
            same = (a is None and b is None) or (a is not None and b is not None and _same_bits(a, b))
        else:
            same = _same_bits(a[0], b[0]) and a[1:] == b[1:]
        if not same:
            out.append(k)
    return sorted(out)
