"""Profiles as plain data: lists, floats, ints and None (JSON- and safe-pickle-friendly).

Non-finite floats (the NaN of an estimate that does not exist yet) become None and come back as NaN.
"""
from __future__ import annotations

import math

import numpy as np
import torch

INT_ARRAYS = ('counts',)   # arrays restored with an integer dtype


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):   # numpy scalars -> bool, int, float (str)
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise ValueError(f'cannot serialise a profile entry of type {type(value).__name__}')


def profile_to_json(profile: dict) -> dict:
    """A copy of `profile` with numpy arrays as lists and numpy scalars as Python numbers."""
    return {str(k): _plain(v) for k, v in profile.items()}


def profile_from_json(d: dict) -> dict:
    """Inverse of `profile_to_json`: lists back to float64 numpy arrays (int64 for counts)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, list):
            if k in INT_ARRAYS:
                out[k] = np.asarray(v, dtype=np.int64)
            else:
                out[k] = np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)
        elif v is None:
            out[k] = float('nan')
        else:
            out[k] = v
    return out
