"""Warnings attributed to the user's line, so that Python shows and deduplicates them where they belong.

``warnings.warn(..., stacklevel=n)`` with a fixed ``n`` points into torch (``@torch.no_grad()`` wraps
``step``) or into another hessian_core function when the call path changes. :func:`warn_user` walks the
stack to the first frame outside hessian_core, torch and ``contextlib`` instead. Messages given to it are
constant texts (numbers go into results and optimizer state), so that Python's default filter shows each
once per calling line rather than once per step.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import torch

_INTERNAL = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (__file__, torch.__file__))
_CONTEXTLIB = os.path.abspath(contextlib.__file__)


def _internal(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_INTERNAL) or path == _CONTEXTLIB


def warn_user(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first caller outside hessian_core and torch."""
    frame, level = sys._getframe(0), 1
    while frame is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
