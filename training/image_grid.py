"""Sample grids: draw images from a network with EDM's sampler and save them tiled into one PNG."""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import PIL.Image
import torch

from dnnlib import util

SUPPORTED_CHANNELS = (1, 3)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Network-range images [N, C, H, W] (about [-1, 1]) to uint8 as EDM saves them: x·127.5 + 128, clipped."""
    return (images.detach().float() * 127.5 + 128).clip(0, 255).to(torch.uint8).cpu().numpy()


def tile(images: np.ndarray, grid_w: int | None = None, pad: int = 0, pad_value: int = 64) -> np.ndarray:
    """uint8 [N, C, H, W] -> one uint8 image [rows·(H+pad)+pad, grid_w·(W+pad)+pad, C], row-major.

    grid_w: images per row (default: ceil(sqrt(N))); pad: border pixels around every cell, drawn in
    `pad_value` (helps to tell tiny images apart); blank cells are black.
    """
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError('No images to tile.')
    grid_w = grid_w or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / grid_w))
    cells = np.zeros([rows * grid_w, c, h, w], dtype=np.uint8)
    cells[:n] = images
    cells = np.pad(cells, [(0, 0), (0, 0), (pad, 0), (pad, 0)], constant_values=pad_value)
    cells = cells.reshape(rows, grid_w, c, h + pad, w + pad).transpose(0, 3, 1, 4, 2)
    canvas = cells.reshape(rows * (h + pad), grid_w * (w + pad), c)
    return np.pad(canvas, [(0, pad), (0, pad), (0, 0)], constant_values=pad_value)


def save_image_grid(images: torch.Tensor | np.ndarray, path: str, grid_w: int | None = None, pad: int = 0,
                    scale: int = 1) -> None:
    """Save network-range float images (or uint8 [N, C, H, W]) tiled into one PNG, atomically (see `tile`).

    scale: integer nearest-neighbour magnification of the whole grid (tiny images stay legible).
    Only 1 (grayscale) or 3 (RGB) channels form an image; anything else raises ValueError.
    """
    if scale < 1:
        raise ValueError(f'scale must be an integer >= 1, got {scale}.')
    array = images if isinstance(images, np.ndarray) and images.dtype == np.uint8 else to_uint8(torch.as_tensor(images))
    if array.ndim != 4 or array.shape[1] not in SUPPORTED_CHANNELS:
        raise ValueError(f'A sample grid needs [N, 1 or 3, H, W] images, got shape {list(array.shape)}.')
    canvas = tile(array, grid_w, pad)
    if scale > 1:
        canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    with util.atomic_write(path) as f:
        f.write(png_bytes(canvas))


def png_bytes(image: np.ndarray, **save_kwargs: Any) -> bytes:
    """A uint8 [H, W, C] image (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) as PNG file bytes (PIL save kwargs)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format='PNG', **save_kwargs)
    return buf.getvalue()


@torch.no_grad()
def sample_images(net: torch.nn.Module, num: int, seed: int = 0, num_steps: int = 18,
                  device: torch.device | str = 'cpu') -> torch.Tensor:
    """`num` images from `net` with EDM's deterministic Heun sampler (float64, network range).

    Latents come from one generator seeded with `seed`; a class-conditional net gets the classes
    0, 1, 2, ... in turn, so a grid `label_dim` wide shows one class per column.
    """
    from training.sampler import edm_sampler
    device = torch.device(device)
    gen = torch.Generator(device='cpu').manual_seed(int(seed))
    from training.networks import data_shape
    latents = torch.randn([num, *data_shape(net)], generator=gen).to(device)
    class_labels = None
    if getattr(net, 'label_dim', 0):
        class_labels = torch.eye(net.label_dim, device=device)[torch.arange(num, device=device) % net.label_dim]
    return edm_sampler(net, latents, class_labels, num_steps=num_steps)


def grid_width(net: torch.nn.Module, num: int) -> int | None:
    """Row width for a sample grid of `num` images: the class count for conditional nets (one class per column),
    else None (`tile`'s square default)."""
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    return label_dim if 0 < label_dim <= num else None
