"""Fréchet distance between Gaussian feature statistics (FID), and their accumulation across ranks.

Statistics follow EDM's `fid.py` conventions: features are accumulated in float64 as a running sum Σf
and a running Gram matrix Σ f fᵀ on the features' device; after summing both over all ranks,
    μ = Σf / n,     Σ = (Σ f fᵀ − n μ μᵀ) / (n − 1)       (unbiased covariance).
The distance is
    FID = ‖μ − μ_r‖² + Tr(Σ + Σ_r − 2 (Σ Σ_r)^½),
with the matrix square root from `scipy.linalg.sqrtm` and the real part of the result taken.
"""
from __future__ import annotations

from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import scipy.linalg
import torch


class FeatureStats:
    """Running float64 sums of features for their mean and covariance, reducible across ranks."""

    def __init__(self,
        feature_dim: int,                       # D, the length of one feature vector.
        device: torch.device | str = 'cpu',     # Where the sums live (the detector's device avoids copies).
    ) -> None:
        self.feature_dim = int(feature_dim)
        self.sum = torch.zeros([self.feature_dim], dtype=torch.float64, device=device)
        self.gram = torch.zeros([self.feature_dim, self.feature_dim], dtype=torch.float64, device=device)
        self.count = 0

    def append(self, features: torch.Tensor) -> None:
        """Add a batch of features [N, D] (any float dtype; promoted to float64)."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(f'Expected features of shape [N, {self.feature_dim}], got {list(features.shape)}.')
        f = features.to(device=self.sum.device, dtype=torch.float64)
        self.sum += f.sum(dim=0)
        self.gram += f.T @ f
        self.count += f.shape[0]

    def all_reduce(self) -> None:
        """Sum the statistics over all ranks (no-op unless torch.distributed is initialised)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.sum.device)
        for t in (self.sum, self.gram, count):
            torch.distributed.all_reduce(t)
        self.count = int(round(count.item()))

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ [D], Σ [D, D]) as float64 numpy arrays; needs at least two features in total."""
        n = self.count
        if n < 2:
            raise ValueError(f'Need at least 2 images to compute feature statistics, got {n}.')
        mu = self.sum / n
        sigma = (self.gram - n * torch.outer(mu, mu)) / (n - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy()


def rank_index_batches(num_items: int, max_batch_size: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """This rank's item indices, in EDM's layout: world_size·⌈n / (batch·world_size)⌉ near-equal
    consecutive batches, rank r taking batches r, r + world_size, ... (some may be empty)."""
    num_batches = ((num_items - 1) // (max_batch_size * world_size) + 1) * world_size if num_items else world_size
    return list(torch.arange(num_items).tensor_split(num_batches)[rank::world_size])


def dataset_batches(dataset: torch.utils.data.Dataset, max_batch_size: int, rank: int = 0, world_size: int = 1,
                    num_workers: int = 0) -> Iterator[torch.Tensor]:
    """uint8 image batches [n, C, H, W] of this rank's share of a dataset yielding (uint8 CHW, label)."""
    batches = [b.tolist() for b in rank_index_batches(len(dataset), max_batch_size, rank, world_size) if len(b)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                                         prefetch_factor=2 if num_workers > 0 else None)
    for images, _labels in loader:
        yield images


def compute_stats(batches: Iterable[torch.Tensor], detector: Callable[[torch.Tensor], torch.Tensor],
                  feature_dim: int, device: torch.device | str = 'cpu') -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of detector features over every rank's batches (all ranks must call this together)."""
    stats = FeatureStats(feature_dim, device)
    for images in batches:
        if images.shape[0]:
            stats.append(detector(images))
    stats.all_reduce()
    mu, sigma = stats.mean_cov()
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError('The detector produced non-finite features.')
    return mu, sigma


def frechet_distance(mu: np.ndarray, sigma: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """‖μ − μ_r‖² + Tr(Σ + Σ_r − 2 (Σ Σ_r)^½), real part (EDM's FID formula)."""
    mu, mu_ref = np.asarray(mu, np.float64), np.asarray(mu_ref, np.float64)
    sigma, sigma_ref = np.asarray(sigma, np.float64), np.asarray(sigma_ref, np.float64)
    if mu.shape != mu_ref.shape or sigma.shape != sigma_ref.shape or sigma.shape != mu.shape * 2:
        raise ValueError(f'Feature statistics do not match: mu {list(mu.shape)} / sigma {list(sigma.shape)} '
                         f'vs reference mu {list(mu_ref.shape)} / sigma {list(sigma_ref.shape)}.')
    mean_term = np.square(mu - mu_ref).sum()
    sqrt_prod = scipy.linalg.sqrtm(sigma @ sigma_ref)
    return float(np.real(mean_term + np.trace(sigma + sigma_ref - 2 * sqrt_prod)))


def load_reference_stats(f: BinaryIO, name: str = 'reference') -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) from an .npz file object holding arrays `mu` [D] and `sigma` [D, D]; ValueError otherwise."""
    try:
        with np.load(f, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ValueError(f'{name} is not a readable .npz file ({exc}).') from exc
    missing = [k for k in ('mu', 'sigma') if k not in arrays]
    if missing:
        raise ValueError(f'{name} has no {" or ".join(missing)} array (found: {", ".join(sorted(arrays)) or "none"}).')
    mu, sigma = arrays['mu'].astype(np.float64), arrays['sigma'].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != mu.shape * 2:
        raise ValueError(f'{name} has mu of shape {list(mu.shape)} and sigma of shape {list(sigma.shape)}; '
                         f'expected [D] and [D, D].')
    return mu, sigma


def save_reference_stats(f: BinaryIO, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write (μ, Σ) as an .npz with arrays `mu` and `sigma` (EDM's reference format)."""
    np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))
