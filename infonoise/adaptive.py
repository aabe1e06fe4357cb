"""InfoNoiseSampler: the online, entropy-rate-driven σ distribution (paper Algorithm 1).

Life of the sampler, per optimizer step:

    sigma = s.sample(n, device)      # base sampler until the first refresh, then the table (+ floor)
    ... loss_k = mean over elements of (D(x_σ) − y)², unweighted ...
    s.observe(sigma, loss)           # push into per-bin FIFO ring buffers, on device, no host sync
    s.step()                         # count the step; every `refresh_every` steps after warm-up, rebuild

A refresh reads the per-bin buffer sums and counts (all-reduced over ranks when torch.distributed is
initialised, so every rank builds the bitwise-identical table), updates the EMA of the bin means,
forms r = mse/σ³, finds the pivot, gates, divides by w(σ) and tabulates the density (see profile.py).
It is the only place with a device→host read.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .grid import SigmaGrid, check_int
from .profile import gated_profile, sampler_table
from .samplers import LogNormalSampler, empty_profile, loguniform_bin_density, weight_on_grid
from .weights import edm_weight, get_weight

ENDPOINTS = ('continuous', 'discrete')


def check_min_count(min_count: int, buffer_size: int) -> None:
    """ValueError unless a refresh can happen: every bin needs `min_count` losses and keeps `buffer_size`."""
    if min_count > buffer_size:
        raise ValueError(f'min_count={min_count} can never be reached with buffer_size={buffer_size} losses per bin')


def check_state(state: dict, keys: tuple[str, ...], sizes: dict[str, int]) -> None:
    """ValueError unless a sampler `state` holds every key and the sizes (e.g. num_bins) this sampler has."""
    missing = [k for k in keys + tuple(sizes) if k not in state]
    if missing:
        raise ValueError(f'sampler state lacks {", ".join(missing)}')
    if any(int(state[k]) != v for k, v in sizes.items()):
        raise ValueError(f'sampler state is for {" x ".join(str(state[k]) for k in sizes)} ({", ".join(sizes)}), '
                         f'this sampler has {" x ".join(str(v) for v in sizes.values())}')


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == 'cuda':
        cur = torch.cuda.current_device()
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
    return a.index == b.index or a.index is None or b.index is None


class _BinBuffers:
    """Per-bin FIFO ring buffers of per-example losses on a SigmaGrid, kept on one device with no host
    synchronisation: the state InfoNoiseSampler and the rivals of rivals.py share (binning and `observe`,
    device binding, the all-reduced per-bin sums of a refresh, inverse-CDF draws from a per-bin table).
    `device` is None until the first `_bind`.
    """

    _device_state = ('_buf', '_total', '_log_bounds')   # what `_bind` moves (tensors, tuples of tensors or None)
    needs_squares = False     # whether `_reduced` also packs per-bin sums of squares (for a rival's `_statistic`)

    def __init__(self, grid: SigmaGrid, weight_fn: Callable | str, buffer_size: int):
        if not isinstance(grid, SigmaGrid):
            raise ValueError(f'grid must be a SigmaGrid, got {type(grid).__name__}')
        self.grid = grid
        self.weight_fn = get_weight(weight_fn) if isinstance(weight_fn, str) else weight_fn   # a name via get_weight
        if not callable(self.weight_fn):
            raise ValueError('weight_fn must be callable or a weight name (edm, vp, ve, unit, min-snr)')
        self.buffer_size, self.device = buffer_size, None
        self._step, self._refreshes = 0, 0          # optimizer steps counted, tables built
        K, B = grid.num_bins, buffer_size
        # Row K of the ring buffers is scratch: dropped entries (and arrivals a full batch would evict at
        # once) are written there and never read. `_total[k]` counts every arrival in bin k ever, so
        # n_k = min(total_k, B), the next write slot is total_k mod B, and total_K = dropped.
        self._buf = torch.zeros(K + 1, B, dtype=torch.float32)
        self._total = torch.zeros(K + 1, dtype=torch.int64)
        self._aranges = {}                                       # cached index ranges on the state device
        # Bin boundaries for `observe` in log σ: the K−1 interior edges, then +inf, so that a NaN key (and
        # +inf) lands in row K while σ below / above the grid lands in bin 0 / K−1.
        log_inner = grid.edges[1:-1].log().float()
        self._log_bounds = torch.cat([log_inner, torch.tensor([float('inf')])])

    def _bind(self, device: torch.device) -> None:
        if device.type == 'cuda' and device.index is None:
            device = torch.device('cuda', torch.cuda.current_device())
        self.device = device
        self._aranges = {}
        for name in self._device_state:      # tensors, tables (tuples of tensors) or None
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, tuple(t.to(device) for t in value))
            elif value is not None:
                setattr(self, name, value.to(device))

    def _arange(self, n: int) -> torch.Tensor:
        out = self._aranges.get(n)
        if out is None:
            out = self._aranges[n] = torch.arange(n, device=self._state_device())
        return out

    def _state_device(self) -> torch.device:
        return self._buf.device

    def _table_sigma(self, u: torch.Tensor, table: tuple | None = None) -> torch.Tensor:
        """Exact inverse CDF of a piecewise-constant density table (interior CDF, per-bin rows) at uniforms u
        (default: `self._table`).

        InfoNoise's main table lives in u-space [floor, 1): U_k = floor + (1 − floor) · cdf_k (the starved floor's
        table in [0, floor)). k = number of interior U values <= u, i.e. U_k <= u < U_{k+1} (zero-mass
        bins are skipped); inside bin k the CDF is linear, so σ = edge_k + (u − U_k) · Δσ_k / (U_{k+1} − U_k).
        (u outside the table's range gives values that are not used.)
        """
        inner_cdf, rows = (t.to(u.device) for t in (self._table if table is None else table))
        lo_edge, lo_cdf, scale = rows[:, torch.bucketize(u, inner_cdf, right=True)]
        return torch.addcmul(lo_edge, u - lo_cdf, scale)

    def _draw_device(self, device) -> torch.device:
        """Where `sample` draws: the requested device (the first one binds the sampler's state to it), else the
        sampler's own device, else the CPU."""
        if device is None:
            return self.device if self.device is not None else torch.device('cpu')
        device = torch.device(device)
        if self.device is None:
            self._bind(device)
        return device

    def observe(self, sigma: torch.Tensor, loss: torch.Tensor) -> None:
        """Push per-sample losses into the FIFO buffer of each σ's bin. No host sync.

        sigma: [N] or [N, 1, ..., 1]; loss: [N] (InfoNoise: the mean over the sample's elements of (D − y)²,
        unweighted).
        """
        if not isinstance(sigma, torch.Tensor) or not isinstance(loss, torch.Tensor):
            raise ValueError('observe expects torch tensors for sigma and loss')
        if sigma.ndim == 0 or any(d != 1 for d in sigma.shape[1:]):
            raise ValueError(f'sigma must have shape [N] or [N, 1, ..., 1], got {tuple(sigma.shape)}')
        if loss.ndim != 1 or loss.shape[0] != sigma.shape[0]:
            raise ValueError(f'loss must have shape [N] = [{sigma.shape[0]}], got {tuple(loss.shape)}')
        if sigma.device != loss.device:
            raise ValueError(f'sigma is on {sigma.device} but loss is on {loss.device}')
        if self.device is None:
            self._bind(sigma.device)
        elif not _same_device(sigma.device, self.device):
            raise ValueError(f'tensors are on {sigma.device} but the sampler lives on {self.device}')
        if sigma.shape[0] == 0:
            return
        K, B = self.grid.num_bins, self.buffer_size
        sigma = sigma.detach().reshape(-1)
        loss = loss.detach()
        # key = log σ, or NaN when σ < 0 or σ or the loss is NaN/inf: NaN and +inf go to scratch row K.
        key = torch.add(sigma.log(), loss - loss).to(torch.float32)
        row = torch.bucketize(key, self._log_bounds, right=True)
        # Group by bin, keeping arrival order: the i-th of a bin's arrivals in this batch goes to slot
        # (total_k + i) mod B of its ring, i.e. (offset_k + batch position) mod B after sorting.
        row, order = torch.sort(row, stable=True)
        starts = torch.searchsorted(row, self._arange(K + 2))  # first sorted position of each bin
        added = starts[1:] - starts[:-1]                       # arrivals per bin (row K: dropped)
        position = (self._total - starts[:-1])[row] + self._arange(row.shape[0])
        if row.shape[0] > B:
            # Of more than B arrivals in one bin only the last B survive a FIFO: send the rest to scratch.
            row = torch.where(position - self._total[row] >= added[row] - B, row, K)
        self._buf.view(-1)[torch.add(position % B, row, alpha=B)] = loss[order].to(torch.float32)
        self._total += added

    def _reduced(self) -> torch.Tensor:
        """Per-bin buffer sums, counts (and sums of squares when `needs_squares`) of this rank, all-reduced over
        ranks, as one device tensor [2 or 3, K]."""
        buf = self._buf[:self.grid.num_bins]
        fill = self._total[:self.grid.num_bins].clamp(max=self.buffer_size)     # n_k, losses held per bin
        parts = [buf.sum(1, dtype=torch.float64), fill.double()]
        if self.needs_squares:
            parts.append((buf * buf).sum(1, dtype=torch.float64))
        packed = torch.cat(parts)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(packed, op=torch.distributed.ReduceOp.SUM)
        return packed.view(len(parts), -1)


class InfoNoiseSampler(_BinBuffers):
    """Adaptive σ sampler π(σ) ∝ gate-regularised entropy rate / w(σ).

    Args:
        grid:          SigmaGrid of K log-spaced bins (estimation, floor range and table support).
        base:          sampler used until the first successful refresh (default LogNormalSampler()).
        weight_fn:     the training loss weight w(σ) (callable on a float64 tensor, or one of
                       'edm' | 'vp' | 've' | 'unit'); the table is q_k = r̃_k / w(σ_k).
        warmup_steps:  N_warm >= 0; no refresh happens while step <= warmup_steps.
        refresh_every: M >= 1; refreshes are attempted when step > warmup_steps and step % M == 0.
        buffer_size:   B >= 1, FIFO capacity per bin (per rank).
        ema:           β in (0, 1]; mse_k <- (1 − β) mse_k + β · mean_k (first refresh: mse_k <- mean_k).
        min_count:     N_min in [1, buffer_size]; a refresh needs min_k n_k >= N_min, with n_k summed over
                       ranks (so a single process can always get there).
        gate_n:        gate exponent n > 0 (paper: 3).
        endpoint:      'continuous' (onset pivot) or 'discrete' (power-law pivot).
        onset_p:       threshold p in (0, 1) of the onset rule (paper: 2e-3).
        floor:         in [0, 1): sample from (1 − floor)·table + floor·LogUniform(grid range) so that
                       every bin keeps being observed; 0 is the paper's literal algorithm.
        smooth:        passes (>= 0) of a [1, 2, 1]/4 filter on log r across neighbouring bins before the
                       pivot and the gate (`log_smooth`; exact power laws pass unchanged); 0 = none.
        freeze_after:  F >= 0; no refresh happens once step > F, so the last table serves to the end of
                       training (a variant, not the paper's algorithm: it holds the profile where it was at step
                       F instead of letting the pivot follow the network's error floor down); 0 = never freeze.
        device:        where buffers and the table live. None: bound to the device of the first
                       `observe` (or of the first `sample` given an explicit device).

    Before the first successful refresh, `sample` draws from `base`. If a refresh attempt after warm-up
    fails because some bin holds fewer than `min_count` losses (e.g. log-normal tails never reach the top
    bins) and floor > 0, sampling switches to (1 − floor)·base + floor·(log-uniform over the bins still
    below `min_count`) until a refresh succeeds, so the empty bins fill at the floor's full rate (with
    floor = 0 it stays on the base, as in the paper). After the first refresh a failed attempt routes the
    floor the same way while the table keeps serving the other 1 − floor. `profile()` reports the state
    (`starved`, `starved_bins`).
    Non-finite losses, non-finite σ and σ < 0 are dropped (counted in `dropped_nonfinite`); σ outside the
    grid, σ = 0 included, are binned into the edge bins.
    A refresh whose table would be degenerate (all weights zero) keeps the previous one.
    """

    def __init__(self, grid: SigmaGrid, base=None, weight_fn: Callable | str = edm_weight,
                 warmup_steps: int = 2000, refresh_every: int = 200, buffer_size: int = 512,
                 ema: float = 0.1, min_count: int = 32, gate_n: float = 3, endpoint: str = 'continuous',
                 onset_p: float = 2e-3, floor: float = 0.05, smooth: int = 0, freeze_after: int = 0, device=None):
        super().__init__(grid, weight_fn, check_int('buffer_size', buffer_size, 1))
        self.base = LogNormalSampler() if base is None else base
        if not callable(getattr(self.base, 'sample', None)):
            raise ValueError('base must be a σ-sampler with a sample(n, device, generator) method')
        self.warmup_steps = check_int('warmup_steps', warmup_steps, 0)
        self.refresh_every = check_int('refresh_every', refresh_every, 1)
        self.min_count = check_int('min_count', min_count, 1)
        self.smooth = check_int('smooth', smooth, 0)
        self.freeze_after = check_int('freeze_after', freeze_after, 0)
        check_min_count(self.min_count, self.buffer_size)
        if not 0 < ema <= 1:
            raise ValueError(f'ema must lie in (0, 1], got {ema}')
        if not (math.isfinite(gate_n) and gate_n > 0):
            raise ValueError(f'gate_n must be a finite number > 0, got {gate_n}')
        if endpoint not in ENDPOINTS:
            raise ValueError(f'endpoint must be one of {", ".join(ENDPOINTS)}, got {endpoint!r}')
        if not 0 < onset_p < 1:
            raise ValueError(f'onset_p must lie in (0, 1), got {onset_p}')
        if not 0 <= floor < 1:
            raise ValueError(f'floor must lie in [0, 1), got {floor}')
        self.ema, self.gate_n, self.endpoint = float(ema), float(gate_n), endpoint
        self.onset_p, self.floor = float(onset_p), float(floor)
        # log(R) / floor with R = σ_max/σ_min: the floor draws σ_min·exp(u·log(R)/floor) for u in [0, floor)
        # (finite for any floor > 0, unlike R^(1/floor)); unused (0) without a floor.
        self._floor_rate = (grid.log_max - grid.log_min) / self.floor if self.floor > 0 else 0.0
        self._weights = weight_on_grid(grid, self.weight_fn)
        if self._weights.shape != (grid.num_bins,) or not np.all(np.isfinite(self._weights) & (self._weights > 0)):
            raise ValueError('weight_fn must return finite positive weights on the grid')
        K = grid.num_bins
        self._table = None                                       # (interior cdf, per-bin rows) on device
        # Host state (numpy float64 on the grid; NaN until the first refresh).
        self._starved = False
        self._unfilled = np.zeros(K, dtype=bool)   # bins below min_count at the last failed refresh
        self._starved_table = None                  # floor table over the unfilled bins (u-space [0, floor))
        nan = np.full(K, np.nan)
        self._mse, self._rate, self._gated = nan.copy(), nan.copy(), nan.copy()
        self._density, self._cdf = nan.copy(), np.full(K + 1, np.nan)
        self._pivot = float('nan')
        if device is not None:
            self._bind(torch.device(device))

    _device_state = _BinBuffers._device_state + ('_table', '_starved_table')

    # ------------------------------------------------------------------ sampling

    def _floor_sigma(self, u: torch.Tensor) -> torch.Tensor:
        """The floor's σ for uniforms u in [0, floor).

        Normally LogUniform over the grid range, σ = σ_min · exp((u / floor) · log R). While bins are starved
        (below min_count at the last refresh attempt) the floor's draws go to the unfilled bins only,
        log-uniformly over them, so that they fill at the floor's full rate.
        """
        if self._starved_table is not None:         # only while starved (and floor > 0)
            return self._table_sigma(u, self._starved_table)
        return torch.exp(u * self._floor_rate).mul_(self.grid.sigma_min)

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n σ's (float32, > 0) on `device` (default: the sampler's device, else CPU). No host sync.

        One uniform u per draw: u < floor picks the log-uniform floor (at u / floor), otherwise the table
        (at (u − floor) / (1 − floor)); before the first refresh the base sampler draws instead.
        """
        device = self._draw_device(device)
        if self._table is None:
            sigma = self.base.sample(n, device=device, generator=generator)
            if self._starved and self.floor > 0:
                u = torch.rand(n, device=device, generator=generator, dtype=torch.float64)
                sigma = torch.where(u < self.floor, self._floor_sigma(u).to(sigma.dtype), sigma)
            return sigma.float()
        u = torch.rand(n, device=device, generator=generator, dtype=torch.float64)
        if self.floor == 0:
            return self._table_sigma(u).float()
        return torch.where(u < self.floor, self._floor_sigma(u), self._table_sigma(u)).float()

    # ------------------------------------------------------------------ refresh

    def step(self) -> bool:
        """Count one optimizer step (call after that step's observes); True iff the table was rebuilt."""
        self._step += 1
        if self._step <= self.warmup_steps or self._step % self.refresh_every != 0:
            return False
        if self.freeze_after and self._step > self.freeze_after:
            return False
        sums, counts = self._reduced().cpu().numpy()          # the one device→host read of a refresh
        if counts.min() < self.min_count:
            self._set_starved(counts < self.min_count)
            return False
        self._set_starved(None)
        return self._rebuild(sums / counts)

    def _set_starved(self, unfilled: np.ndarray | None) -> None:
        """Enter (unfilled = mask of bins below min_count) or leave (None) the starved state; while starved
        the floor samples log-uniformly over the unfilled bins (see `_floor_sigma`)."""
        K = self.grid.num_bins
        self._starved = unfilled is not None
        self._unfilled = np.zeros(K, dtype=bool) if unfilled is None else np.asarray(unfilled, dtype=bool)
        self._starved_table = None
        if self._starved and self.floor > 0:
            q = np.where(self._unfilled, 1.0 / self.grid.sigma.numpy(), 0.0)   # ∝ 1/σ: log-uniform
            _, cdf = sampler_table(self.grid.edges.numpy(), q)
            self._starved_table = self._u_space_table(cdf, 0.0, self.floor)

    def _rebuild(self, means: np.ndarray) -> bool:
        grid = self.grid
        sigma, edges = grid.sigma.numpy(), grid.edges.numpy()
        mse = means if self._refreshes == 0 else (1 - self.ema) * self._mse + self.ema * means
        rate, pivot, gated = gated_profile(sigma, mse, self.endpoint, self.gate_n, self.onset_p, self.smooth)
        q = gated / self._weights
        if not (np.all(np.isfinite(q)) and np.all(q >= 0) and q.sum() > 0):
            return False
        density, cdf = sampler_table(edges, q)
        self._mse, self._rate, self._gated, self._pivot = mse, rate, gated, pivot
        self._density, self._cdf = density, cdf
        self._refreshes += 1
        self._table = self._u_space_table(cdf, self.floor, 1.0)      # the main table: u-space [floor, 1)
        return True

    def _u_space_table(self, cdf: np.ndarray, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        """A CDF on the grid's edges mapped to u in [lo, hi): the interior U_k and the per-bin rows
        (edge_k, U_k, dσ/du), on the state device."""
        u_edges = lo + (hi - lo) * cdf
        u_edges[-1] = hi
        mass = np.diff(u_edges)
        scale = np.where(mass > 0, self.grid.widths.numpy() / np.where(mass > 0, mass, 1.0), 0.0)
        rows = np.stack([self.grid.edges.numpy()[:-1], u_edges[:-1], scale])     # [3, K]
        device = self._state_device()
        return torch.from_numpy(u_edges[1:-1].copy()).to(device), torch.from_numpy(rows).to(device)

    # ------------------------------------------------------------------ telemetry

    def table_from_mse(self, mse, pivot: float | None = None) -> dict:
        """The table a refresh would build from this per-bin mse, without changing the sampler (a replay).

        mse:   [K] per-bin errors after the EMA, as `profile()['mse']` and infonoise.jsonl record them (so a
               recorded line gives back the recorded table).
        pivot: hold the pivot (> 0) at this value instead of the endpoint's rule.
        Returns dict(rate, pivot, gated_rate, pi) with pi the bin-averaged sampling density, floor included.
        """
        grid = self.grid
        mse = np.asarray(mse, dtype=np.float64)
        if mse.shape != (grid.num_bins,):
            raise ValueError(f'mse must have one value per bin ({grid.num_bins}), got shape {mse.shape}')
        rate, pivot, gated = gated_profile(grid.sigma.numpy(), mse, self.endpoint, self.gate_n, self.onset_p,
                                           self.smooth, pivot)
        density, _ = sampler_table(grid.edges.numpy(), gated / self._weights)
        floor_pi = loguniform_bin_density(grid, grid.sigma_min, grid.sigma_max)
        return dict(rate=rate, pivot=pivot, gated_rate=gated, pi=(1 - self.floor) * density + self.floor * floor_pi)

    def profile(self) -> dict:
        """Telemetry on the grid (numpy arrays sigma, edges, mse, rate, gated_rate, rho, pi, phi, u, counts and
        scalars pivot, step, refreshes, dropped_nonfinite); reads device state once (not for the hot loop).

        rate / gated_rate are the (smoothed, when smooth > 0) r and r̃ of the last refresh; rho is r̃
        normalised to a density on σ and u its CDF at the edges; pi is the current sampling density
        (bin-averaged, floor included; the base sampler's before the first refresh); phi = pi · w;
        counts are this rank's buffer fills n_k now.
        """
        grid = self.grid
        prof = empty_profile(grid)
        widths = grid.widths.numpy()
        floor_pi = loguniform_bin_density(grid, grid.sigma_min, grid.sigma_max)
        if self._table is not None:
            rho = self._gated / np.sum(self._gated * widths)
            prof.update(mse=self._mse.copy(), rate=self._rate.copy(), pivot=float(self._pivot),
                        gated_rate=self._gated.copy(), rho=rho,
                        u=np.concatenate([[0.0], np.cumsum(rho * widths)]))
            pi = self._density
        else:
            base_profile = getattr(self.base, 'profile', None)
            pi = base_profile(grid)['pi'] if callable(base_profile) else np.full(grid.num_bins, np.nan)
        if self._starved_table is not None:        # starved with a floor: the floor serves the unfilled bins
            starved_pi = np.where(self._unfilled, 1.0 / grid.sigma.numpy(), 0.0)
            floor_pi = starved_pi / np.sum(starved_pi * widths)
        if self._table is not None or self._starved_table is not None:
            pi = (1 - self.floor) * pi + self.floor * floor_pi
        total = self._total.cpu().numpy()
        prof.update(pi=pi, phi=pi * self._weights, counts=np.minimum(total[:-1], self.buffer_size),
                    step=self._step, refreshes=self._refreshes, dropped_nonfinite=int(total[-1]),
                    starved=int(self._starved), starved_bins=int(self._unfilled.sum()))
        return prof

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        """Everything needed for an exact resume: CPU tensors and plain Python numbers only."""
        K = self.grid.num_bins
        t = lambda a: torch.from_numpy(np.array(a, dtype=np.float64))   # noqa: E731
        base_state = self.base.state_dict() if callable(getattr(self.base, 'state_dict', None)) else {}
        return {
            'num_bins': self.grid.num_bins, 'buffer_size': self.buffer_size,
            'step': self._step, 'refreshes': self._refreshes, 'starved': int(self._starved),
            'pivot': float(self._pivot),
            'buf': self._buf.cpu().clone().index_fill_(0, torch.tensor([K]), 0.0),   # row K: scratch
            'total': self._total.cpu().clone(),
            'mse': t(self._mse), 'rate': t(self._rate), 'gated_rate': t(self._gated),
            'density': t(self._density), 'cdf': t(self._cdf),
            'unfilled': torch.from_numpy(self._unfilled.copy()),
            'base': base_state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; the sampler must have been built with the same grid and buffer size."""
        K = self.grid.num_bins
        check_state(state, ('step', 'refreshes', 'starved', 'pivot', 'buf', 'total', 'mse', 'rate', 'gated_rate',
                            'density', 'cdf', 'base'), {'num_bins': K, 'buffer_size': self.buffer_size})
        device = self._state_device()
        self._buf = state['buf'].to(device, torch.float32).clone()
        self._total = state['total'].to(device, torch.int64).clone()
        self._step, self._refreshes = int(state['step']), int(state['refreshes'])
        self._pivot = float(state['pivot'])
        # 'unfilled' is absent from states written before starved routing: all bins count as unfilled then.
        unfilled = state['unfilled'].cpu().numpy() if 'unfilled' in state else np.ones(K, dtype=bool)
        self._set_starved(unfilled if bool(state['starved']) else None)
        arr = lambda name: state[name].detach().cpu().double().numpy().copy()   # noqa: E731
        self._mse, self._rate, self._gated = arr('mse'), arr('rate'), arr('gated_rate')
        self._density, self._cdf = arr('density'), arr('cdf')
        self._table = None
        if self._refreshes > 0:
            self._table = self._u_space_table(self._cdf, self.floor, 1.0)
        if state['base'] and callable(getattr(self.base, 'load_state_dict', None)):
            self.base.load_state_dict(state['base'])

    def __repr__(self) -> str:
        return (f'InfoNoiseSampler({self.grid!r}, base={self.base!r}, endpoint={self.endpoint!r}, '
                f'warmup_steps={self.warmup_steps}, refresh_every={self.refresh_every}, '
                f'buffer_size={self.buffer_size}, ema={self.ema}, min_count={self.min_count}, '
                f'gate_n={self.gate_n}, onset_p={self.onset_p}, floor={self.floor}, smooth={self.smooth}, '
                f'freeze_after={self.freeze_after})')
