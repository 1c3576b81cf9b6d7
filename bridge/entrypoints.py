"""The one list of entry points shared by the MATLAB toolbox and the Python bridge.

Every public ``.m`` file of the toolbox (``matlab/``) is named here, with the :mod:`bridge.api` function it
asks for through the ``.mat`` request (``None`` for the functions that do not call Python), and the
MATLAB option names of its ``'Name', value`` pairs with the keyword argument each one becomes in Python
(``None``: handled in MATLAB). Tests check this table against the ``.m`` files (``hcRequest`` calls,
``inputParser`` options), ``matlab/Contents.m``, ``matlab/resources/functionSignatures.json``,
:mod:`bridge.api` and the request decoder, so that none of them can drift from the others.
"""

from __future__ import annotations

#: MATLAB wrapper -> bridge.api function it calls.
WRAPPERS: dict[str, str] = {
    "dlhessian": "hessian",
    "dlhvp": "hvp",
    "dlhessianDiag": "diagonal",
    "dlhessianEigs": "eigs",
    "dlhessianTrace": "trace",
    "dlnewtonUpdate": "newton_update",
    "dlhessianPlan": "plan",
}

#: Public MATLAB functions that are not wrappers of one bridge.api call.
OTHER_PUBLIC: dict[str, str] = {
    "dlnetworkToSpec": "the network as the plain struct Python reads (MatlabSession calls it)",
    "updateLearnables": "write new values into net.Learnables (MatlabSession calls it)",
    "hessiancoreSetup": "check and configure the Python side",
    "hcFallbackHvp": "H*v by MATLAB's dlgradient (bridge.transport.fallback calls it through the Engine)",
}

#: bridge.api functions a request file may name (the decoder accepts exactly these).
API_FUNCTIONS: tuple[str, ...] = ("hessian", "hvp", "diagonal", "blocks", "eigs", "trace", "newton_update",
                                  "index_map", "loss_value", "predict", "plan")

#: Options every wrapper takes: MATLAB name -> bridge.api keyword (None: used in MATLAB only).
COMMON_OPTIONS: dict[str, str | None] = {
    "Loss": "loss",
    "LossOptions": "loss_options",
    "DataFormat": "x_format",
    "TargetFormat": "t_format",
    "DataType": "dtype",
    "MemoryBudget": "memory_budget",
    "Transport": None,
    "Python": None,
    "PythonOptions": None,
    "ModelLoss": None,  # MATLAB backend only: never sent to Python
    "Backend": None,
}

#: The wrappers' own options, on top of COMMON_OPTIONS ('Output': matrix or Learnables-shaped table).
OWN_OPTIONS: dict[str, dict[str, str | None]] = {
    "dlhessian": {"Output": None},
    "dlhvp": {"Output": None},
    "dlhessianDiag": {"Output": None},
    "dlhessianEigs": {"Output": None, "Which": "which"},
    "dlhessianTrace": {"NumMatvecs": "num_matvecs", "Method": "method", "Seed": "seed"},
    "dlnewtonUpdate": {"Damping": "damping", "LearnRate": "lr"},
    "dlhessianPlan": {},
}

#: hessiancoreSetup's options.
SETUP_OPTIONS: tuple[str, ...] = ("Python", "Transport", "ServerFolder", "Save", "Verbose")


def options_of(wrapper: str) -> dict[str, str | None]:
    """MATLAB option -> Python keyword for one wrapper (common options first, in the documented order)."""
    return {**COMMON_OPTIONS, **OWN_OPTIONS[wrapper]}


def matlab_name(api_function: str | None) -> str | None:
    """The MATLAB wrapper of a bridge.api function (None when no wrapper calls it)."""
    for wrapper, fn in WRAPPERS.items():
        if fn == api_function:
            return wrapper
    return None


def public_functions() -> list[str]:
    return [*WRAPPERS, *OTHER_PUBLIC]


__all__ = ["WRAPPERS", "OTHER_PUBLIC", "API_FUNCTIONS", "COMMON_OPTIONS", "OWN_OPTIONS", "SETUP_OPTIONS",
           "options_of", "matlab_name", "public_functions"]
