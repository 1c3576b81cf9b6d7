"""bridge: MATLAB dlnetworks made computable by hessian_core, with MATLAB's losses and Learnables ordering.

``bridge.api`` (hessian, hvp, diagonal, blocks, eigs, trace, newton_update, index_map, loss_value) takes a
network spec exported by ``dlnetworkToSpec`` plus data; :class:`MatlabSession` drives a MATLAB workspace
through the Engine API. See docs/bridge.md.
"""

from . import api
from .network import MatlabNetwork
from .session import MatlabSession
from .spec import normalize_spec

__all__ = ["api", "MatlabSession", "MatlabNetwork", "normalize_spec"]
