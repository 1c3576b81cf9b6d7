"""MATLAB error identifiers and messages for errors raised in Python: one explicit table.

MATLAB raises ``error(identifier, message)`` with what :func:`matlab_error` returns. The identifier comes
from :data:`PYTHON_ERRORS` (the first class in that list that the exception is an instance of), never
from a class name, so renaming a Python class cannot change what a MATLAB ``try/catch`` sees. The
message speaks MATLAB: it names the wrapper (``dlhessian: ...``), MATLAB option names instead of Python
keywords (``'MemoryBudget'``, not ``memory_budget=``), and for a memory-budget refusal the MATLAB
functions that need less memory.

:data:`IDENTIFIERS` lists every identifier the toolbox raises (MATLAB side included) with its meaning;
docs/matlab.md documents the same list and a test keeps them equal.
"""

from __future__ import annotations

import re

from hessian_core.errors import HessianCoreError, InvalidInputError, MemoryBudgetError, NonFiniteError

from .entrypoints import WRAPPERS, matlab_name


class RequestError(ValueError):
    """The request file itself is malformed (not written by hcRequest, or a different version)."""


#: Every identifier the toolbox raises, and what it means.
IDENTIFIERS: dict[str, str] = {
    "hessiancore:invalidInput": "the network, data, vector or an option value cannot be used as given",
    "hessiancore:invalidOption": "an unknown option name, or a value the option does not allow",
    "hessiancore:nonFinite": "NaN or Inf in the data, the learnables, the loss or a result",
    "hessiancore:memoryBudget": "the work would need more memory than 'MemoryBudget' allows",
    "hessiancore:transport": "Python could not be reached, or gave no answer",
    "hessiancore:setup": "the Python environment lacks something (run hessiancoreSetup)",
    "hessiancore:request": "the request file was not understood (toolbox and Python bridge of different versions)",
    "hessiancore:unsupported": "a feature the bridge does not implement",
    "hessiancore:python": "an unexpected Python error (a bug: please report it with the message)",
    "hessiancore:modelLoss": "(MATLAB backend) your 'ModelLoss' function failed; the message carries its error",
    "hessiancore:higherDerivatives": "(MATLAB backend) MATLAB cannot differentiate the loss twice "
                                     "(names the layer or function)",
    "hessiancore:notConverged": "(MATLAB backend, a warning) eigs or pcg stopped short of their tolerance",
}

#: Python exception class -> MATLAB identifier; the first matching entry wins (specific classes first).
PYTHON_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (RequestError, "hessiancore:request"),
    (NonFiniteError, "hessiancore:nonFinite"),
    (MemoryBudgetError, "hessiancore:memoryBudget"),
    (InvalidInputError, "hessiancore:invalidInput"),
    (ModuleNotFoundError, "hessiancore:setup"),
    (ImportError, "hessiancore:setup"),
    (MemoryError, "hessiancore:memoryBudget"),
    (NotImplementedError, "hessiancore:unsupported"),
    (ValueError, "hessiancore:invalidInput"),
    (TypeError, "hessiancore:invalidInput"),
    (KeyError, "hessiancore:invalidInput"),
)

#: Python keyword names that appear in the engine's messages -> the MATLAB option a user sets instead.
_OPTION_NAMES = (
    (r"\bmemory_budget=?", "'MemoryBudget'"),
    (r"\bloss_options\b", "'LossOptions'"),
    (r"\bx_format\b", "'DataFormat'"),
    (r"\bt_format\b", "'TargetFormat'"),
    (r"\bnum_matvecs\b", "'NumMatvecs'"),
    (r"\bdtype\b", "'DataType'"),
    (r"\blr\b", "'LearnRate'"),
    (r"\bdamping\b", "'Damping'"),
    (r"\btorch\.float64\b", "double"),
    (r"\btorch\.float32\b", "single"),
)

#: The core's torch-layout wording of a failing loss -> MATLAB's (minibatches counted from 1).
_LOSS_FAILED = re.compile(r"loss_fn\(outputs .*?, targets .*?\) failed on batch (\d+): (?:\w+Error: )?")
_ON_BATCH = re.compile(r"\bon batch (\d+)\b")

_LOW_MEMORY = ("dlhvp", "dlhessianEigs", "dlhessianTrace", "dlhessianDiag")


def error_identifier(exc: BaseException) -> str:
    for cls, ident in PYTHON_ERRORS:
        if isinstance(exc, cls):
            return ident
    return "hessiancore:python"


def matlab_error(exc: BaseException, function: str | None = None) -> tuple[str, str]:
    """``(identifier, message)`` for MATLAB's ``error``; ``function`` is the bridge.api function that ran."""
    ident = error_identifier(exc)
    wrapper = matlab_name(function) or (function if function in WRAPPERS else None)
    if isinstance(exc, (HessianCoreError, RequestError)):
        text = str(exc)
        if ident == "hessiancore:memoryBudget":
            text = _memory_advice(text, wrapper)
        for pattern, name in _OPTION_NAMES:
            text = re.sub(pattern, name, text)
        text = _LOSS_FAILED.sub(lambda m: f"the loss failed on minibatch {int(m.group(1)) + 1}: ", text)
        text = _ON_BATCH.sub(lambda m: f"on minibatch {int(m.group(1)) + 1}", text)
    else:
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ImportError):
            text += ("\nThe Python that ran the request cannot import hessiancore's dependencies: run "
                     "hessiancoreSetup in MATLAB/Octave to choose the right Python or install them.")
        elif ident == "hessiancore:python":
            text += "\n(an unexpected error in the Python bridge: please report it with this message)"
    return ident, (f"{wrapper}: {text}" if wrapper else text)


def _memory_advice(text: str, wrapper: str | None) -> str:
    """The engine's "X needs N GB, more than the memory budget of M GB. Use <Python API>..." -> MATLAB advice:
    the functions that never form the P x P matrix (when a dense result was refused) and 'MemoryBudget'."""
    head = text.split(". Use ")[0].rstrip(".")
    advice = ""
    if wrapper in (None, "dlhessian", "dlnewtonUpdate") or ". Use " in text:
        others = [f for f in _LOW_MEMORY if f != wrapper]
        advice = f" {', '.join(others[:-1])} and {others[-1]} never form the P x P matrix."
    return (f"{head}.{advice} Or raise 'MemoryBudget' (bytes, or text such as '16GB') if the machine has the "
            "memory.")


__all__ = ["IDENTIFIERS", "PYTHON_ERRORS", "RequestError", "error_identifier", "matlab_error"]
