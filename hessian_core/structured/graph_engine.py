"""Exact second-order forward propagation through a traced graph (:mod:`.trace`), batch by batch.

For a loss ``L(theta)`` computed by a graph of calls, the Hessian is a sum over the calls ``v`` that curve
(and over the loss itself) of ``J_v^T (d^2 <g_v, v> / d u_v^2) J_v``: ``u_v`` the call's inputs that depend
on the parameters, ``g_v = dL / dv`` its output's adjoint (one backward pass), and ``J_v`` the Jacobian of
``u_v`` with respect to the parameters. The Jacobians are propagated forward as *tangent columns* through
every call (vmapped ``torch.func.jvp``); each curving call adds the Gram matrix of its tangents under its own
second derivative (a node-local Hessian-vector product, or a closed form) to ``X``.

Tangent columns come in *groups* (:class:`Group`), one per parameter tensor (``"direct"``: one column per
entry, a unit vector) or one per ``F.linear`` layer on ``(N, d)`` inputs (``"kron"``: one column per output
unit ``e_i``; the column of weight entry ``(i, b)`` is ``e_i * x[n, b]``, so only ``h`` columns travel instead
of ``h * d``, and :mod:`.graph_assembly` expands them with one GEMM over samples). Where every call acts on
each sample separately and the loss is a sum over samples (``per_sample``), ``X`` is kept per sample
(``(n, K, K)``) and the batch can be processed in slices of samples; otherwise (BatchNorm with batch
statistics, a loss that couples samples) all groups are direct and the whole batch is one unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.func import grad, jvp, vjp, vmap

from .chain import NotApplicable
from .chain_batch import output_derivatives
from .graph_gram import Gram
from .norm_rules import NORMS, norm_products, norm_push
from .ops import DECOMPOSITIONS, arg, classify
from .push_rules import push, weight_gradients
from .trace import Ref, Trace, call_leaves, trace_forward

#: calls whose integer arguments include the batch size (rewritten when the batch is sliced)
_SHAPE_ARGS = {"view", "reshape", "expand", "unflatten", "broadcast_to", "repeat", "tile"}
_NEEDS_ADJOINT = {"elementwise", "general", "coupled", "bilinear"}


@dataclass
class Group:
    """Tangent columns ``lo .. lo + size`` and the parameter entries they stand for.

    ``slots``: ``(sel, offset, sizes, strides)``: the part ``sel`` of the group's expanded axis (``(size,)``
    for direct groups, ``(h, d~)`` for kron groups: ``d~`` = ``d`` weight columns then the bias) sits at
    flat positions ``offset + sum_k i_k * strides[k]``."""

    kind: str
    lo: int
    size: int
    slots: list = field(default_factory=list)
    node: int | None = None  # kron: the F.linear node
    x: int | None = None  # kron: the Value of its input (coefficients), when the weight is differentiated
    bias: bool = False  # kron: the bias is differentiated (a coefficient column of ones)

    def geometry(self) -> tuple:
        return (self.kind, self.lo, self.size, self.d, self.bias,
                tuple((repr(sel), off, size, stride) for sel, off, size, stride in self.slots))

    @property
    def cols(self) -> slice:
        return slice(self.lo, self.lo + self.size)

    @property
    def expanded(self) -> tuple[int, ...]:
        if self.kind == "direct":
            return (self.size,)
        return (self.size, self.width)

    @property
    def width(self) -> int:
        """kron: coefficient columns (``d`` inputs if the weight is differentiated, plus 1 for the bias)."""
        return self.d + int(self.bias)

    d: int = 0


@dataclass
class Tangent:
    """Columns ``lo .. lo + T.shape[0]`` of one value: ``T`` is ``(K, n, ...)`` for data, ``(K, ...)`` else."""

    lo: int
    T: torch.Tensor

    @property
    def hi(self) -> int:
        return self.lo + self.T.shape[0]


@dataclass
class SliceResult:
    """What one slice of samples contributes: the Gram matrix ``X`` of the tangent columns (:class:`Gram`: per
    sample where a kron column is involved, summed over samples otherwise), kron coefficients
    ``coef[group]`` (``(n, d~)``) and the kron layers' cross terms ``cross[group] = (g (n, h), Tangent of the
    layer input)``."""

    X: Gram
    coef: dict
    cross: dict


class BatchGraph:
    """One batch, traced and prepared: rules, groups, adjoints, output derivatives, mode.

    Raises :class:`NotApplicable` when some call has no rule, a parameter is used twice, or the trace does
    not reproduce the model's output."""

    def __init__(self, objective, ctx, primals, *, diagonal: bool = False, allow_kron: bool = True):
        self.objective = objective
        self.spec = objective.params
        self.diagonal = diagonal
        trace, self.params = trace_forward(objective, ctx, primals)
        self.trace: Trace = trace
        values = trace.values
        self.rules = [classify(node, values) for node in trace.nodes]
        for node, rule in zip(trace.nodes, self.rules):
            if rule is None:
                raise NotApplicable(f"no second-order rule for {node.name}")
        # replays use the normalizations written out in elementary ops (fast and exact second derivatives)
        trace.nodes = [node.replace(func=DECOMPOSITIONS[node.name]) if node.name in DECOMPOSITIONS else node
                       for node in trace.nodes]
        self.N = values[trace.output].tensor.shape[0]
        self.flat = self._flat_maps()
        self._check_single_use()
        self.adjoint = self._adjoints(ctx)
        out = values[trace.output].tensor
        shape = out.shape
        self.out_shape = shape
        try:
            self.g_out, self.D = output_derivatives(lambda o: ctx.loss_of_outputs(o.reshape(shape)),
                                                    out.detach().reshape(shape[0], -1),
                                                    known=(objective.loss_fn, ctx.targets) if out.dim() == 2 else None)
        except NotApplicable:
            self.g_out, self.D = None, None
        self.loss_of_outputs = ctx.loss_of_outputs
        coupled = self.D is None or "coupled" in self.rules or not self._rows_independent()
        self.per_sample = not coupled
        self.groups, self.kron_of = self._groups(allow_kron and self.per_sample)
        self.K = sum(g.size for g in self.groups)
        self.colmap = self._colmap()
        self.last_use = self._last_use()
        self._widest: int | None = None

    # -- cost model --------------------------------------------------------------------------------
    def widths(self) -> dict[int, int]:
        """Tangent columns of every value that depends on the parameters (without computing them)."""
        values = self.trace.values
        span: dict[int, tuple[int, int]] = {}
        for i, v in enumerate(values):
            if v.param is not None:
                g = self._param_group.get(self.spec.offsets[v.param])
                if g is not None:
                    span[i] = (g.lo, g.lo + g.size)
        for k, node in enumerate(self.trace.nodes):
            group = self.kron_of.get(k)
            parts = [span[i] for i in node.inputs if i in span and not (group is not None and i in self.flat)]
            if group is not None:
                parts.append((group.lo, group.lo + group.size))
            if parts:
                span[node.out] = (min(a for a, _ in parts), max(b for _, b in parts))
        return {i: b - a for i, (a, b) in span.items()}

    def cost(self) -> tuple[float, float]:
        """Estimated multiply-adds of this batch: ``(structured, generic)``. Generic: ``P`` Hessian-vector
        products, each about four passes over the graph. Structured: tangent columns through every call,
        the Gram matrices of the curving calls, and the assembly (``N P^2`` for kron pairs)."""
        values = self.trace.values
        width = self.widths()
        N = self.N
        forward = structured = 0.0
        for node, rule in zip(self.trace.nodes, self.rules):
            v = values[node.out]
            if not v.data:
                continue
            units = v.tensor[0].numel() if v.tensor.dim() else 1
            per = _flops_per_output(node, values)
            forward += N * units * per
            K = width.get(node.out, 0)
            structured += K * N * units * per
            if rule in ("elementwise", "general", "coupled"):
                structured += N * units * (K if self.diagonal else K * K) + (10 * K * N * units if rule != "elementwise"
                                                                           else 0)
            elif rule == "bilinear" and not self.diagonal:
                structured += 2 * K * N * units * per
        out = values[self.trace.output].tensor
        C = out[0].numel()
        Kout = width.get(self.trace.output, 0)
        structured += N * C * (Kout if self.diagonal else Kout * Kout)
        P = self.spec.numel
        structured += (N * P if self.diagonal else N * P * P / 2)
        return structured, 4.0 * P * forward

    # -- preparation -------------------------------------------------------------------------------
    def _flat_maps(self) -> dict[int, torch.Tensor]:
        """Flat (ParamSpec) position of every entry of every value computed from the parameters alone."""
        values = self.trace.values
        flat: dict[int, torch.Tensor] = {}
        for i, v in enumerate(values):
            if v.param is not None:
                o = self.spec.offsets[v.param]
                flat[i] = torch.arange(o, o + v.tensor.numel(), device=v.tensor.device).reshape(v.tensor.shape)
        for node, rule in zip(self.trace.nodes, self.rules):
            if rule != "view":
                continue
            if any(i not in flat for i in node.inputs):
                raise NotApplicable(f"{node.name} of a value computed from the parameters")
            flat[node.out] = node.call(lambda j: flat[j] if j in flat else values[j].tensor)
        return flat

    def _check_single_use(self) -> None:
        """Each parameter entry feeds one call on the data (tied weights use the generic path)."""
        seen = torch.zeros(self.spec.numel, dtype=torch.bool)
        for node, rule in zip(self.trace.nodes, self.rules):
            if rule == "view":
                continue
            idx = [self.flat[i].reshape(-1) for i in set(node.inputs) if i in self.flat]
            if not idx:
                continue
            used = torch.unique(torch.cat(idx)).cpu()
            if bool(seen[used].any()):
                raise NotApplicable("a parameter is used by two calls (tied weights)")
            seen[used] = True

    def _adjoints(self, ctx) -> dict[int, torch.Tensor]:
        """``dL/dv`` of the batch loss for the outputs of calls that curve (one replay with autograd); the
        replay must reproduce the model output."""
        values = self.trace.values
        env: dict[int, torch.Tensor] = {}
        with torch.enable_grad():
            for i, v in enumerate(values):
                if v.param is not None:
                    env[i] = v.tensor.detach().requires_grad_(True)
            for node in self.trace.nodes:
                env[node.out] = node.call(lambda j: env[j] if j in env else values[j].tensor)
            out = env[self.trace.output]
            expected = values[self.trace.output].tensor
            if out.shape != expected.shape or not torch.allclose(
                    out.detach(), expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max().clamp_min(1))):
                raise NotApplicable("the traced calls do not reproduce the model output")
            need = sorted({node.out for node, rule in zip(self.trace.nodes, self.rules) if rule in _NEEDS_ADJOINT})
            if not need:
                return {}
            loss = ctx.loss_of_outputs(out)
            grads = torch.autograd.grad(loss, [env[i] for i in need], allow_unused=True)
        return {i: (g.detach() if g is not None else torch.zeros_like(values[i].tensor)) for i, g in zip(need, grads)}

    def _rows_independent(self) -> bool:
        """Every call acts on each sample separately: replaying the first sample alone gives its rows."""
        if self.N < 2:
            return True
        try:
            with torch.no_grad():
                env = self._replay(slice(0, 1))
        except (RuntimeError, ValueError, IndexError, NotApplicable):
            return False
        values = self.trace.values
        for node in self.trace.nodes:
            v = values[node.out]
            if not v.data:
                continue
            got, want = env[node.out], v.tensor[:1]
            rtol = 1e-9 if want.dtype == torch.float64 else 1e-4  # one sample alone: other GEMM blocking
            if got.shape != want.shape or not torch.allclose(got, want, rtol=rtol, atol=rtol * 1e-3 * float(
                    want.abs().max().clamp_min(1))):
                return False
        return True

    def _groups(self, allow_kron: bool):
        """Tangent groups in order of first use: a kron group per eligible F.linear, a direct group per
        other parameter."""
        groups: list[Group] = []
        kron_of: dict[int, Group] = {}
        claimed: set[int] = set()
        lo = 0
        for k, (node, rule) in enumerate(zip(self.trace.nodes, self.rules)):
            if rule == "view":
                continue
            if allow_kron and node.name == "linear" and rule in ("bilinear", "source"):
                g = self._kron_group(k, node, lo)
                if g is not None:
                    groups.append(g)
                    kron_of[k] = g
                    lo += g.size
                    for i in node.inputs:
                        if i in self.flat:
                            claimed |= set(self._params_of(i))
                    continue
            for i in sorted(set(node.inputs)):
                if i not in self.flat:
                    continue
                for p in self._params_of(i):
                    if p in claimed:
                        continue
                    claimed.add(p)
                    size = self.spec.numels[p]
                    groups.append(Group("direct", lo, size, [((slice(None),), self.spec.offsets[p], (size,), (1,))]))
                    lo += size
        self._param_group = {}
        for g in groups:
            if g.kind == "direct":
                self._param_group[g.slots[0][1]] = g
        return groups, kron_of

    def _params_of(self, value: int) -> list[int]:
        flat = self.flat[value].reshape(-1)
        lo, hi = int(flat.min()), int(flat.max())
        return [p for p in range(len(self.spec)) if self.spec.offsets[p] <= hi and self.spec.offsets[p + 1] > lo]

    def _kron_group(self, k, node, lo) -> Group | None:
        values = self.trace.values
        x, weight, bias = node.args[0] if node.args else node.kwargs.get("input"), arg(node, 1, "weight"), \
            arg(node, 2, "bias")
        if not isinstance(x, Ref) or values[x.index].tensor.dim() != 2:
            return None
        out = values[node.out].tensor
        h, d = out.shape[1], values[x.index].tensor.shape[1]
        slots = []
        w_dep = isinstance(weight, Ref) and weight.index in self.flat
        b_dep = isinstance(bias, Ref) and bias.index in self.flat
        if w_dep:
            aff = _affine(self.flat[weight.index])
            if aff is None:
                return None
            slots.append(((slice(None), slice(0, d)), aff[0], (h, d), aff[1]))
        if b_dep:
            aff = _affine(self.flat[bias.index])
            if aff is None:
                return None
            slots.append(((slice(None), d if w_dep else 0), aff[0], (h,), aff[1]))
        if not slots:
            return None
        return Group("kron", lo, h, slots, node=k, x=x.index if w_dep else None, bias=b_dep, d=d if w_dep else 0)

    def _colmap(self) -> torch.Tensor:
        """Flat position -> tangent column of direct groups (-1 elsewhere)."""
        cm = torch.full((self.spec.numel,), -1, dtype=torch.long)
        for g in self.groups:
            if g.kind == "direct":
                o = g.slots[0][1]
                cm[o:o + g.size] = torch.arange(g.lo, g.lo + g.size)
        return cm.to(self.spec.device)

    def _last_use(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for k, node in enumerate(self.trace.nodes):
            for i in node.inputs:
                last[i] = k
        last[self.trace.output] = len(self.trace.nodes)
        return last

    # -- slices ------------------------------------------------------------------------------------
    def _lookup(self, sl: slice | None, env: dict | None = None):
        values = self.trace.values

        def lookup(j):
            if env is not None and j in env:
                return env[j]
            v = values[j]
            return v.tensor[sl] if (sl is not None and v.data and v.tensor.shape[0] == self.N) else v.tensor

        return lookup

    def _call(self, node, lookup, n: int):
        """``node`` on a slice of ``n`` samples (a shape argument equal to the batch size becomes ``n``)."""
        if n != self.N and node.name in _SHAPE_ARGS:
            args = list(node.args)
            if len(args) > 1 and isinstance(args[1], (tuple, list)):
                args[1] = type(args[1])((n if i == 0 and s == self.N else s) for i, s in enumerate(args[1]))
            elif len(args) > 1 and args[1] == self.N:
                args[1] = n
            node = node.replace(args=tuple(args))
        return node.call(lookup)

    def _replay(self, sl: slice) -> dict[int, torch.Tensor]:
        env: dict[int, torch.Tensor] = {}
        n = len(range(*sl.indices(self.N)))
        lookup = self._lookup(sl, env)
        for node, rule in zip(self.trace.nodes, self.rules):
            if rule != "view":
                env[node.out] = self._call(node, lookup, n)
        return env

    def bytes_per_sample(self) -> int:
        """Working memory of one sample in :meth:`propagate` (estimate: its part of the Gram and a few copies
        of the widest tangent)."""
        values = self.trace.values
        if self._widest is None:
            width = self.widths()
            self._widest = max((width.get(i, 0) * v.tensor[0].numel() for i, v in enumerate(values)
                                if v.data and v.dep), default=1)
        item = values[self.trace.output].tensor.element_size()
        kron = sum(g.size for g in self.groups if g.kind == "kron")
        gram = self.K if self.diagonal else kron * self.K
        return item * (gram + 4 * self._widest)

    def samples(self, max_samples: int):
        """Slices covering the batch: at most ``max_samples`` samples each (the whole batch when coupled)."""
        if not self.per_sample:
            yield slice(0, self.N)
            return
        step = max(1, int(max_samples))
        for a in range(0, self.N, step):
            yield slice(a, min(a + step, self.N))

    # -- propagation -------------------------------------------------------------------------------
    def propagate(self, sl: slice) -> SliceResult:
        """Tangents through every call for the samples ``sl``, and the Gram ``X`` of their curvature."""
        values = self.trace.values
        n = sl.stop - sl.start
        m = n if self.per_sample else 1
        like = values[self.trace.output].tensor
        X = Gram(self.groups, self.K, m, diagonal=self.diagonal, like=like)
        tan: dict[int, Tangent] = {}
        lookup = self._lookup(sl)
        coef, cross = {}, {}
        for i, v in enumerate(values):
            if v.param is not None:
                g = self._param_group.get(self.spec.offsets[v.param])
                if g is not None:
                    eye = torch.eye(g.size, dtype=like.dtype, device=like.device)
                    tan[i] = Tangent(g.lo, eye.reshape(g.size, *v.tensor.shape))
        for k, (node, rule) in enumerate(zip(self.trace.nodes, self.rules)):
            group = self.kron_of.get(k)
            ins = [i for i in sorted(set(node.inputs)) if i in tan and not (group is not None and i in self.flat)]
            if rule == "view":
                if ins:
                    tan[node.out] = self._push(node, rule, lookup, ins, tan, n)
            else:
                out_t = self._push(node, rule, lookup, ins, tan, n) if ins else None
                if group is not None:
                    out_t = _with_directions(out_t, group, n, values[node.out].tensor)
                    coef[group.lo] = self._coefficients(group, sl)
                    x = node.args[0] if node.args else node.kwargs.get("input")
                    if group.x is not None and x.index in tan:
                        cross[group.lo] = (self.adjoint[node.out][sl], tan[x.index])
                if out_t is not None:
                    tan[node.out] = out_t
                    if group is None:  # a kron layer's own curvature is added by the assembly
                        self._curvature(X, node, rule, lookup, ins, tan, sl, n)
            for i in list(tan):
                if self.last_use.get(i, -1) <= k and i != self.trace.output:
                    del tan[i]
        out = tan.get(self.trace.output)
        if out is not None:
            self._loss_curvature(X, out, sl, n)
        return SliceResult(X, coef, cross)

    def _push(self, node, rule, lookup, ins, tan, n) -> Tangent:
        """Tangent of ``node``'s output: the sum over its inputs of vmapped jvps (jvp is linear in them)."""
        lo = min(tan[i].lo for i in ins)
        hi = max(tan[i].hi for i in ins)
        total = None
        for i in ins:
            t = tan[i]
            primal = lookup(i)

            def f(z, i=i):
                return self._call(node, lambda j: z if j == i else lookup(j), n)

            if node.name in NORMS:
                part = norm_push(node, i, lookup, t.T, self._is_data)
            else:
                part = push(node, rule, i, lookup, t.T, f)
            if part is None:
                part = vmap(lambda u, f=f, primal=primal: jvp(f, (primal,), (u,))[1])(t.T)
            if t.lo == lo and t.hi == hi and total is None:
                total = part
                continue
            if total is None:
                total = part.new_zeros((hi - lo,) + part.shape[1:])
            total[t.lo - lo:t.hi - lo] += part
        return Tangent(lo, total)

    def _coefficients(self, group: Group, sl: slice) -> torch.Tensor:
        values = self.trace.values
        like = values[self.trace.output].tensor
        cols = []
        if group.x is not None:
            cols.append(values[group.x].tensor[sl].reshape(-1, group.d))
        if group.bias:
            cols.append(torch.ones(sl.stop - sl.start, 1, dtype=like.dtype, device=like.device))
        return torch.cat(cols, dim=1)

    # -- curvature ---------------------------------------------------------------------------------
    def _curvature(self, X, node, rule, lookup, ins, tan, sl, n) -> None:
        if rule == "elementwise":
            self._elementwise(X, node, lookup, ins[0], tan[ins[0]], sl, n)
        elif rule in ("general", "coupled"):
            self._general(X, node, lookup, ins, tan, sl, n)
        elif rule == "bilinear":
            self._bilinear(X, node, lookup, tan, sl, n)

    def _gram(self, X: Gram, lo, A: torch.Tensor, B: torch.Tensor) -> None:
        """Gram entries ``(lo + a, lo + b) += sum over units of A[a] B[b]`` per sample (``A``, ``B``:
        ``(K, n, ...)``); for the whole batch as one unit the samples are units too."""
        if not self.per_sample:
            A, B = A.reshape(A.shape[0], 1, -1), B.reshape(B.shape[0], 1, -1)
        X.add(lo, A, lo, B)

    def _elementwise(self, X, node, lookup, i, t: Tangent, sl, n) -> None:
        x = lookup(i)

        def f(z):
            return self._call(node, lambda j: z if j == i else lookup(j), n)

        d2 = grad(lambda u: grad(lambda w: f(w).sum())(u).sum())(x)
        r = self.adjoint[node.out][sl] * d2
        if not bool((r != 0).any()):
            return
        self._gram(X, t.lo, t.T * r, t.T)

    def _general(self, X, node, lookup, ins, tan, sl, n) -> None:
        """Node-local Hessian-vector products (reverse-over-reverse) of ``<g, f(inputs)>`` along every
        tangent column, per sample (the parameters' own columns resolved per sample) or for the whole batch."""
        values = self.trace.values
        lo = min(tan[i].lo for i in ins)
        hi = max(tan[i].hi for i in ins)
        padded = [_pad(tan[i], lo, hi) for i in ins]
        data = [values[i].data for i in ins]
        g = self.adjoint[node.out][sl]
        primals = [lookup(i) for i in ins]
        # the call's other per-sample inputs (constants of the Hessian that still differ by sample: a branch
        # whose parameters are not differentiated) go per sample too
        extra = [j for j in _refs(node) if j not in ins and values[j].data and values[j].tensor.dim() > 0
                 and values[j].tensor.shape[0] == self.N]
        if not extra and node.name in NORMS:
            closed = norm_products(node, ins, padded, g, lookup, self._is_data, self.per_sample)
            if closed is not None:  # (m, K, U) per variable, None where it has no curvature
                for i, H, d in zip(ins, closed, data):
                    if H is not None:
                        T = tan[i].T
                        rows = T.transpose(0, 1) if (d and H.shape[0] > 1) else T.unsqueeze(0)
                        rows = rows.reshape(rows.shape[0], T.shape[0], -1).expand(H.shape[0], -1, -1)
                        self._pair(X, tan[i].lo, rows, lo, H)
                return

        def c_of(gn, single, es):
            def c(*zs):
                env = {i: (z[None] if (single and d) else z) for i, z, d in zip(ins, zs, data)}
                env.update({j: (e[None] if single else e) for j, e in zip(extra, es)})
                out = self._call(node, lambda j: env[j] if j in env else lookup(j), 1 if single else n)
                return (gn * (out[0] if single else out)).sum()
            return c

        def hvps(gn, ps, ts, single, es=()):
            _, fn = vjp(grad(c_of(gn, single, es), argnums=tuple(range(len(ps)))), *ps)
            return vmap(lambda *u: fn(tuple(u)))(*ts)

        K = hi - lo
        if self.per_sample:
            in_dims = (0, tuple(0 if d else None for d in data), tuple(1 if d else None for d in data),
                       tuple(0 for _ in extra))
            HT = vmap(lambda gn, ps, ts, es: hvps(gn, ps, ts, True, es), in_dims=in_dims)(
                g, tuple(primals), tuple(padded), tuple(lookup(j) for j in extra))
            # HT[v]: (n, K, ...) per variable; pair it with the variable's own (unpadded) tangent rows
            for i, H, d in zip(ins, HT, data):
                t = tan[i]
                Tn = t.T.transpose(0, 1) if d else t.T.unsqueeze(0).expand(n, *t.T.shape)
                self._pair(X, t.lo, Tn.reshape(n, Tn.shape[1], -1), lo, H.reshape(n, K, -1))
        else:
            HT = hvps(g, tuple(primals), tuple(padded), False)
            for i, H in zip(ins, HT):
                t = tan[i]
                self._pair(X, t.lo, t.T.reshape(1, t.T.shape[0], -1), lo, H.reshape(1, K, -1))

    def _is_data(self, i: int) -> bool:
        return self.trace.values[i].data

    def _pair(self, X: Gram, rlo: int, a: torch.Tensor, clo: int, b: torch.Tensor) -> None:
        """A variable's rows ``a`` ``(m, Ka, U)`` against the product columns ``b`` ``(m, K, U)``."""
        if self.diagonal:
            X.add_per_sample(rlo, a, rlo, b[:, rlo - clo:rlo - clo + a.shape[1]])
        else:
            X.add_per_sample(rlo, a, clo, b)

    def _bilinear(self, X, node, lookup, tan, sl, n) -> None:
        """``F.linear`` / conv / BatchNorm (eval) with a direct weight: curvature only between the input's
        tangent columns and the weight's, ``d/dW <g, f(t, W) - f(0, W)>`` per sample for each input column."""
        if self.diagonal:
            return  # cross terms are off the diagonal
        x = node.args[0] if node.args else node.kwargs.get("input")
        w = arg(node, 3 if node.name == "batch_norm" else 1, "weight")
        if not (isinstance(x, Ref) and x.index in tan and isinstance(w, Ref) and w.index in self.flat):
            return
        tx = tan[x.index]
        W0 = lookup(w.index)
        g = self.adjoint[node.out][sl]

        def linear_part(t, Wz):
            env = {w.index: Wz}
            f = self._call(node, lambda j: t if j == x.index else (env[j] if j in env else lookup(j)), 1)
            z = self._call(node, lambda j: torch.zeros_like(t) if j == x.index else (env[j] if j in env
                                                                                       else lookup(j)), 1)
            return f - z

        def per_sample(tn, gn):  # tn (K, *x), gn (*out): d/dW <gn, linear_part(t, W)> for each column t
            return vmap(lambda t: grad(lambda Wz: (gn * linear_part(t[None], Wz)[0]).sum())(W0))(tn)

        G = weight_gradients(node, tx.T, g, lookup)  # closed forms: (n, Kx, *W)
        if G is None:
            G = vmap(per_sample, in_dims=(1, 0))(tx.T, g)
        cols = self.colmap[self.flat[w.index].reshape(-1)]
        glo = int(cols.min())
        Kw = int(cols.max()) + 1 - glo
        C = G.new_zeros(n, tx.T.shape[0], Kw)
        C.index_add_(2, cols - glo, G.reshape(n, tx.T.shape[0], -1))
        if not self.per_sample:  # the whole batch is one unit
            C = C.sum(0, keepdim=True)
        X.add_pairs(tx.lo, glo, C)

    def _loss_curvature(self, X, out: Tangent, sl, n) -> None:
        T = out.T.reshape(out.T.shape[0], n, -1)
        if self.D is not None:
            TD = torch.einsum("anc,ncd->and", T, self.D[sl])
            self._gram(X, out.lo, TD, T)
            return
        o = self.trace.values[self.trace.output].tensor
        _, fn = vjp(grad(lambda z: self.loss_of_outputs(z)), o)
        H = vmap(lambda u: fn(u)[0])(out.T)
        self._gram(X, out.lo, out.T, H)


def _refs(node) -> list[int]:
    """Indices of the traced values a call reads (its :class:`~.trace.Ref` arguments), once each."""
    return list(dict.fromkeys(x.index for x in call_leaves(node) if isinstance(x, Ref)))


def _pad(t: Tangent, lo: int, hi: int) -> torch.Tensor:
    if t.lo == lo and t.hi == hi:
        return t.T
    out = t.T.new_zeros((hi - lo,) + t.T.shape[1:])
    out[t.lo - lo:t.hi - lo] = t.T
    return out


def _with_directions(out_t: Tangent | None, group: Group, n: int, value: torch.Tensor) -> Tangent:
    """Add the kron group's own columns (``e_i`` in every sample) to the tangent of the layer's output."""
    h = group.size
    eye = torch.eye(h, dtype=value.dtype, device=value.device)[:, None, :].expand(h, n, h)
    if out_t is None:
        return Tangent(group.lo, eye.contiguous())
    lo, hi = min(out_t.lo, group.lo), max(out_t.hi, group.lo + h)
    T = out_t.T.new_zeros((hi - lo,) + out_t.T.shape[1:])
    T[out_t.lo - lo:out_t.hi - lo] = out_t.T
    T[group.lo - lo:group.lo - lo + h] += eye
    return Tangent(lo, T)


def _affine(flat: torch.Tensor):
    """``(offset, strides)`` when ``flat[i0, i1, ...] = offset + sum_k i_k * strides[k]``, else ``None``."""
    offset = int(flat.reshape(-1)[0])
    strides = []
    for k in range(flat.dim()):
        if flat.shape[k] > 1:
            strides.append(int(flat.select(k, 1).reshape(-1)[0] - offset))
        else:
            strides.append(0)
    grid = torch.full_like(flat, offset)
    for k, s in enumerate(strides):
        shape = [1] * flat.dim()
        shape[k] = flat.shape[k]
        grid = grid + torch.arange(flat.shape[k], device=flat.device).reshape(shape) * s
    return (offset, tuple(strides)) if bool((grid == flat).all()) else None


def _flops_per_output(node, values) -> float:
    """Multiply-adds per output entry of a call (per tangent column)."""
    if node.name == "linear":
        x = node.args[0] if node.args else node.kwargs.get("input")
        return float(values[x.index].tensor.shape[-1]) if isinstance(x, Ref) else 1.0
    if node.name in ("conv1d", "conv2d", "conv3d"):
        w = arg(node, 1, "weight")
        shape = values[w.index].tensor.shape if isinstance(w, Ref) else w.shape
        return float(torch.Size(shape[1:]).numel())
    return 4.0
