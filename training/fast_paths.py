"""Opt-in speed features for the networks in `training.networks`.

The exact (reference) numerics are the default; nothing here runs unless asked for, and no feature
adds, removes or renames parameters or buffers, so `state_dict()` keys and checkpoints are unchanged.

Each public function below documents its path; `resolve_fast_paths` gives a run's settings in one dict
(train.py's options of the same names fill `fast_paths`: `training.options.build_config`).
`nan_to_num_grads_` is bitwise exact and therefore always on. The relative-error budget of each opt-in path
against the exact one is `TOLERANCES` (asserted by tests/test_fast_paths.py); the fused Adam differs in single
last bits because its kernel rounds its intermediate terms differently.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Mapping

import torch

from training.layers import UNetBlock

# Relative-error budgets of each path against the exact path, as asserted by the tests.
TOLERANCES = {'sdpa': 1e-5, 'channels_last': 1e-5, 'bf16': 2e-2, 'fused_adam': 1e-6}

# The speed settings of a run (training_loop's `fast_paths`) and their defaults: the exact path.
FAST_PATH_DEFAULTS = {
    'bf16': False,          # bfloat16 autocast for the forward pass.
    'compile': False,       # torch.compile the network.
    'compile_mode': None,   # torch.compile mode ('default', 'reduce-overhead', 'max-autotune', ...); None = torch's.
    'channels_last': False,  # Channels-last weights and activations.
    'sdpa': False,          # Fused scaled-dot-product attention.
    'fused_adam': False,    # The fused Adam kernel (not bitwise identical to the default Adam).
}

# Optimizers whose constructor takes `fused=True`.
_FUSABLE = ('torch.optim.Adam', 'torch.optim.AdamW')

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


def autocast(device: torch.device | str, dtype: torch.dtype | None = None) -> ContextManager:
    """Mixed-precision context for `device` ('cpu', 'cuda', torch.device...) in `dtype` (torch.bfloat16,
    torch.float16); dtype None gives a null context (exact float32 path)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def autocast_network(net: torch.nn.Module, device: torch.device | str,
                     dtype: torch.dtype | None) -> Callable[..., Any]:
    """`net` itself when dtype is None, else a callable that runs it under `autocast(device, dtype)`.

    Give this to the loss instead of wrapping the whole loss in autocast: the augmentation pipe's
    matrices and filters would otherwise run in the low precision too (its bf16 output differs from the
    float32 one by up to 0.5 on the [-1, 1] scale), so the targets themselves would change.
    """
    return net if dtype is None else autocast(device, dtype)(net)   # torch.autocast decorates the call


def maybe_compile(net: torch.nn.Module, enabled: bool, **compile_kwargs: Any) -> torch.nn.Module:
    """Return `torch.compile(net, **compile_kwargs)` when enabled, else `net` unchanged.

    The compiled wrapper shares parameters with `net` (its state_dict keys gain an `_orig_mod.` prefix,
    so save and load `net` itself, not the wrapper).
    """
    return torch.compile(net, **compile_kwargs) if enabled else net


def resolve_fast_paths(fast_paths: Mapping[str, Any] | None) -> dict:
    """The speed settings of a run: `FAST_PATH_DEFAULTS` updated by `fast_paths` (an unknown key is a ValueError)."""
    unknown = sorted(set(fast_paths or {}) - set(FAST_PATH_DEFAULTS))
    if unknown:
        raise ValueError(f'unknown fast path(s) {", ".join(unknown)}; expected {", ".join(FAST_PATH_DEFAULTS)}')
    return dict(FAST_PATH_DEFAULTS, **(fast_paths or {}))


def optimizer_kwargs_for(optimizer_kwargs: Mapping[str, Any], fused: bool = False) -> dict:
    """`optimizer_kwargs` (class_name + constructor kwargs) with `fused=True` added when asked for.

    Only Adam and AdamW have a fused kernel here; asking for it with another optimizer is a ValueError.
    """
    kwargs = dict(optimizer_kwargs)
    if fused:
        if kwargs.get('class_name') not in _FUSABLE:
            raise ValueError(f'the fused optimizer path needs Adam or AdamW, not {kwargs.get("class_name")}')
        kwargs['fused'] = True
    return kwargs


@torch.no_grad()
def set_optimizer_impl_(optimizer: torch.optim.Optimizer, fused: bool = False) -> None:
    """Make a loaded optimizer run the implementation this run asked for (in place).

    `Optimizer.load_state_dict` restores the saved run's `fused` / `foreach` flags; this sets them back
    (fused=False: torch's default choice) and moves each `step` count where that implementation keeps it:
    on the parameter's device for the fused kernel, on the CPU otherwise (a device-side count would make
    every default step read it back to the host). The counts are small integers, exact in float32.
    """
    for group in optimizer.param_groups:
        if 'fused' not in group:
            continue
        group['fused'] = True if fused else None
        if fused:
            group['foreach'] = None
        capturable = bool(group.get('capturable'))
        for p in group['params']:
            step = optimizer.state.get(p, {}).get('step')
            if isinstance(step, torch.Tensor):
                device = p.device if (fused or capturable) else torch.device('cpu')
                optimizer.state[p]['step'] = step.to(device=device, dtype=torch.float32)
    if fused:
        optimizer._step_supports_amp_scaling = True


@torch.no_grad()
def nan_to_num_grads_(grads: Iterable[torch.Tensor], nan: float = 0.0, posinf: float = 1e5,
                      neginf: float = -1e5) -> None:
    """`torch.nan_to_num(g, nan, posinf, neginf, out=g)` for every gradient `g`, bitwise as that loop.

    On the CPU one multi-tensor check (which multiplies by exactly 1.0) runs first and the per-tensor pass
    is skipped when every value is finite: reading the flag costs nothing there. On other devices the
    per-tensor pass always runs, so that no step waits for the device.
    """
    grads = [g for g in grads if g is not None]
    if not grads:
        return
    if all(g.device.type == 'cpu' for g in grads):
        found = torch.zeros(1)
        try:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones(1))
        except (RuntimeError, NotImplementedError):   # dtype or build without the CPU kernel: plain pass
            found.fill_(1)
        if not found.item():
            return
    for g in grads:
        torch.nan_to_num(g, nan=nan, posinf=posinf, neginf=neginf, out=g)
