"""The log-spaced σ grid on which InfoNoise estimates its profile.

K bins I_k = [edge_k, edge_{k+1}) split [σ_min, σ_max] evenly in log σ. Each bin carries its geometric
centre σ_k = sqrt(edge_k · edge_{k+1}) and its width Δσ_k = edge_{k+1} − edge_k. The grid is used for
estimation and numerical integration only; sampling stays continuous in σ.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def check_int(name: str, value, minimum: int) -> int:
    """`value` as an int (integral floats such as 200.0 from JSON are accepted)."""
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating))
                                                        and float(value).is_integer())
    if isinstance(value, bool) or not integral or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
    return int(value)


def check_sigma_range(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """(sigma_min, sigma_max) as floats; ValueError unless both are finite and 0 < sigma_min < sigma_max."""
    sigma_min, sigma_max = float(sigma_min), float(sigma_max)
    if not (math.isfinite(sigma_min) and sigma_min > 0):
        raise ValueError(f'sigma_min must be a finite number > 0, got {sigma_min}')
    if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
        raise ValueError(f'sigma_max must be finite and greater than sigma_min={sigma_min}, got {sigma_max}')
    return sigma_min, sigma_max


class SigmaGrid:
    """Log-spaced bins on [sigma_min, sigma_max].

    Args:
        sigma_min: lower end of the grid, > 0.
        sigma_max: upper end of the grid, > sigma_min.
        num_bins:  number of bins K, >= 2.

    Attributes (float64 CPU tensors): `edges` [K+1], `sigma` [K] (geometric centres), `widths` [K] (Δσ_k).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, num_bins: int = 64):
        sigma_min, sigma_max = check_sigma_range(sigma_min, sigma_max)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.num_bins = check_int('num_bins', num_bins, 2)
        self.log_min = math.log(sigma_min)
        self.log_max = math.log(sigma_max)
        self.log_width = (self.log_max - self.log_min) / self.num_bins   # width of one bin in log σ

        log_edges = torch.linspace(self.log_min, self.log_max, self.num_bins + 1, dtype=torch.float64)
        edges = log_edges.exp()
        edges[0], edges[-1] = sigma_min, sigma_max                     # exact ends despite exp rounding
        self.edges = edges
        self.sigma = (edges[:-1] * edges[1:]).sqrt()
        self.widths = edges[1:] - edges[:-1]
        self._inner_edges = {}

    def bin_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """Bin k of every σ (any shape) as a LongTensor on σ's device. No host synchronisation.

        σ below the grid (also σ <= 0 and −inf) go to bin 0, σ above it (also +inf and NaN) to bin K−1.
        """
        sigma = torch.as_tensor(sigma)
        if not sigma.is_floating_point():
            sigma = sigma.double()
        key = (sigma.device, sigma.dtype)
        inner = self._inner_edges.get(key)
        if inner is None:                 # the K−1 interior edges, cached per device and dtype
            inner = self._inner_edges[key] = self.edges[1:-1].to(sigma.device, sigma.dtype)
        return torch.bucketize(sigma, inner, right=True)

    def __repr__(self) -> str:
        return f'SigmaGrid(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, num_bins={self.num_bins})'
