"""Cheap calibration of InfoGrid's tempered construction against a fine reference.

`generate.py --infogrid-calibrate N` and the grid benchmarks (`NamedGrids`) use this. The tempered grid
(`infonoise.infogrid.tempered_sigma_steps`: EDM's ρ-spacing tilted by the learned information density to
the power γ) has two parameters. Calibration picks them for one network, step count and solver:

1. N latents (the caller's) go through deterministic Heun on a fine EDM grid (`ref_steps` levels,
   ρ = 7): the reference end points.
2. The same latents go through the requested solver on the candidate grids, a small lattice of (γ, ρ)
   (`GAMMAS` × `RHOS`), then one refinement round around the best (γ ± `GAMMA_STEP`/2, ρ ×/÷ √`RHO_STEP`).
3. The candidate with the smallest trajectory error (root-mean-square distance of the end points to the
   reference, per element) wins; ties keep the earlier candidate.

γ = 0, ρ = 7 (EDM's own grid) is always a candidate and is evaluated first, so on the calibration latents
the chosen grid is never worse than EDM's. The cost is ref_steps·2 + ~25·NFE network evaluations on N
latents: seconds for the CPU demo and for 32×32 networks on a GPU.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from infonoise.infogrid import VARIANTS, gaussian_surrogate, sigma_steps
from training import sampler as samplers

GAMMAS = (0.0, 0.25, 0.5, 1.0)          # tempering exponents tried first
RHOS = (3.0, 5.0, 7.0, 10.0, 20.0)      # ρ values tried first
GAMMA_STEP = 0.25                       # refinement: γ ± GAMMA_STEP / 2 around the best
RHO_STEP = 1.6                          # refinement: ρ ×/÷ √RHO_STEP around the best
REF_STEPS = 256                         # levels of the fine reference grid (Heun, EDM ρ = 7)
EDM_CANDIDATE = (0.0, 7.0)


@dataclasses.dataclass
class CalibrationResult:
    """The chosen grid and what was measured on the calibration latents."""

    gamma: float                        # chosen tempering exponent γ
    rho: float                          # chosen ρ
    sigma_steps: torch.Tensor           # the chosen grid (float64, N levels then 0)
    error: float                        # its trajectory error
    edm_error: float                    # trajectory error of EDM's ρ = 7 grid (γ = 0, ρ = 7)
    candidates: list                    # [{'gamma', 'rho', 'error'}] in evaluation order
    num_latents: int                    # N
    ref_steps: int                      # levels of the reference grid
    seconds: float                      # wall time of the whole calibration

    def summary(self) -> dict:
        """JSON-ready record (no tensors)."""
        out = dataclasses.asdict(self)
        out['sigma_steps'] = [float(s) for s in self.sigma_steps.tolist()]
        return out


def trajectory_error(x: torch.Tensor, x_ref: torch.Tensor) -> float:
    """Root-mean-square difference per element between end points and their reference."""
    return float((x.to(torch.float64) - x_ref.to(torch.float64)).square().mean().sqrt())


def reference_samples(net: Callable, latents: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                      sigma_min: float = 0.002, sigma_max: float = 80.0,
                      ref_steps: int = REF_STEPS) -> torch.Tensor:
    """Deterministic Heun on EDM's ρ = 7 grid with ref_steps levels (the fine reference)."""
    grid = sigma_steps('edm', ref_steps, sigma_min, sigma_max, rho=7, round_sigma=getattr(net, 'round_sigma', None))
    with torch.no_grad():
        return samplers.heun_sampler(net, latents, grid.to(latents.device), class_labels)


def calibrate_tempered_grid(net: Callable, profile: Mapping[str, Any], num_steps: int, latents: torch.Tensor,
                            class_labels: Optional[torch.Tensor] = None, sigma_min: float = 0.002,
                            sigma_max: float = 80.0, solver: str = 'heun', measure: str = 'literal',
                            gated: bool = False, gammas: Sequence[float] = GAMMAS,
                            rhos: Sequence[float] = RHOS, refine: bool = True, ref_steps: int = REF_STEPS,
                            reference: Optional[torch.Tensor] = None) -> CalibrationResult:
    """Pick (γ, ρ) of the tempered InfoGrid by trajectory error on `latents` (see the module docstring).

    Args:
        net:          denoiser called as net(x, sigma, class_labels) (a preconditioner or an adapter).
        profile:      InfoNoise profile (numpy arrays) with 'edges' and 'rate'.
        num_steps:    N, number of nonzero levels of the grid (>= 2).
        latents:      standard-normal latents [n, ...] on the net's device (start = latents·σ_max).
        class_labels: optional labels passed to the net.
        sigma_min, sigma_max: range of every grid (already clamped to the net's range).
        solver:       'heun' or 'euler', the solver the grid is calibrated for.
        measure, gated: information density of the tempered grid (see `tempered_sigma_steps`).
        gammas, rhos: the first lattice of candidates.
        refine:       add one round of neighbours around the best lattice point.
        ref_steps:    levels of the reference grid.
        reference:    precomputed reference end points for these latents (skips step 1).
    """
    if solver not in samplers.SOLVERS:
        raise ValueError(f'solver must be one of {", ".join(samplers.SOLVERS)}, got {solver!r}')
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f'num_steps must be an integer >= 2, got {num_steps}')
    if latents.shape[0] < 1:
        raise ValueError('calibration needs at least one latent')
    began = time.time()
    if reference is None:
        reference = reference_samples(net, latents, class_labels, sigma_min, sigma_max, ref_steps)
    tried: dict[tuple[float, float], float] = {}   # (γ, ρ) -> trajectory error, in evaluation order

    def tempered(gamma: float, rho: float) -> torch.Tensor:
        return sigma_steps('tempered', num_steps, sigma_min, sigma_max, profile, gamma=gamma, rho=rho,
                           measure=measure, gated=gated, round_sigma=getattr(net, 'round_sigma', None))

    def evaluate(gamma: float, rho: float) -> None:
        key = (round(float(gamma), 6), round(float(rho), 6))
        if key in tried:
            return
        grid = tempered(*key)
        with torch.no_grad():
            x = samplers.heun_sampler(net, latents, grid.to(latents.device), class_labels, solver=solver)
        tried[key] = trajectory_error(x, reference)

    evaluate(*EDM_CANDIDATE)
    for gamma in gammas:
        for rho in rhos:
            evaluate(gamma, rho)
    if refine:
        g0, r0 = min(tried, key=tried.get)
        for gamma, rho in ((g0 - GAMMA_STEP / 2, r0), (g0 + GAMMA_STEP / 2, r0),
                           (g0, r0 / math.sqrt(RHO_STEP)), (g0, r0 * math.sqrt(RHO_STEP))):
            if gamma >= 0:
                evaluate(gamma, rho)
    best = min(tried, key=tried.get)   # ties keep the earlier candidate
    return CalibrationResult(
        gamma=best[0], rho=best[1], sigma_steps=tempered(*best), error=tried[best], edm_error=tried[EDM_CANDIDATE],
        candidates=[{'gamma': g, 'rho': r, 'error': error} for (g, r), error in tried.items()],
        num_latents=int(latents.shape[0]), ref_steps=int(ref_steps), seconds=time.time() - began)


class NamedGrids:
    """The benchmarks' σ grids by row name for one denoiser and profile: 'edm', 'loguniform', the constructions of
    `infonoise.infogrid.VARIANTS`, and 'infogrid-calibrated' (the tempered grid calibrated per solver and N on the
    calibration latents, against one fine reference run shared by every calibration). Nonzero levels are rounded by
    `net.round_sigma` when the net has one."""

    def __init__(self, net: Any, profile: Mapping[str, Any], sigma_min: float, sigma_max: float,
                 calib_latents: Optional[torch.Tensor] = None, calib_labels: Optional[torch.Tensor] = None,
                 calib_ref_steps: int = REF_STEPS,
                 on_calibrated: Optional[Callable[[str, int, CalibrationResult], None]] = None) -> None:
        self.net = net                              # the denoiser (rounding, calibration runs)
        self.profile = profile                      # InfoNoise profile (numpy arrays)
        self.sigma_min = sigma_min                  # range of every grid (already clamped to the net's range)
        self.sigma_max = sigma_max
        self.calib_latents = calib_latents          # latents of infogrid-calibrated (None: that row is refused)
        self.calib_labels = calib_labels            # their class labels (or None)
        self.calib_ref_steps = calib_ref_steps      # levels of the calibration reference
        self.on_calibrated = on_calibrated          # called with (solver, N, result) after each calibration
        self.calibrations: dict[str, dict[int, CalibrationResult]] = {}    # solver -> N -> result

    @functools.cached_property
    def surrogate(self) -> tuple:
        """The profile's Gaussian surrogate (`infonoise.infogrid.gaussian_surrogate`), fitted once."""
        return gaussian_surrogate(self.profile, self.sigma_min, self.sigma_max)

    @functools.cached_property
    def calib_reference(self) -> torch.Tensor:
        """The fine reference run from the calibration latents, shared by every calibration."""
        return reference_samples(self.net, self.calib_latents, self.calib_labels, self.sigma_min, self.sigma_max,
                                 self.calib_ref_steps)

    def __call__(self, name: str, num_steps: int, solver: str = 'heun') -> torch.Tensor:
        """The grid called `name` with num_steps nonzero levels, then 0 (float64, CPU), for `solver` ('heun' or
        'euler': infogrid-solver and infogrid-calibrated depend on it)."""
        if name == 'infogrid-calibrated':
            if self.calib_latents is None:
                raise ValueError('infogrid-calibrated needs calibration latents')
            done = self.calibrations.setdefault(solver, {})
            if num_steps not in done:
                done[num_steps] = calibrate_tempered_grid(
                    self.net, self.profile, num_steps, self.calib_latents, self.calib_labels, self.sigma_min,
                    self.sigma_max, solver=solver, reference=self.calib_reference, ref_steps=self.calib_ref_steps)
                if self.on_calibrated is not None:
                    self.on_calibrated(solver, num_steps, done[num_steps])
            return done[num_steps].sigma_steps
        grid, kwargs = VARIANTS.get(name, (name, {}))
        if grid == 'solver-aware':
            kwargs = dict(solver=solver, surrogate=self.surrogate)
        return sigma_steps(grid, num_steps, self.sigma_min, self.sigma_max, self.profile,
                           round_sigma=getattr(self.net, 'round_sigma', None), **kwargs)
