"""Transports between MATLAB (or GNU Octave) and :mod:`bridge.api`.

* :mod:`.matfile` -- the request/response ``.mat`` protocol. MATLAB saves a request (``-v7``), Python
  runs it and saves a response. Started as ``python -m bridge.transport.matfile REQ RESP`` (subprocess
  transport: any Python version, MATLAB or Octave) or called in-process as
  ``py.bridge.transport.matfile.run(REQ, RESP)`` (MATLAB's ``py.`` transport). Same files either way.
* :mod:`.codec` -- decoding requests (restoring the shapes and lists that ``.mat`` loading squeezes) and
  encoding results and errors for ``savemat``.
* :mod:`.check` -- ``python -m bridge.transport.check``: the environment report ``hessiancoreSetup`` reads.
* :mod:`.fallback` -- Python's algorithms (eigs, trace, CG) driving Hessian-vector products that MATLAB
  computes itself (``dlgradient``), for layers the translator does not support.
"""
