"""σ grids and the EDM ODE/SDE samplers.

All samplers integrate the probability-flow ODE dx/dσ = (x − D(x; σ))/σ (EDM's Algorithm 2, with
optional "churn": temporarily raising the noise level from t to t̂ = t(1 + γ) by adding fresh noise).
They work in float64 on the latents' device, call the network with a float64 batch and a 0-d float64
σ, and cast its output to float64 -- the reference's numerics, so per-seed outputs match it.

Random numbers: every sampler calls ``randn_like(x)`` exactly once per step, in step order, even when
γ = 0 (the draw is then multiplied by zero). Passing a per-seed ``randn_like`` therefore reproduces the
reference's images seed by seed.

Networks: anything called as ``net(x, sigma, class_labels)``. ``round_sigma`` (default: identity),
``sigma_min`` (default 0) and ``sigma_max`` (default ∞) are used when the net has them, so the EDM
preconditioners and plain test denoisers both work.

Host synchronisation: grids and per-step coefficients are computed once, vectorised, before the loop;
the loop itself does no device→host reads (the ``iddpm`` discretisation needs one length read).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional, Union

import torch

from infonoise.infogrid import edm_sigma_steps, step_fractions as _step_fractions
from training.vp import vp_sigma, vp_sigma_inv

RandnLike = Callable[[torch.Tensor], torch.Tensor]
Number = Union[int, float]

SOLVERS = ('euler', 'heun')
DISCRETIZATIONS = ('vp', 've', 'iddpm', 'edm')
SCHEDULES = ('vp', 've', 'linear')
SCALINGS = ('vp', 'none')

_GAMMA_MAX = math.sqrt(2) - 1  # EDM caps the churn so that t̂ ≤ √2·t.

# The ablation sampler's default VP range is σ(ε_s), σ(1) of the VP training schedule (β_d = 19.9,
# β_min = 0.1), as in the reference at commit 008a4e5 (early releases used β_d = 19.1 there).
_DEFAULT_VP_BETA_D = 19.9
_DEFAULT_VP_BETA_MIN = 0.1


# ------------------------------------------------------------------------------------------------
# Small helpers.

def _check_choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f'{name} must be one of {", ".join(choices)}; got {value!r}')


def _net_round(net) -> Callable:
    return getattr(net, 'round_sigma', torch.as_tensor)   # nets without one: σ as given


def _clamp_to_net(net, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """EDM's rule: never ask the net for noise levels outside its supported range."""
    return max(sigma_min, getattr(net, 'sigma_min', 0)), min(sigma_max, getattr(net, 'sigma_max', math.inf))


def _churn_gamma(sigma_cur: torch.Tensor, num_steps: int, S_churn: float, S_min: float,
                 S_max: float) -> torch.Tensor:
    """γ_i = min(S_churn/N, √2 − 1) where S_min ≤ σ_i ≤ S_max, else 0 (float64, vectorised)."""
    gamma = min(S_churn / num_steps, _GAMMA_MAX)
    inside = (sigma_cur >= S_min) & (sigma_cur <= S_max)
    return torch.where(inside, torch.full_like(sigma_cur, gamma), torch.zeros_like(sigma_cur))


# ------------------------------------------------------------------------------------------------
# The generic Heun/Euler sampler (EDM's ρ-grid: infonoise.infogrid.edm_sigma_steps).

def heun_sampler(net, latents: torch.Tensor, sigma_steps: torch.Tensor,
                 class_labels: Optional[torch.Tensor] = None, randn_like: RandnLike = torch.randn_like,
                 S_churn: float = 0, S_min: float = 0, S_max: float = float('inf'), S_noise: float = 1,
                 solver: str = 'heun') -> torch.Tensor:
    """EDM's Algorithm 2 (stochastic Heun) on an arbitrary σ grid.

    Args:
        net:          denoiser D, called as ``net(x, sigma, class_labels)``; its ``round_sigma`` (if
                      any) rounds every t̂.
        latents:      standard-normal latents [N, C, H, W]; the start is latents·σ_0.
        sigma_steps:  1-D grid σ_0 > σ_1 > ... > σ_{N−1} > σ_N = 0 (as returned by ``edm_sigma_steps``
                      or ``infonoise.infogrid_sigma_steps``). The values are used as given (no rounding
                      and no host-side checks); the last step is always a plain Euler step, which is
                      Algorithm 2's rule for the step to σ_N = 0.
        class_labels: optional one-hot labels passed through to the net.
        randn_like:   noise source, called once per step with the current float64 state.
        S_churn, S_min, S_max, S_noise: churn parameters; γ_i = min(S_churn/N, √2−1) when
                      S_min ≤ σ_i ≤ S_max, with N = len(sigma_steps) − 1. If rounding makes t̂ < σ_i
                      the added noise is zero (never NaN).
        solver:       'heun' (2nd order, the default) or 'euler' (1st order).

    Returns:
        float64 samples, same shape as ``latents``.
    """
    _check_choice('solver', solver, SOLVERS)
    t_steps = torch.as_tensor(sigma_steps, dtype=torch.float64).to(latents.device)
    if t_steps.ndim != 1 or t_steps.numel() < 2:
        raise ValueError(f'sigma_steps must be a 1-D grid with at least 2 entries; got shape {tuple(t_steps.shape)}')
    num_steps = t_steps.numel() - 1
    round_sigma = _net_round(net)

    # Per-step quantities, computed once (no host syncs in the loop).
    t_cur, t_next = t_steps[:-1], t_steps[1:]
    gamma = _churn_gamma(t_cur, num_steps, S_churn, S_min, S_max)
    t_hat = torch.as_tensor(round_sigma(t_cur + gamma * t_cur)).to(torch.float64)
    noise_std = (t_hat ** 2 - t_cur ** 2).clamp(min=0).sqrt() * S_noise
    h = t_next - t_hat

    x_next = latents.to(torch.float64) * t_steps[0]
    for i in range(num_steps):
        x_cur = x_next
        x_hat = x_cur + noise_std[i] * randn_like(x_cur)

        denoised = net(x_hat, t_hat[i], class_labels).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat[i]
        x_next = x_hat + h[i] * d_cur

        if solver == 'heun' and i < num_steps - 1:
            denoised = net(x_next, t_next[i], class_labels).to(torch.float64)
            d_prime = (x_next - denoised) / t_next[i]
            x_next = x_hat + h[i] * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def edm_sampler(net, latents: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                randn_like: RandnLike = torch.randn_like, num_steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80, rho: float = 7, S_churn: float = 0, S_min: float = 0,
                S_max: float = float('inf'), S_noise: float = 1) -> torch.Tensor:
    """The reference EDM sampler: Heun on the ρ-grid, σ range clamped to the net's, σ's rounded by the net.

    Args:
        net, latents, class_labels, randn_like, S_*: as in ``heun_sampler``.
        num_steps: number of nonzero noise levels N (2N − 1 network evaluations).
        sigma_min, sigma_max, rho: the ρ-grid (``edm_sigma_steps``), clamped to
                   [net.sigma_min, net.sigma_max] first.

    Returns:
        float64 samples, same shape as ``latents``.
    """
    sigma_min, sigma_max = _clamp_to_net(net, sigma_min, sigma_max)
    t_steps = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho, round_sigma=_net_round(net),
                              device=latents.device)
    return heun_sampler(net, latents, t_steps, class_labels, randn_like=randn_like, S_churn=S_churn,
                        S_min=S_min, S_max=S_max, S_noise=S_noise)


# ------------------------------------------------------------------------------------------------
# The generalised ablation sampler (EDM paper Table 1 / Algorithm 1).

class _NoiseSchedule(NamedTuple):
    """σ(t), dσ/dt and t(σ) for one parameterisation of time."""
    sigma: Callable[[torch.Tensor], torch.Tensor]
    sigma_deriv: Callable[[torch.Tensor], torch.Tensor]
    sigma_inv: Callable[[torch.Tensor], torch.Tensor]


class _SignalScaling(NamedTuple):
    """s(t) and ds/dt."""
    s: Callable[[torch.Tensor], torch.Tensor]
    s_deriv: Callable[[torch.Tensor], torch.Tensor]


def _vp_schedule(beta_d: float, beta_min: float) -> _NoiseSchedule:
    def sigma_deriv(t):
        sigma_t = vp_sigma(t, beta_d, beta_min)
        return 0.5 * (beta_min + beta_d * t) * (sigma_t + 1 / sigma_t)

    return _NoiseSchedule(functools.partial(vp_sigma, beta_d=beta_d, beta_min=beta_min), sigma_deriv,
                          functools.partial(vp_sigma_inv, beta_d=beta_d, beta_min=beta_min))


_VE_SCHEDULE = _NoiseSchedule(sigma=lambda t: t.sqrt(), sigma_deriv=lambda t: 0.5 / t.sqrt(),
                              sigma_inv=lambda sigma_value: sigma_value ** 2)
_LINEAR_SCHEDULE = _NoiseSchedule(sigma=lambda t: t, sigma_deriv=torch.ones_like,
                                  sigma_inv=lambda sigma_value: sigma_value)


def _make_scaling(scaling: str, schedule: _NoiseSchedule) -> _SignalScaling:
    if scaling == 'none':
        return _SignalScaling(s=torch.ones_like, s_deriv=torch.zeros_like)

    def s(t):
        return 1 / (1 + schedule.sigma(t) ** 2).sqrt()

    def s_deriv(t):
        return -schedule.sigma(t) * schedule.sigma_deriv(t) * s(t) ** 3

    return _SignalScaling(s, s_deriv)


@functools.lru_cache(maxsize=8)
def _iddpm_sigmas(M: int, C_1: float, C_2: float) -> torch.Tensor:
    """The iDDPM noise levels u_0 > u_1 > ... > u_M = 0 (float64, CPU; cached).

    u_{j−1} = sqrt((u_j² + 1) / max(ᾱ_{j−1}/ᾱ_j, C_1) − 1) with ᾱ_j = sin²(½π j / (M (C_2 + 1))).
    ᾱ is evaluated in float32 one index at a time, exactly as the reference does, so that the
    endpoint filter against ``net.sigma_min`` (itself derived from float32 ᾱ's) decides the same way.
    """
    def alpha_bar(j: torch.Tensor) -> torch.Tensor:
        return (0.5 * math.pi * j / M / (C_2 + 1)).sin() ** 2

    u = torch.zeros(M + 1, dtype=torch.float64)
    for j in range(M, 0, -1):
        j_t = torch.tensor(j)
        ratio = (alpha_bar(j_t - 1) / alpha_bar(j_t)).clip(min=C_1)
        u[j - 1] = ((u[j] ** 2 + 1) / ratio - 1).sqrt()
    return u


def _ablation_sigma_steps(discretization: str, num_steps: int, sigma_min: float, sigma_max: float,
                          rho: float, epsilon_s: float, vp_beta_d: float, vp_beta_min: float,
                          C_1: float, C_2: float, M: int, device) -> torch.Tensor:
    """The N nonzero noise levels of one of the paper's four time-step discretisations (float64)."""
    frac = _step_fractions(num_steps, device)
    if discretization == 'vp':
        t_orig = 1 + frac * (epsilon_s - 1)
        return vp_sigma(t_orig, vp_beta_d, vp_beta_min)
    if discretization == 've':
        t_orig = sigma_max ** 2 * ((sigma_min ** 2 / sigma_max ** 2) ** frac)
        return t_orig.sqrt()
    if discretization == 'iddpm':
        u = _iddpm_sigmas(int(M), float(C_1), float(C_2)).to(device)
        u_kept = u[(u >= sigma_min) & (u <= sigma_max)]
        if u_kept.numel() == 0:
            raise ValueError(f'no iDDPM noise level lies in [{sigma_min}, {sigma_max}]')
        stride = (u_kept.numel() - 1) / (num_steps - 1) if num_steps > 1 else 0.0
        index = (stride * torch.arange(num_steps, dtype=torch.float64, device=device)).round().to(torch.int64)
        return u_kept[index]
    return edm_sigma_steps(num_steps, sigma_min, sigma_max, rho, device=device)[:-1]


def ablation_sampler(net, latents: torch.Tensor, class_labels: Optional[torch.Tensor] = None,
                     randn_like: RandnLike = torch.randn_like, num_steps: int = 18,
                     sigma_min: Optional[float] = None, sigma_max: Optional[float] = None, rho: float = 7,
                     solver: str = 'heun', discretization: str = 'edm', schedule: str = 'linear',
                     scaling: str = 'none', epsilon_s: float = 1e-3, C_1: float = 0.001, C_2: float = 0.008,
                     M: int = 1000, alpha: float = 1, S_churn: float = 0, S_min: float = 0,
                     S_max: float = float('inf'), S_noise: float = 1) -> torch.Tensor:
    """The EDM paper's generalised sampler, covering every row of its Table 1.

    The ODE is written in a time variable t with noise level σ(t) and signal scale s(t):
    dx/dt = (σ'/σ + s'/s)·x − σ' s/σ · D(x/s; σ), integrated with Euler or the 2nd-order
    Runge–Kutta family parameterised by ``alpha`` (alpha = 1 is Heun).

    Args:
        net, latents, class_labels, randn_like, S_*: as in ``heun_sampler``.
        num_steps:      N, number of nonzero noise levels.
        sigma_min, sigma_max: noise range; None selects the discretisation's default
                        (vp: σ(ε_s), σ(1) of the VP schedule with β_d = 19.9, β_min = 0.1;
                        ve: 0.02, 100; iddpm: 0.002, 81; edm: 0.002, 80), then clamped to the net's range.
        rho:            exponent of the 'edm' discretisation.
        solver:         'euler' | 'heun'.
        discretization: 'vp' | 've' | 'iddpm' | 'edm' -- how the N noise levels are placed.
        schedule:       'vp' | 've' | 'linear' -- σ(t).
        scaling:        'vp' | 'none' -- s(t) = 1/sqrt(1 + σ(t)²) or 1.
        epsilon_s:      VP's smallest time t (also fixes the VP schedule's β's together with σ range).
        C_1, C_2, M:    iDDPM's discretisation constants.
        alpha:          position of the 2nd stage of the RK2 step (t' = t̂ + alpha·h).

    Returns:
        float64 samples, same shape as ``latents``.

    Raises:
        ValueError: an unknown solver / discretization / schedule / scaling string.
    """
    _check_choice('solver', solver, SOLVERS)
    _check_choice('discretization', discretization, DISCRETIZATIONS)
    _check_choice('schedule', schedule, SCHEDULES)
    _check_choice('scaling', scaling, SCALINGS)
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f'num_steps must be a positive integer; got {num_steps!r}')
    if solver == 'heun' and not alpha > 0:
        raise ValueError(f'alpha must be positive for the heun solver; got {alpha!r}')
    num_steps = int(num_steps)
    device = latents.device

    if sigma_min is None:
        sigma_min = {'vp': vp_sigma(epsilon_s, _DEFAULT_VP_BETA_D, _DEFAULT_VP_BETA_MIN),
                     've': 0.02, 'iddpm': 0.002, 'edm': 0.002}[discretization]
    if sigma_max is None:
        sigma_max = {'vp': vp_sigma(1.0, _DEFAULT_VP_BETA_D, _DEFAULT_VP_BETA_MIN),
                     've': 100, 'iddpm': 81, 'edm': 80}[discretization]
    sigma_min, sigma_max = _clamp_to_net(net, sigma_min, sigma_max)

    # The VP schedule whose σ(ε_s) and σ(1) hit the chosen range exactly.
    log_max = math.log(sigma_max ** 2 + 1)
    vp_beta_d = 2 * (math.log(sigma_min ** 2 + 1) / epsilon_s - log_max) / (epsilon_s - 1)
    vp_beta_min = log_max - 0.5 * vp_beta_d

    sigma_steps = _ablation_sigma_steps(discretization, num_steps, sigma_min, sigma_max, rho, epsilon_s,
                                        vp_beta_d, vp_beta_min, C_1, C_2, M, device)
    sched = dict(vp=_vp_schedule(vp_beta_d, vp_beta_min), ve=_VE_SCHEDULE, linear=_LINEAR_SCHEDULE)[schedule]
    scale = _make_scaling(scaling, sched)
    round_sigma = _net_round(net)

    t_steps = sched.sigma_inv(torch.as_tensor(round_sigma(sigma_steps)).to(torch.float64))
    t_steps = torch.cat([t_steps, torch.zeros_like(t_steps[:1])])

    # Per-step coefficients, vectorised over the N steps.
    t_cur, t_next = t_steps[:-1], t_steps[1:]
    sigma_cur = sched.sigma(t_cur)
    gamma = _churn_gamma(sigma_cur, num_steps, S_churn, S_min, S_max)
    t_hat = sched.sigma_inv(torch.as_tensor(round_sigma(sigma_cur + gamma * sigma_cur)).to(torch.float64))
    sigma_hat, s_hat = sched.sigma(t_hat), scale.s(t_hat)
    keep = s_hat / scale.s(t_cur)
    noise_std = (sigma_hat ** 2 - sigma_cur ** 2).clip(min=0).sqrt() * s_hat * S_noise
    h = t_next - t_hat
    t_prime = t_hat + alpha * h
    sigma_prime, s_prime = sched.sigma(t_prime), scale.s(t_prime)

    def drift_coefficients(t, sigma_t, s_t):
        """(a, b) with dx/dt = a·x − b·D(x/s; σ)."""
        sigma_deriv_t = sched.sigma_deriv(t)
        return sigma_deriv_t / sigma_t + scale.s_deriv(t) / s_t, sigma_deriv_t * s_t / sigma_t

    a_hat, b_hat = drift_coefficients(t_hat, sigma_hat, s_hat)
    a_prime, b_prime = drift_coefficients(t_prime, sigma_prime, s_prime)
    w_prime = 1 / (2 * alpha) if solver == 'heun' else 0.0

    x_next = latents.to(torch.float64) * (sched.sigma(t_steps[:1]) * scale.s(t_steps[:1]))[0]
    for i in range(num_steps):
        x_cur = x_next
        x_hat = keep[i] * x_cur + noise_std[i] * randn_like(x_cur)

        denoised = net(x_hat / s_hat[i], sigma_hat[i], class_labels).to(torch.float64)
        d_cur = a_hat[i] * x_hat - b_hat[i] * denoised

        if solver == 'euler' or i == num_steps - 1:
            x_next = x_hat + h[i] * d_cur
        else:
            x_prime = x_hat + alpha * h[i] * d_cur
            denoised = net(x_prime / s_prime[i], sigma_prime[i], class_labels).to(torch.float64)
            d_prime = a_prime[i] * x_prime - b_prime[i] * denoised
            x_next = x_hat + h[i] * ((1 - w_prime) * d_cur + w_prime * d_prime)
    return x_next
