"""Process-group set-up from torchrun's environment, plus rank-aware helpers.

`init()` reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (as set by `torchrun`). With
WORLD_SIZE missing or 1 it creates no process group and every helper below behaves as the identity /
a no-op, so the same code runs in one plain `python` process. With several processes it initialises NCCL
on CUDA or gloo on CPU, and on CUDA selects the device `cuda:LOCAL_RANK`.
"""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

_device: torch.device | None = None     # Device chosen by init(); None until then.
_owns_group = False                     # Whether init() created the process group (shutdown() destroys it).


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == '':
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'Environment variable {name}={value!r} is not an integer.') from None


def init(device: str | torch.device | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Set up this process from torchrun's environment and return its device.

    device: 'cuda', 'cpu', a torch.device, or None for CUDA when available else CPU. A CUDA device gets
    the index LOCAL_RANK. The backend is NCCL for CUDA and gloo for CPU. Calling init() again is a no-op.
    """
    global _device, _owns_group
    if _device is not None:
        return _device

    world_size = _env_int('WORLD_SIZE', 1)
    rank = _env_int('RANK', 0)
    local_rank = _env_int('LOCAL_RANK', 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'Invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}.')

    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('CUDA was requested but no CUDA device is available.')
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise RuntimeError(f'LOCAL_RANK={local_rank} needs CUDA device {index}, '
                               f'but only {torch.cuda.device_count()} are visible.')
        device = torch.device('cuda', index)
        torch.cuda.set_device(device)

    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault('MASTER_ADDR', 'localhost')
        os.environ.setdefault('MASTER_PORT', '29500')
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        dist.init_process_group(backend=backend, init_method='env://', rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        _owns_group = True
    _device = device
    return device


def shutdown() -> None:
    """Destroy the process group created by init() (if any) and forget the chosen device."""
    global _device, _owns_group
    if _owns_group and dist.is_initialized():
        dist.destroy_process_group()
    _owns_group = False
    _device = None


def is_initialized() -> bool:
    """True when a torch.distributed process group exists (several processes)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def device() -> torch.device:
    """Device chosen by init(); before init(), CUDA when available else CPU."""
    if _device is not None:
        return _device
    return torch.device('cuda') if torch.cuda.is_available() else torch.device('cpu')


def comm_device() -> torch.device:
    """Device collectives must use: the current CUDA device under NCCL, CPU otherwise."""
    if is_initialized() and dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank `src`'s `obj` on every rank (picklable objects; a trusted, in-job channel)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=comm_device())
    return box[0]


_REDUCE_OPS = {'sum': 'SUM', 'max': 'MAX', 'min': 'MIN', 'product': 'PRODUCT'}


def all_reduce_(tensor: torch.Tensor, op: str = 'sum') -> torch.Tensor:
    """In-place all-reduce over ranks ('sum', 'max', 'min', 'product'); returns `tensor`."""
    if op not in _REDUCE_OPS:
        raise ValueError(f'Unknown reduce op {op!r}; expected one of {sorted(_REDUCE_OPS)}.')
    if is_initialized():
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]))
    return tensor
