"""The variance-preserving (VP) noise schedule of Song et al. (2021), declared once.

σ(t) = sqrt(exp(½ β_d t² + β_min t) − 1) and its inverse t(σ), in the reference's floating-point
order of operations (the preconditioner, the loss's σ distribution and the ablation sampler share them).
"""
from __future__ import annotations

import math

import torch


def vp_sigma(t: torch.Tensor | float, beta_d: float, beta_min: float) -> torch.Tensor | float:
    """σ(t) of the VP schedule (a Python float for a float t, else a tensor)."""
    if isinstance(t, (int, float)):
        return math.sqrt(math.exp(0.5 * beta_d * t ** 2 + beta_min * t) - 1)
    t = torch.as_tensor(t)
    return ((0.5 * beta_d * (t ** 2) + beta_min * t).exp() - 1).sqrt()


def vp_sigma_inv(sigma: torch.Tensor | float, beta_d: float, beta_min: float) -> torch.Tensor:
    """t(σ), the inverse of `vp_sigma`."""
    sigma = torch.as_tensor(sigma)
    return ((beta_min ** 2 + 2 * beta_d * (1 + sigma ** 2).log()).sqrt() - beta_min) / beta_d
