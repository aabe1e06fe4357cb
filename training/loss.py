"""Denoising losses of EDM (VP, VE and EDM objectives) with a pluggable σ distribution and weight.

Each loss draws one σ per image from ``self.sigma_sampler``, optionally augments the images, adds
Gaussian noise of that σ, and returns the weighted squared error of the denoiser:

    loss = w(σ) · (D(y + σ ε; σ) − y)²          (per element, not reduced)

With the default sampler and weighting every loss is bit-for-bit the reference's for the same random
state: σ is drawn first (n values, reshaped to [N, 1, ..., 1] to broadcast over data of any rank, e.g.
[N, 1, 1, 1] for images and [N, 1, 1] for DNA [N, 4, L]), then the augmentation pipe runs, then
``torch.randn_like(y)``.

Pluggable parts (docs/ARCHITECTURE.md, "Seams worth knowing"):

- ``loss_fn.sigma_sampler``: any object with ``sample(n, device=None, generator=None)`` (and
  ``observe`` / ``step`` / ``profile`` / ``state_dict`` / ``load_state_dict``), e.g. an
  ``infonoise.InfoNoiseSampler``; replace it by assignment. It is not pickled with the loss
  (``_persistence_exclude``); a loaded loss starts with its default sampler.
- ``weighting``: constructor kwarg naming ``infonoise.get_weight``'s function ('edm' | 'vp' | 've' |
  'unit' | 'min-snr' with ``min_snr_gamma``). ``loss_fn.weight_fn`` is that function (picklable), e.g. for
  ``InfoNoiseSampler(weight_fn=...)``.
- An importance-sampling σ-sampler (``infonoise.LossSecondMomentSampler``, ``KingmaGaoSampler``) has
  ``importance_weight(sigma)``; the loss multiplies w(σ) by it, so the objective is the base one in
  expectation. Allocation samplers (InfoNoise, CDCD) have none or return ones and keep the weight.
- ``uncertainty=True``: EDM2's learned uncertainty weighting (Karras et al. 2024, "Analyzing and improving
  the training dynamics of diffusion models", the loss with learned uncertainty): a small learned function u(σ) (``loss_fn.logvar``,
  an ``UncertaintyNet``) and the per-element loss (w(σ)/e^{u(σ)})·(D − y)² + u(σ). Its parameters
  (``loss_fn.trainable_parameters()``) are optimised with the network's and saved in snapshots (the
  pickled loss) and training states.

``compute()`` also returns σ and the per-sample unweighted error for ``sigma_sampler.observe``; the
training loop calls ``observe`` (the loss never does, so gradient accumulation stays the caller's call).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from infonoise.samplers import LogNormalSampler, LogUniformSampler
from infonoise.weights import WEIGHT_NAMES, get_weight
from torch_utils import persistence
from training.vp import vp_sigma


@persistence.persistent_class
class UncertaintyNet(torch.nn.Module):
    """u(σ) of EDM2's uncertainty weighting: fixed random Fourier features of c_noise = ln(σ)/4 (EDM2's
    noise embedding), cos(2π(f·c + φ))·√2 with f ~ N(0, 1), φ ~ U[0, 1), then one linear layer to a scalar.

    EDM2 uses 128 features and a magnitude-preserving linear layer; this one is a plain linear layer
    initialised to zero, so that training starts exactly at the base objective (u ≡ 0).

    Args:
        num_features: number of Fourier features (EDM2: 128).
        seed:         seed of the fixed frequencies and phases (own generator; the global RNG is untouched).
    """

    def __init__(self, num_features: int = 128, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer('freqs', torch.randn(int(num_features), generator=gen))
        self.register_buffer('phases', torch.rand(int(num_features), generator=gen))
        self.linear = torch.nn.Linear(int(num_features), 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        """u(σ) with σ's shape (float32)."""
        c = sigma.float().log().reshape(-1, 1) / 4
        features = torch.cos(2 * torch.pi * (c * self.freqs + self.phases)) * (2 ** 0.5)
        return self.linear(features).reshape(sigma.shape)


class LossTerms(NamedTuple):
    """What one loss evaluation produces."""
    loss: torch.Tensor   # weighted per-element loss, shaped like the images (the reference's return value)
    sigma: torch.Tensor  # [N] noise level drawn for each image
    error: torch.Tensor  # [N] detached mean over each image's elements of (D − y)², unweighted


class VPTimeSampler:
    """The VP loss's σ distribution: t ~ U(ε_t, 1), σ = σ_VP(t). A fixed σ-sampler.

    Args:
        beta_d:    extent β_d of the VP schedule.
        beta_min:  initial slope β_min of the VP schedule.
        epsilon_t: smallest time ε_t.
    """

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5):
        self.beta_d = float(beta_d)
        self.beta_min = float(beta_min)
        self.epsilon_t = float(epsilon_t)

    def sample(self, n: int, device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n draws (float32): σ(1 + u(ε_t − 1)) with u ~ U[0, 1) -- the reference's expression."""
        rnd_uniform = torch.rand(n, device=device, generator=generator)
        return vp_sigma(1 + rnd_uniform * (self.epsilon_t - 1), self.beta_d, self.beta_min)

    def observe(self, sigma: torch.Tensor, loss: torch.Tensor) -> None:
        """A fixed distribution learns nothing."""

    def step(self) -> bool:
        return False

    def profile(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""

    def __repr__(self) -> str:
        return f'VPTimeSampler(beta_d={self.beta_d}, beta_min={self.beta_min}, epsilon_t={self.epsilon_t})'


class _DenoisingLoss:
    """Shared body of the three losses; subclasses set their parameters and default sampler."""

    _persistence_exclude = ('sigma_sampler',)
    # Class-level fallbacks for objects restored from a reference state (which lacks these fields).
    weighting = 've'
    sigma_data = 0.5
    min_snr_gamma = 5.0
    logvar = None        # UncertaintyNet when the loss was built with uncertainty=True

    def _init_common(self, weighting: str, sigma_data: float, min_snr_gamma: float = 5.0,
                     uncertainty: bool = False) -> None:
        if weighting not in WEIGHT_NAMES:
            raise ValueError(f'weighting must be one of {", ".join(WEIGHT_NAMES)}; got {weighting!r}')
        self.weighting = weighting
        self.sigma_data = float(sigma_data)
        if weighting == 'min-snr' or min_snr_gamma != 5.0:
            get_weight('min-snr', min_snr_gamma=min_snr_gamma)       # validates γ > 0
            self.min_snr_gamma = float(min_snr_gamma)
        if uncertainty:   # True: a fresh u(σ); an UncertaintyNet: that one (how a snapshot restores it)
            self.logvar = uncertainty if isinstance(uncertainty, UncertaintyNet) else UncertaintyNet()
        self.sigma_sampler = self.default_sigma_sampler()

    def __getstate__(self) -> dict:
        # The safe snapshot loader rebuilds a loss from its recorded constructor arguments; recording the
        # learned u(σ) there (a network record, whose tensors it restores) carries the trained values.
        state = dict(self.__dict__)
        if self.logvar is not None and isinstance(state.get('_init_kwargs'), dict):
            state['_init_kwargs'] = dict(state['_init_kwargs'], uncertainty=self.logvar)
        return state

    def trainable_parameters(self, device: torch.device | str | None = None) -> list:
        """The loss's own trainable parameters (EDM2's u(σ) with uncertainty=True; else none), moved to
        `device` first when given (before an optimizer is built over them)."""
        if self.logvar is None:
            return []
        if device is not None:
            self.logvar.to(device)
        return list(self.logvar.parameters())

    def default_sigma_sampler(self):
        raise NotImplementedError

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: an object restored from a pickled __dict__ without
        # its (excluded) sampler gets the default one on first use.
        if name == 'sigma_sampler':
            sampler = self.default_sigma_sampler()
            self.__dict__['sigma_sampler'] = sampler
            return sampler
        raise AttributeError(f'{type(self).__name__!r} object has no attribute {name!r}')

    @property
    def weight_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The loss weight w(σ) as a (picklable) function."""
        return get_weight(self.weighting, sigma_data=self.sigma_data, min_snr_gamma=self.min_snr_gamma)

    def _evaluate(self, net, images: torch.Tensor, labels, augment_pipe):
        batch = images.shape[0]
        sigma = self.sigma_sampler.sample(batch, device=images.device)
        importance_weight = getattr(self.sigma_sampler, 'importance_weight', None)
        sigma = sigma.reshape([batch] + [1] * (images.ndim - 1))
        weight = self.weight_fn(sigma)
        if importance_weight is not None:      # base density / π: unbiased for the base objective
            weight = weight * importance_weight(sigma)
        y, augment_labels = augment_pipe(images) if augment_pipe is not None else (images, None)
        n = torch.randn_like(y) * sigma
        D_yn = net(y + n, sigma, labels, augment_labels=augment_labels)
        squared_error = (D_yn - y) ** 2
        if self.logvar is not None:            # EDM2: (w / e^u)·(D − y)² + u
            if self.logvar.freqs.device != sigma.device:
                self.logvar.to(sigma.device)
            u = self.logvar(sigma)
            return (weight / u.exp()) * squared_error + u, sigma, squared_error
        return weight * squared_error, sigma, squared_error

    def __call__(self, net, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 augment_pipe=None) -> torch.Tensor:
        """The weighted per-element loss (same shape as ``images``), exactly as the reference."""
        return self._evaluate(net, images, labels, augment_pipe)[0]

    def compute(self, net, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                augment_pipe=None) -> LossTerms:
        """``__call__``'s loss (same random draws) plus σ [N] and the unweighted error [N]."""
        loss, sigma, squared_error = self._evaluate(net, images, labels, augment_pipe)
        error = squared_error.detach().flatten(1).mean(dim=1)
        return LossTerms(loss=loss, sigma=sigma.detach().flatten(), error=error)


@persistence.persistent_class
class VPLoss(_DenoisingLoss):
    """The variance-preserving objective (Song et al. 2021) as EDM writes it: t ~ U(ε_t, 1), w = 1/σ²."""

    def __init__(self,
                 beta_d: float = 19.9,      # Extent of the VP noise schedule.
                 beta_min: float = 0.1,     # Initial slope of the VP noise schedule.
                 epsilon_t: float = 1e-5,   # Smallest sampled time t.
                 weighting: str = 've',     # Loss weight: 'edm' | 'vp' | 've' (1/σ², the reference) | 'unit' | 'min-snr'.
                 sigma_data: float = 0.5,   # σ_data of the 'edm' weighting (unused otherwise).
                 min_snr_gamma: float = 5.0,  # γ of the 'min-snr' weighting (> 0).
                 uncertainty: bool = False,   # EDM2's learned uncertainty u(σ) on top of the weighting (or a
                                              # trained UncertaintyNet to use).
                 ):
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.epsilon_t = epsilon_t
        self._init_common(weighting, sigma_data, min_snr_gamma, uncertainty)

    def default_sigma_sampler(self) -> VPTimeSampler:
        return VPTimeSampler(self.beta_d, self.beta_min, self.epsilon_t)


@persistence.persistent_class
class VELoss(_DenoisingLoss):
    """The variance-exploding objective (Song et al. 2021): ln σ ~ U(ln σ_min, ln σ_max), w = 1/σ²."""

    def __init__(self,
                 sigma_min: float = 0.02,   # Lower end of the log-uniform σ range.
                 sigma_max: float = 100,    # Upper end of the log-uniform σ range.
                 weighting: str = 've',     # Loss weight: 'edm' | 'vp' | 've' (1/σ², the reference) | 'unit' | 'min-snr'.
                 sigma_data: float = 0.5,   # σ_data of the 'edm' weighting (unused otherwise).
                 min_snr_gamma: float = 5.0,  # γ of the 'min-snr' weighting (> 0).
                 uncertainty: bool = False,   # EDM2's learned uncertainty u(σ) on top of the weighting (or a
                                              # trained UncertaintyNet to use).
                 ):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self._init_common(weighting, sigma_data, min_snr_gamma, uncertainty)

    def default_sigma_sampler(self) -> LogUniformSampler:
        return LogUniformSampler(self.sigma_min, self.sigma_max)


@persistence.persistent_class
class EDMLoss(_DenoisingLoss):
    """EDM's objective: ln σ ~ N(P_mean, P_std²), w = (σ² + σ_data²)/(σ σ_data)²."""

    weighting = 'edm'

    def __init__(self,
                 P_mean: float = -1.2,      # Mean of ln σ.
                 P_std: float = 1.2,        # Standard deviation of ln σ.
                 sigma_data: float = 0.5,   # Standard deviation of the data (EDM weighting).
                 weighting: str = 'edm',    # Loss weight: 'edm' (the reference) | 'vp' | 've' | 'unit' | 'min-snr'.
                 min_snr_gamma: float = 5.0,  # γ of the 'min-snr' weighting (> 0).
                 uncertainty: bool = False,   # EDM2's learned uncertainty u(σ) on top of the weighting (or a
                                              # trained UncertaintyNet to use).
                 ):
        self.P_mean = P_mean
        self.P_std = P_std
        self._init_common(weighting, sigma_data, min_snr_gamma, uncertainty)

    def default_sigma_sampler(self) -> LogNormalSampler:
        return LogNormalSampler(self.P_mean, self.P_std)
