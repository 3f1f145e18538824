"""PDE parameters of a PDEBench file: from its name and its numeric attributes."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

_PARAM_TOKEN = re.compile(r"^([A-Za-z]+)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")
# PDEBench's compressible CFD files name their boundary: periodic, or "trans" (transmissive, outgoing).
_CFD_BOUNDARY = {"periodic": 1.0, "trans": 0.0}


def parse_params_from_name(file_name: str) -> dict[str, float]:
    """PDE parameters encoded in a PDEBench file name, names lower-cased.

    ``"ReacDiff_Nu0.5_Rho1.0.hdf5"`` -> ``{"nu": 0.5, "rho": 1.0}``. Tokens are split on
    ``_``; a token counts when it is letters followed by a number (``Nu1e-3``, ``beta0.4``);
    tokens such as ``1D``, ``Sols``, ``Train`` or ``128`` are ignored. In a compressible CFD
    file's name (a ``CFD`` token) the boundary token becomes ``periodic``: 1 for
    ``periodic``, 0 for ``trans`` (``1D_CFD_Shock_Eta1.e-8_Zeta1.e-8_trans_Train.hdf5``).
    """
    stem = re.sub(r"\.(hdf5|h5|hdf)\Z", "", Path(file_name).name, flags=re.I)
    params: dict[str, float] = {}
    tokens = stem.split("_")
    cfd = any(token.upper() == "CFD" for token in tokens)
    for token in tokens:
        match = _PARAM_TOKEN.match(token)
        if match:
            params[match.group(1).lower()] = float(match.group(2))
        elif cfd and token.lower() in _CFD_BOUNDARY:
            params["periodic"] = _CFD_BOUNDARY[token.lower()]
    return params


def numeric_attrs(attrs: h5py.AttributeManager) -> dict[str, float]:
    """Numeric scalar attributes, names lower-cased; booleans, strings, arrays and the
    generator's own bookkeeping (``ups_*``: seed, sizes, format version) skipped."""
    out = {}
    for key, value in attrs.items():
        if str(key).startswith("ups_") or np.ndim(value) != 0 or isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)):
            out[str(key).lower()] = float(value)
    return out
