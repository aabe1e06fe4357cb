"""Load a network snapshot (ours or an official EDM pickle) from a path or URL without running its code.

`load_network` opens the file through `dnnlib.util.open_url` (local paths, file:// and http(s) URLs
with the download cache) and unpickles it with `torch_utils.persistence.load_network_pickle`, the
restricted unpickler that maps persistent-class records onto this project's classes (`class_map()`:
the persistent classes of training.networks, training.networks_dna, training.layers, training.loss and
training.augment) and refuses anything else. Every failure surfaces as one `NetworkLoadError` sentence that
names the file.
"""
from __future__ import annotations

import os

import torch

from dnnlib import util
from torch_utils import persistence


class NetworkLoadError(ValueError):
    """A network snapshot could not be opened, was refused by the safe unpickler, or lacks a network."""


def class_map() -> dict[str, type]:
    """Record class name -> this project's class, for every persistent class a snapshot may hold."""
    from training import augment, layers, loss, networks, networks_dna
    modules = {m.__name__ for m in (augment, layers, loss, networks, networks_dna)}
    return {name: cls for name, cls in persistence.persistent_classes().items() if cls.__module__ in modules}


def load_network(path_or_url: str, device: torch.device | str = 'cpu', key: str = 'ema') -> dict:
    """Load a snapshot dict (keys such as 'ema', 'loss_fn', 'augment_pipe', 'dataset_kwargs', 'infonoise').

    The network under `key` is moved to `device`, put in eval mode and frozen (requires_grad=False).
    A bare network pickle (an nn.Module instead of a dict) is returned as {key: module}.
    """
    is_url = '://' in path_or_url
    if not is_url and not os.path.isfile(path_or_url):
        raise NetworkLoadError(f'Network file {path_or_url} does not exist.')
    try:
        with util.open_url(path_or_url) as f:
            data = persistence.load_network_pickle(f, class_map=class_map())
    except Exception as exc:  # I/O, download, or refusal by the restricted unpickler
        raise NetworkLoadError(f'Cannot load network {path_or_url}: {util.first_line(exc).rstrip(".")}.') from exc

    if isinstance(data, torch.nn.Module):
        data = {key: data}
    if not isinstance(data, dict):
        raise NetworkLoadError(f'{path_or_url} holds a {type(data).__name__}, not a network snapshot dict.')
    net = data.get(key)
    if not isinstance(net, torch.nn.Module):
        found = ', '.join(sorted(map(str, data))) or 'none'
        raise NetworkLoadError(f'{path_or_url} has no network under {key!r} (keys: {found}).')
    net.eval().requires_grad_(False).to(device)
    return data
