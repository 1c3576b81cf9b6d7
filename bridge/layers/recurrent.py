"""lstmLayer and gruLayer on 'CBT' data, from MATLAB's documented equations.

lstmLayer (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.lstmlayer.html): InputWeights
4H x C, RecurrentWeights 4H x H, Bias 4H x 1, gate blocks in the order input, forget, cell candidate, output:
``c_t = f .* c_{t-1} + i .* g``, ``h_t = o .* tanh(c_t)``; initial HiddenState / CellState from the State
rows (H x 1, the same for every observation; zero when absent).

gruLayer (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.grulayer.html): blocks in the
order reset, update, candidate; ``h_t = (1 - z) .* h~ + z .* h_{t-1}``. ResetGateMode
'after-multiplication' (default): ``h~ = tanh(W_h x + b_h + r .* (R_h h))``; 'before-multiplication':
``h~ = tanh(W_h x + b_h + R_h (r .* h))``; 'recurrent-bias-after-multiplication': Bias is 6H x 1 =
[input biases (3H); recurrent biases (3H)], ``r, z`` add both and ``h~ = tanh(W_h x + b_Wh + r .* (R_h h + b_Rh))``.
OutputMode 'sequence' gives 'CBT', 'last' gives 'CB'.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Act, Translator


class _Recurrent(Translator):
    learnable_names = ("InputWeights", "RecurrentWeights", "Bias")
    properties = ("NumHiddenUnits", "OutputMode", "HasStateInputs", "HasStateOutputs", "StateActivationFunction",
                  "GateActivationFunction", "HiddenState")
    gates = 4
    state_names: tuple[str, ...] = ("HiddenState",)

    def setup(self, learn, state):
        lay = self.layer
        H = lay.integer("NumHiddenUnits") if lay.has("NumHiddenUnits") else learn["RecurrentWeights"].shape[1]
        self.H = H
        self.expect(learn, "InputWeights", (self.gates * H, None))
        self.expect(learn, "RecurrentWeights", (self.gates * H, H))
        self.expect(learn, "Bias", (self.bias_rows(), 1))
        self.mode = lay.text("OutputMode", "sequence").lower()
        if self.mode not in ("sequence", "last"):
            raise self.error(f"OutputMode {self.mode!r} is not supported ('sequence' or 'last')")
        for flag in ("HasStateInputs", "HasStateOutputs"):
            if lay.has(flag) and lay.number(flag) != 0:
                raise self.error(f"{flag} = true is not supported")
        for key, default in (("StateActivationFunction", "tanh"), ("GateActivationFunction", "sigmoid")):
            if lay.text(key, default).lower() != default:
                raise self.error(f"{key} {lay.text(key)!r} is not supported (only {default!r})")
        for key in self.state_names:
            value = state.get(key)
            if value is None and lay.has(key):
                value = lay.array(key)
            if value is None:
                value = np.zeros(H)
            if value.size != H:
                raise self.error(f"{key} has {value.size} elements, expected NumHiddenUnits = {H}")
            self.const(key, value.reshape(-1, order="F"))

    def bias_rows(self) -> int:
        return self.gates * self.H

    def check_input(self, x: Act, W: torch.Tensor):
        if x.fmt != "CBT":
            raise self.error(f"input format {x.fmt!r} is not supported (sequence data 'CBT')")
        if x.data.shape[2] != W.shape[1]:
            raise self.error(f"InputWeights is {tuple(W.shape)} but the input has {x.data.shape[2]} channels")

    def output(self, hs: list[torch.Tensor]) -> Act:
        if self.mode == "last":
            return Act(hs[-1], "CB")
        return Act(torch.stack(hs, dim=1), "CBT")


class LSTM(_Recurrent):
    gates = 4
    state_names = ("HiddenState", "CellState")
    properties = _Recurrent.properties + ("CellState",)

    def forward(self, xs, p, c):
        x = xs[0]
        W, R, b = p["InputWeights"], p["RecurrentWeights"], p["Bias"].reshape(-1)
        self.check_input(x, W)
        B, H = x.data.shape[0], self.H
        h = c["HiddenState"].expand(B, H)
        cell = c["CellState"].expand(B, H)
        wx = x.data @ W.T + b  # (B, T, 4H)
        hs = []
        for t in range(x.data.shape[1]):
            z = wx[:, t] + h @ R.T
            i, f, g, o = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H]), torch.tanh(z[:, 2 * H:3 * H]), \
                torch.sigmoid(z[:, 3 * H:])
            cell = f * cell + i * g
            h = o * torch.tanh(cell)
            hs.append(h)
        return self.output(hs)


class GRU(_Recurrent):
    gates = 3
    state_names = ("HiddenState",)
    properties = _Recurrent.properties + ("ResetGateMode",)

    def setup(self, learn, state):
        self.reset_mode = self.layer.text("ResetGateMode", "after-multiplication").lower()
        if self.reset_mode not in ("after-multiplication", "before-multiplication",
                                   "recurrent-bias-after-multiplication"):
            raise self.error(f"ResetGateMode {self.reset_mode!r} is not supported")
        super().setup(learn, state)

    def bias_rows(self) -> int:
        return (6 if self.reset_mode == "recurrent-bias-after-multiplication" else 3) * self.H

    def forward(self, xs, p, c):
        x = xs[0]
        W, R, b = p["InputWeights"], p["RecurrentWeights"], p["Bias"].reshape(-1)
        self.check_input(x, W)
        B, H = x.data.shape[0], self.H
        bw, br = (b[:3 * H], b[3 * H:]) if b.numel() == 6 * H else (b, torch.zeros_like(b))
        h = c["HiddenState"].expand(B, H)
        wx = x.data @ W.T + bw  # (B, T, 3H)
        hs = []
        for t in range(x.data.shape[1]):
            rh = h @ R[:2 * H].T + br[:2 * H]
            r = torch.sigmoid(wx[:, t, :H] + rh[:, :H])
            z = torch.sigmoid(wx[:, t, H:2 * H] + rh[:, H:])
            if self.reset_mode == "before-multiplication":
                cand = torch.tanh(wx[:, t, 2 * H:] + (r * h) @ R[2 * H:].T)
            else:
                cand = torch.tanh(wx[:, t, 2 * H:] + r * (h @ R[2 * H:].T + br[2 * H:]))
            h = (1 - z) * cand + z * h
            hs.append(h)
        return self.output(hs)
