"""Opt-in speed features for the networks in `training.networks`.

The exact (reference) numerics are the default; nothing here runs unless asked for, and no feature
adds, removes or renames parameters or buffers, so `state_dict()` keys and checkpoints are unchanged.

- `apply_fast_paths(net, sdpa=..., channels_last=...)`: switch an existing network in place to
  fused scaled-dot-product attention and/or channels-last weight layout (and back).
- `autocast(device, dtype)`: mixed-precision context (e.g. bfloat16) for the forward pass; a
  null context when `dtype` is None.
- `maybe_compile(net, enabled)`: `torch.compile` wrapper.

Measured tolerances against the exact path (CPU, float32; tests/test_fast_paths.py):
sdpa and channels_last stay within 1e-5 relative error, bfloat16 autocast within 2e-2.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from training.layers import UNetBlock

# Relative-error budgets of each path against the exact path, as asserted by the tests.
TOLERANCES = {'sdpa': 1e-5, 'channels_last': 1e-5, 'bf16': 2e-2}

_DTYPES = {'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16, 'fp16': torch.float16, 'float16': torch.float16}


def set_fused_attention(net: torch.nn.Module, enabled: bool) -> int:
    """Route every attention block of `net` through scaled_dot_product_attention (or back).

    Returns the number of attention blocks affected. The switch is a plain boolean on each block; when it is
    False the block keeps the class-level default (the reference float32-softmax attention).
    """
    count = 0
    for module in net.modules():
        if isinstance(module, UNetBlock):
            if enabled:
                module.fused_attention = True
            else:
                module.__dict__.pop('fused_attention', None)
            count += bool(module.num_heads)
    return count


def apply_fast_paths(net: torch.nn.Module, *, sdpa: bool = False, channels_last: bool = False) -> torch.nn.Module:
    """Set the opt-in paths of `net` in place and return it.

    sdpa: fused attention via torch.nn.functional.scaled_dot_product_attention.
    channels_last: store 4-D weights as NHWC so convolutions (and the activations they produce) run
    channels-last; False restores the contiguous NCHW layout. Parameters keep their identity, so an
    optimizer built before the call stays valid.
    Calling with the defaults restores the exact path.
    """
    set_fused_attention(net, sdpa)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        for tensor in list(net.parameters()) + list(net.buffers()):
            if tensor.dim() == 4 and not tensor.is_contiguous(memory_format=memory_format):
                tensor.data = tensor.data.contiguous(memory_format=memory_format)
    return net


def autocast(device: torch.device | str, dtype: torch.dtype | str | None = None) -> ContextManager:
    """Mixed-precision context for `device` ('cpu', 'cuda', torch.device...).

    dtype None gives a null context (exact float32 path); otherwise torch.bfloat16 / torch.float16 or
    one of the strings 'bf16', 'bfloat16', 'fp16', 'float16'.
    """
    if dtype is None:
        return contextlib.nullcontext()
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f'unknown autocast dtype {dtype!r}; expected one of {", ".join(_DTYPES)}')
        dtype = _DTYPES[dtype]
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=dtype)


def compile_available() -> bool:
    """True when this torch build offers torch.compile at all (the backend may still fail later)."""
    return hasattr(torch, 'compile')


def maybe_compile(net: torch.nn.Module, enabled: bool, **compile_kwargs) -> torch.nn.Module:
    """Return `torch.compile(net, **compile_kwargs)` when enabled, else `net` unchanged.

    The compiled wrapper shares parameters with `net` (its state_dict keys gain an `_orig_mod.` prefix,
    so save and load `net` itself, not the wrapper).
    """
    if not enabled:
        return net
    if not compile_available():
        raise RuntimeError('torch.compile is not available in this torch build')
    return torch.compile(net, **compile_kwargs)
