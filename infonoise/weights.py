"""Per-σ loss weights w(σ) of the common diffusion objectives.

The training loss is w(σ)·‖D(x_σ) − y‖²; InfoNoise samples π ∝ ρ / w so that the effective emphasis
φ = π·w follows the target ρ. Every function takes a tensor (or ndarray) of σ and returns w of the same
shape and kind.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch

WEIGHT_NAMES = ('edm', 'vp', 've', 'unit', 'min-snr')


def edm_weight(sigma, sigma_data: float = 0.5):
    """EDM's weight λ(σ) = (σ² + σ_data²) / (σ · σ_data)²."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def vp_weight(sigma):
    """The VP objective's weight as EDM writes it in σ, which is also the VE objective's: 1 / σ²."""
    return 1 / sigma ** 2


ve_weight = vp_weight


def unit_weight(sigma):
    """w ≡ 1 (plain denoising error; the discrete-data recipes)."""
    if isinstance(sigma, torch.Tensor):
        return torch.ones_like(sigma)
    return np.ones_like(np.asarray(sigma, dtype=np.float64))


def min_snr_weight(sigma, gamma: float = 5.0):
    """Min-SNR-γ (Hang et al. 2023, "Efficient diffusion training via Min-SNR weighting strategy"), for the
    denoised-data (x₀) error that the EDM losses measure: w = min(SNR(σ), γ) with SNR = 1/σ² (the VP
    SNR α²/σ_t² in EDM's σ = σ_t/α_t); the paper's default γ = 5."""
    snr = 1 / sigma ** 2
    if isinstance(snr, torch.Tensor):
        return snr.clamp(max=gamma)
    return np.minimum(snr, gamma)


def get_weight(name: str, sigma_data: float = 0.5, min_snr_gamma: float = 5.0) -> Callable:
    """The weight function called `name` (one of edm, vp, ve, unit, min-snr); picklable.

    sigma_data is used by 'edm', min_snr_gamma (> 0) by 'min-snr'.
    """
    if name == 'edm':
        return functools.partial(edm_weight, sigma_data=sigma_data)
    if name == 'min-snr':
        if not (isinstance(min_snr_gamma, (int, float)) and np.isfinite(min_snr_gamma) and min_snr_gamma > 0):
            raise ValueError(f'the Min-SNR gamma must be a finite number > 0, got {min_snr_gamma!r}')
        return functools.partial(min_snr_weight, gamma=float(min_snr_gamma))
    table = {'vp': vp_weight, 've': ve_weight, 'unit': unit_weight}
    if name not in table:
        raise ValueError(f'unknown weight name {name!r}; expected one of {", ".join(WEIGHT_NAMES)}')
    return table[name]
