"""Fixed σ distributions with the shared σ-sampler interface.

`LogNormalSampler` is EDM's training distribution, `LogUniformSampler` the uniform-in-log σ one. Their
`sample` expressions are the reference losses' own, so a loss that draws σ through them consumes the
random stream exactly as the reference does. `observe` is a no-op and `step` only counts steps, so a
fixed sampler can stand wherever an `InfoNoiseSampler` can.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import numpy as np
import torch

from .grid import SigmaGrid, check_sigma_range


def default_grid() -> SigmaGrid:
    """The grid that fixed samplers report their density on when none is given."""
    return SigmaGrid(0.002, 80.0, 64)


def empty_profile(grid: SigmaGrid) -> dict:
    """A telemetry dict (the keys of `InfoNoiseSampler.profile()`) on `grid` with every estimate still unknown (NaN)."""
    num_bins = grid.num_bins
    nan_k = np.full(num_bins, np.nan)
    return dict(
        sigma=grid.sigma.numpy().copy(), edges=grid.edges.numpy().copy(),
        mse=nan_k.copy(), rate=nan_k.copy(), pivot=float('nan'), gated_rate=nan_k.copy(),
        rho=nan_k.copy(), pi=nan_k.copy(), phi=nan_k.copy(), u=np.full(num_bins + 1, np.nan),
        counts=np.zeros(num_bins, dtype=np.int64), step=0, refreshes=0, dropped_nonfinite=0,
    )


def loguniform_bin_density(grid: SigmaGrid, sigma_min: float, sigma_max: float) -> np.ndarray:
    """Bin-averaged density of LogUniform(sigma_min, sigma_max) on the bins of `grid` (float64 [K])."""
    log_edges = np.log(grid.edges.numpy())
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    mass = np.diff(np.clip(log_edges, lo, hi)) / (hi - lo)
    return mass / grid.widths.numpy()


def weight_on_grid(grid: SigmaGrid, weight_fn: Callable | None) -> np.ndarray:
    """w(σ_k) at the grid's centres (float64 numpy [K]); NaN everywhere without a weight_fn."""
    if weight_fn is None:
        return np.full(grid.num_bins, np.nan)
    w = weight_fn(grid.sigma.clone())
    return np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w, dtype=np.float64)


class _FixedSampler:
    """Shared plumbing of the fixed samplers: step counting, telemetry, state."""

    def __init__(self):
        self._step = 0

    def observe(self, sigma: torch.Tensor, loss: torch.Tensor) -> None:
        """Fixed samplers learn nothing from the losses."""

    def step(self) -> bool:
        """Count one optimizer step; a fixed sampler never rebuilds."""
        self._step += 1
        return False

    def _bin_mass(self, grid: SigmaGrid) -> np.ndarray:
        raise NotImplementedError

    def profile(self, grid: SigmaGrid | None = None, weight_fn: Callable | None = None) -> dict:
        """Telemetry on `grid` (default SigmaGrid(0.002, 80, 64)): `pi` is the bin-averaged density.

        `phi` = π·w needs `weight_fn`; without it (and for the estimates a fixed sampler does not make)
        the entries are NaN.
        """
        grid = default_grid() if grid is None else grid
        prof = empty_profile(grid)
        prof['pi'] = self._bin_mass(grid) / grid.widths.numpy()
        prof['phi'] = prof['pi'] * weight_on_grid(grid, weight_fn)
        prof['step'] = self._step
        return prof

    def state_dict(self) -> dict:
        return {'step': self._step}

    def load_state_dict(self, state: dict) -> None:
        if 'step' not in state:
            raise ValueError('sampler state has no "step" entry')
        self._step = int(state['step'])

    def __repr__(self) -> str:
        """The class and its constructor arguments, e.g. `LogNormalSampler(P_mean=-1.2, P_std=1.2)`."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return f'{type(self).__name__}({", ".join(f"{name}={getattr(self, name)!r}" for name in names)})'


class LogNormalSampler(_FixedSampler):
    """ln σ ~ N(P_mean, P_std²), EDM's training distribution.

    Args:
        P_mean: mean of ln σ.
        P_std:  standard deviation of ln σ, > 0.
    """

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2):
        super().__init__()
        if not math.isfinite(P_mean):
            raise ValueError(f'P_mean must be finite, got {P_mean}')
        if not math.isfinite(P_std) or P_std <= 0:
            raise ValueError(f'P_std must be a finite number > 0, got {P_std}')
        self.P_mean = float(P_mean)
        self.P_std = float(P_std)

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (float32) on `device`, with exactly the reference's expression and random stream."""
        return (torch.randn(n, device=device, generator=generator) * self.P_std + self.P_mean).exp()

    def _bin_mass(self, grid: SigmaGrid) -> np.ndarray:
        z = (grid.edges.log() - self.P_mean) / self.P_std
        return torch.special.ndtr(z).diff().numpy()


class LogUniformSampler(_FixedSampler):
    """ln σ ~ U(ln sigma_min, ln sigma_max).

    Args:
        sigma_min: lower end, > 0.
        sigma_max: upper end, > sigma_min.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        super().__init__()
        self.sigma_min, self.sigma_max = check_sigma_range(sigma_min, sigma_max)

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (float32) on `device`: sigma_min · (sigma_max / sigma_min) ** U(0, 1)."""
        return self.sigma_min * ((self.sigma_max / self.sigma_min) ** torch.rand(n, device=device,
                                                                                  generator=generator))

    def _bin_mass(self, grid: SigmaGrid) -> np.ndarray:
        return loguniform_bin_density(grid, self.sigma_min, self.sigma_max) * grid.widths.numpy()


def ddpm_sigma_levels(num_steps: int = 50, beta_start: float = 1e-4, beta_end: float = 0.2) -> np.ndarray:
    """σ_t = sqrt((1 − ᾱ_t) / ᾱ_t), t = 1..num_steps, of a linear β schedule (float64 [num_steps], increasing).

    β_t runs linearly from beta_start to beta_end and ᾱ_t = Π_{s≤t} (1 − β_s). The defaults are
    DNA-Diffusion's schedule (50 steps, β from 1e-4 to 0.2): σ from 0.0100 to 14.7.
    """
    if int(num_steps) < 1:
        raise ValueError(f'num_steps must be a positive integer, got {num_steps}')
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f'Need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}')
    beta = np.linspace(beta_start, beta_end, int(num_steps), dtype=np.float64)
    alpha_bar = np.cumprod(1.0 - beta)
    return np.sqrt((1.0 - alpha_bar) / alpha_bar)


class DDPMSampler(_FixedSampler):
    """σ uniform over the levels of a DDPM linear-β schedule (DNA-Diffusion's training noise: t ~ U{1..T}).

    Args:
        num_steps:  T, the number of levels (DNA-Diffusion: 50).
        beta_start: β_1 (DNA-Diffusion: 1e-4).
        beta_end:   β_T (DNA-Diffusion: 0.2).
    """

    def __init__(self, num_steps: int = 50, beta_start: float = 1e-4, beta_end: float = 0.2):
        super().__init__()
        self.num_steps = int(num_steps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.levels = ddpm_sigma_levels(self.num_steps, self.beta_start, self.beta_end)
        self._levels_f32 = torch.from_numpy(self.levels.astype(np.float32))

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (float32) on `device`: levels[t], t uniform over 0..num_steps-1."""
        t = torch.randint(self.num_steps, (n,), device=device, generator=generator)
        return self._levels_f32.to(t.device)[t]

    def _bin_mass(self, grid: SigmaGrid) -> np.ndarray:
        edges = grid.edges.numpy().astype(np.float64)
        index = np.searchsorted(edges, self.levels, side='right') - 1
        inside = (index >= 0) & (index < grid.num_bins)
        return np.bincount(index[inside], minlength=grid.num_bins)[:grid.num_bins] / self.num_steps
