"""Published rivals of InfoNoise as σ-samplers with the same interface (sample / observe / step / profile /
state_dict / load_state_dict), so that one training recipe runs them side by side.

Adaptive (they learn from the losses passed to `observe`):

- `LossSecondMomentSampler` (flag value `loss-second-moment`): Nichol & Dhariwal 2021, "Improved denoising
  diffusion probabilistic models", §3.3 / their loss-aware resampler. Per timestep the last H = 10 losses;
  p_t ∝ √E[L_t²], mixed with a uniform distribution of weight 0.001; uniform until every timestep holds H
  losses; each example's loss multiplied by the importance weight 1/(N·p_t) so that the objective stays the
  uniform-timestep one in expectation.
- `KingmaGaoSampler` (flag value `kingma-gao`): Kingma & Gao 2023, "Understanding diffusion objectives as the
  ELBO with simple data augmentation", App. F. Writing the objective as ∫ W(λ) E‖·‖² dλ over log-SNR
  λ and sampling λ ~ p(λ) with weight W/p, the variance-minimising choice is p(λ) ∝ W(λ)·E[‖·‖²(λ)]: a
  running average of the weighted loss per λ bin, p proportional to it, the loss weight divided by p.
- `CDCDSampler` (flag value `cdcd`): Dieleman et al. 2022, "Continuous diffusion for categorical data",
  time warping: a monotone piecewise-linear fit F(σ) of the (unweighted) loss as a function of the noise
  level, normalised, is the CDF of the training σ; the density is ∝ dF/dσ (most draws where the loss
  changes fastest). An allocation sampler: the loss weight is kept, no importance weight.

Fixed:

- `LaplaceSampler` (flag value `laplace`): Hang et al. 2024, "Improved noise schedule for diffusion
  training": log-SNR λ = −2 ln σ ~ Laplace(μ, b), density e^{−|λ−μ|/b} / (2b), defaults μ = 0, b = 0.5.

Shared machinery. The adaptive rivals bin σ on InfoNoise's `SigmaGrid` (one bin = one "timestep" of
improved-diffusion / one λ bin of Kingma & Gao / one knot interval of CDCD) and keep the last `history`
losses of each bin in the same per-bin FIFO ring buffers as `InfoNoiseSampler` (its `observe`). Their
base measure is log-uniform σ on the grid (uniform in λ, the counterpart of uniform timesteps), so the
importance weight of a draw in bin k is (1/K) / p_k. The table is rebuilt on the device every
`refresh_every` steps (default 1, as in the papers): per-bin statistics are all-reduced over ranks when
torch.distributed is initialised (every rank then holds the identical table), and nothing in `sample`,
`observe`, `importance_weight` or `step` reads the device from the host. `step()` returns True every
`log_every` steps, when the training loop appends the profile to infonoise.jsonl.

SD3's logit-normal timestep density (Esser et al. 2024) is EDM's log-normal σ density with a different
(μ, s): with σ = t/(1−t), logit t = ln σ, so `LogNormalSampler(P_mean=μ, P_std=s)` is it.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .adaptive import _BinBuffers, check_state
from .grid import SigmaGrid, check_int
from .samplers import _FixedSampler, empty_profile, weight_on_grid
from .weights import edm_weight

RIVAL_NAMES = ('loss-second-moment', 'kingma-gao', 'cdcd')


def isotonic_increasing(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted least-squares nondecreasing fit of `values` [K] (weights [K] > 0), on their device.

    Uses the min–max formula of isotonic regression, m̃_k = max_{i≤k} min_{j≥k} mean_w(values[i..j]),
    evaluated for all (i, j) at once from cumulative sums: O(K²) work, no data-dependent control flow,
    so no host synchronisation.
    """
    K = values.shape[0]
    s = torch.cat([values.new_zeros(1), torch.cumsum(values * weights, 0)])
    n = torch.cat([weights.new_zeros(1), torch.cumsum(weights, 0)])
    idx = torch.arange(K, device=values.device)
    upper = idx[:, None] <= idx[None, :]                                   # valid (i, j): i <= j
    mean = (s[1:][None, :] - s[:-1][:, None]) / (n[1:][None, :] - n[:-1][:, None]).clamp_min(1e-300)
    mean = torch.where(upper, mean, torch.full_like(mean, float('inf')))
    min_right = torch.flip(torch.cummin(torch.flip(mean, [1]), 1).values, [1])   # [i, k] = min_{j>=k}
    min_right = torch.where(upper, min_right, torch.full_like(min_right, -float('inf')))
    return min_right.max(0).values


class _BinnedRival(_BinBuffers):
    """Shared plumbing of the adaptive rivals: grid, FIFO buffers (InfoNoise's), device table, state.

    Args:
        grid:          SigmaGrid of K log-spaced bins.
        weight_fn:     the training loss weight w(σ) (callable or a `get_weight` name); the importance
                       samplers store w(σ)·error, the base objective's per-example loss.
        history:       H >= 1, losses kept per bin (per rank); the table leaves the uniform start once
                       every bin holds H losses (summed over ranks).
        uniform:       in [0, 1): the table is (1 − uniform)·p + uniform/K.
        refresh_every: >= 1, steps between table rebuilds (on device).
        log_every:     >= 1, `step()` returns True every this many steps (a profile line in training).
        device:        where buffers and the table live; None: the device of the first `observe`/`sample`.
    """

    store_weighted = True     # buffers hold w(σ)·error (False: the unweighted error)
    within_bin_log = True     # draws are log-uniform inside a bin (False: uniform in σ)
    importance = True         # `importance_weight` returns (1/K)/p_k (False: ones)

    def __init__(self, grid: SigmaGrid, weight_fn: Callable | str = edm_weight, history: int = 10,
                 uniform: float = 0.0, refresh_every: int = 1, log_every: int = 200, device=None):
        super().__init__(grid, weight_fn, check_int('history', history, 1))
        self.refresh_every = check_int('refresh_every', refresh_every, 1)
        self.log_every = check_int('log_every', log_every, 1)
        if not (isinstance(uniform, (int, float)) and 0 <= uniform < 1):
            raise ValueError(f'uniform must lie in [0, 1), got {uniform!r}')
        self.uniform = float(uniform)
        K = grid.num_bins
        # Position of the edges in the variable a draw is uniform in inside a bin (ln σ or σ), and its bin widths.
        self._pos = grid.edges.log() if self.within_bin_log else grid.edges.clone()
        self._bin_of = grid.edges[1:-1].float()         # interior edges (float32, as the σ's), for importance_weight
        self._mass = torch.full((K,), 1.0 / K, dtype=torch.float64)        # p_k, the table
        self._install()
        if device is not None:
            self._bind(torch.device(device))

    def _install(self) -> None:
        """Derived device tables of `_mass`: interior CDF, per-bin rows (lower position, lower CDF, d pos/du),
        and the importance weight (1/K)/p_k per bin (ones for an allocation sampler)."""
        mass = self._mass
        cdf = torch.cumsum(mass, 0)
        lower = cdf - mass
        widths = self._pos[1:] - self._pos[:-1]
        scale = torch.where(mass > 0, widths / mass.clamp_min(1e-300), 0.0)
        self._table = (cdf[:-1], torch.stack([self._pos[:-1], lower, scale]))   # as `_table_sigma` reads it
        self._iw = (1.0 / (self.grid.num_bins * mass)).float() if self.importance else torch.ones_like(mass).float()

    _device_state = _BinBuffers._device_state + ('_mass', '_pos', '_bin_of', '_table', '_iw')

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n σ's (float32) from the table: a bin k with probability p_k, then a point inside it. No host sync."""
        u = torch.rand(n, device=self._draw_device(device), generator=generator, dtype=torch.float64)
        pos = self._table_sigma(u)                      # the position inside the chosen bin
        sigma = pos.exp_() if self.within_bin_log else pos
        return sigma.clamp_(self.grid.sigma_min, self.grid.sigma_max).float()

    def importance_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """Per-example weight base/π = (1/K)/p_k for σ in bin k (float32, σ's shape); ones for an allocation
        sampler. Multiplying the loss weight by it keeps E_π[weight·w·error] = E_base[w·error]."""
        bin_of = self._bin_of.to(sigma.device, sigma.dtype)         # no copy when already there
        return self._iw.to(sigma.device)[torch.bucketize(sigma, bin_of, right=True)]

    # ------------------------------------------------------------------ observing and rebuilding

    def observe(self, sigma: torch.Tensor, loss: torch.Tensor) -> None:
        """Push per-example losses (w(σ)·error for the importance samplers) into the bins' FIFO buffers."""
        if self.store_weighted and isinstance(sigma, torch.Tensor) and isinstance(loss, torch.Tensor):
            flat = sigma.detach().reshape(-1)
            if flat.shape == loss.shape:
                loss = loss.detach() * self.weight_fn(flat.double()).to(loss.dtype)
        super().observe(sigma, loss)

    def _statistic(self, sums: torch.Tensor, counts: torch.Tensor,
                   squares: torch.Tensor | None = None) -> torch.Tensor:
        """The unnormalised per-bin mass q_k >= 0 (device tensor [K])."""
        raise NotImplementedError

    def step(self) -> bool:
        """Count one optimizer step; rebuild the table every `refresh_every` steps (device only). True every
        `log_every` steps."""
        self._step += 1
        if self._step % self.refresh_every == 0:
            self._rebuild()
        return self._step % self.log_every == 0

    def _rebuild(self) -> None:
        K = self.grid.num_bins
        sums, counts, *squares = self._reduced()
        q = self._statistic(sums, counts, *squares)
        total = q.sum()
        ready = (counts.min() >= self.buffer_size) & (total > 0)
        mass = torch.where(ready, q / total, 1.0 / K)
        if self.uniform > 0:
            mass = mass.mul_(1 - self.uniform).add_(self.uniform / K)
        self._mass = mass
        self._install()
        self._refreshes += 1

    # ------------------------------------------------------------------ telemetry and state

    def density(self) -> np.ndarray:
        """The current sampling density π(σ), bin-averaged, on the grid (float64 [K], host)."""
        return self._mass.cpu().numpy() / self.grid.widths.numpy()

    def profile(self) -> dict:
        """Telemetry (the keys of InfoNoise's profile): pi, rho (= pi, the density the rival targets), phi (the
        effective emphasis per σ: π·w, times the importance weight for an importance sampler), u (CDF of π at
        the edges), mse (per-bin mean of the stored losses), counts (this rank), step, refreshes."""
        grid = self.grid
        prof = empty_profile(grid)
        mass = self._mass.cpu().numpy()
        pi = self.density()
        total = self._total.cpu().numpy()
        counts = np.minimum(total[:-1], self.buffer_size)
        sums = self._buf[:grid.num_bins].sum(1, dtype=torch.float64).cpu().numpy()
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        # φ = the effective emphasis π·w·(importance weight): for an importance sampler that is the base
        # (log-uniform) density times w, whatever π is.
        emphasis = np.full(grid.num_bins, 1.0 / grid.num_bins) / grid.widths.numpy() if self.importance else pi
        prof.update(pi=pi, rho=pi.copy(), phi=emphasis * weight_on_grid(grid, self.weight_fn),
                    u=np.concatenate([[0.0], np.cumsum(mass)]), mse=mean,
                    counts=counts, step=self._step,
                    refreshes=self._refreshes, dropped_nonfinite=int(total[-1]))
        return prof

    def state_dict(self) -> dict:
        """Everything for an exact resume (CPU tensors, plain numbers)."""
        K = self.grid.num_bins
        return {'num_bins': K, 'history': self.buffer_size, 'step': self._step, 'refreshes': self._refreshes,
                'buf': self._buf.cpu().clone().index_fill_(0, torch.tensor([K]), 0.0),
                'total': self._total.cpu().clone(), 'mass': self._mass.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()` of a sampler with the same grid size and history."""
        check_state(state, ('step', 'refreshes', 'buf', 'total', 'mass'),
                    {'num_bins': self.grid.num_bins, 'history': self.buffer_size})
        device = self._state_device()
        self._buf = state['buf'].to(device, torch.float32).clone()
        self._total = state['total'].to(device, torch.int64).clone()
        self._mass = state['mass'].to(device, torch.float64).clone()
        self._install()
        self._step, self._refreshes = int(state['step']), int(state['refreshes'])

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.grid!r}, history={self.buffer_size}, uniform={self.uniform}, '
                f'refresh_every={self.refresh_every}, log_every={self.log_every})')


class LossSecondMomentSampler(_BinnedRival):
    """improved-diffusion's loss-aware resampler on σ bins: p_k ∝ √(mean of L² over the bin's last H losses).

    Nichol & Dhariwal 2021 (§3.3, `LossSecondMomentResampler`): L = the base objective's per-example loss
    w(σ)·error, H = `history` = 10, `uniform` = 0.001 mixed in, uniform until every bin holds H losses,
    importance weight 1/(K·p_k) (the paper's 1/(N·p_t) with the K bins as its N timesteps). Args as
    `_BinnedRival` (defaults: history 10, uniform 0.001).
    """

    def __init__(self, grid: SigmaGrid, weight_fn: Callable | str = edm_weight, history: int = 10,
                 uniform: float = 0.001, refresh_every: int = 1, log_every: int = 200, device=None):
        super().__init__(grid, weight_fn, history, uniform, refresh_every, log_every, device)

    needs_squares = True

    def _statistic(self, sums, counts, squares=None):
        return torch.sqrt(squares / counts.clamp_min(1))


class KingmaGaoSampler(_BinnedRival):
    """Kingma & Gao 2023 App. F: p(λ) ∝ running average of the weighted loss W(λ)·E‖·‖² per λ bin.

    The running average here is the mean of the bin's last H = `history` losses (InfoNoise's FIFO buffers;
    a window, where the paper's appendix describes a running average without a window tied to these
    buffers); the loss weight is divided by p, i.e. multiplied by the
    importance weight (1/K)/p_k, so the objective is unchanged in expectation. λ = −2 ln σ, so bins in ln σ
    are bins in λ. Args as `_BinnedRival` (defaults: history 10, uniform 0: no uniform share).
    """

    def _statistic(self, sums, counts, squares=None):
        return sums / counts.clamp_min(1)


class CDCDSampler(_BinnedRival):
    """CDCD time warping (Dieleman et al. 2022): the normalised monotone fit of loss vs σ is the CDF of σ.

    Per bin the mean of the last H unweighted losses ℓ̄_k (the CDCD loss has w ≡ 1; here the pipeline's w
    is kept, this is an allocation sampler); F̃ = weighted isotonic (nondecreasing) least-squares fit of ℓ̄
    with the counts as weights (`isotonic_increasing`); F at the grid's edges is the mean of the two
    neighbouring fitted values (the end values at σ_min and σ_max), piecewise linear in σ between edges;
    the CDF is (F − F(σ_min)) / (F(σ_max) − F(σ_min)), so bin k carries the mass F(edge_{k+1}) − F(edge_k)
    spread uniformly in σ. Flat stretches of the fit get no mass; `uniform` (default 0.001; the paper has
    none) keeps them observed. Args as `_BinnedRival`.
    """

    store_weighted = False
    within_bin_log = False
    importance = False

    def __init__(self, grid: SigmaGrid, weight_fn: Callable | str = edm_weight, history: int = 10,
                 uniform: float = 0.001, refresh_every: int = 1, log_every: int = 200, device=None):
        super().__init__(grid, weight_fn, history, uniform, refresh_every, log_every, device)

    def _statistic(self, sums, counts, squares=None):
        means = sums / counts.clamp_min(1)
        fit = isotonic_increasing(means, counts.clamp_min(1))
        knots = torch.cat([fit[:1], (fit[1:] + fit[:-1]) / 2, fit[-1:]])
        return knots.diff().clamp_min(0)


class LaplaceSampler(_FixedSampler):
    """log-SNR λ = −2 ln σ ~ Laplace(mu, b) (Hang et al. 2024, "Improved noise schedule for diffusion
    training"; their defaults μ = 0, b = 0.5).

    Args:
        mu: location μ of λ (finite).
        b:  scale b of λ, > 0.
    """

    def __init__(self, mu: float = 0.0, b: float = 0.5):
        super().__init__()
        if not (isinstance(mu, (int, float)) and math.isfinite(mu)):
            raise ValueError(f'mu must be finite, got {mu!r}')
        if not (isinstance(b, (int, float)) and math.isfinite(b) and b > 0):
            raise ValueError(f'the Laplace scale b must be a finite number > 0, got {b!r}')
        self.mu, self.b = float(mu), float(b)

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (float32): λ = μ − b·sgn(v)·ln(1 − 2|v|), v = U[0, 1) − ½, σ = e^{−λ/2}."""
        v = torch.rand(n, device=device, generator=generator, dtype=torch.float64) - 0.5
        lam = self.mu - self.b * torch.sign(v) * torch.log1p(-2 * v.abs()).clamp_min(-700.0)
        return torch.exp(-0.5 * lam).float()

    def cdf_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        """P(λ' <= lam) of the Laplace distribution."""
        z = (lam - self.mu) / self.b
        return torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))

    def _bin_mass(self, grid: SigmaGrid) -> np.ndarray:
        lam = -2 * grid.edges.log()                     # decreasing with σ
        return (self.cdf_lambda(lam[:-1]) - self.cdf_lambda(lam[1:])).numpy()
