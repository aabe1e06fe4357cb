"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a denoiser, so samplers stay unchanged.

    D_W(x; σ, c) = D(x; σ, ∅) + W · (D(x; σ, c) − D(x; σ, ∅))

W = 1 is plain conditional sampling, W = 0 unconditional sampling, W > 1 sharpens the class. The
unconditional branch ∅ is the all-zero class vector: the null label that label dropout trains (our
U-Nets zero a dropped label, DNAUNet maps the zero vector to its null-class embedding). Both branches
run in one batched network call. DNA-Diffusion writes the same rule on the noise prediction as
(1 + w)·ε(c) − w·ε(∅), so its `cond_weight` w corresponds to W = 1 + w.
"""
from __future__ import annotations

from typing import Any

import torch


def check_guidance(net: torch.nn.Module, guidance: float) -> None:
    """ValueError (one sentence) unless guidance weight W can be used with `net`.

    W != 1 needs a class-conditional network trained with label dropout (so that it knows the null
    label); a network that does not record its label dropout (e.g. one loaded from foreign code) is
    trusted.
    """
    guidance = float(guidance)
    if guidance < 0:
        raise ValueError(f'The guidance weight must be >= 0, got {guidance:g}.')
    if guidance == 1:
        return
    if not int(getattr(net, 'label_dim', 0) or 0):
        raise ValueError(f'Guidance (W = {guidance:g}) needs a class-conditional network, but this one is '
                         f'unconditional; use W = 1.')
    dropout = getattr(getattr(net, 'model', None), 'label_dropout', None)
    if dropout is not None and not float(dropout) > 0:
        raise ValueError(f'Guidance (W = {guidance:g}) needs a network trained with label dropout, but this '
                         f'one has label_dropout = 0, so it never learned the unconditional (null) label.')


class GuidedDenoiser(torch.nn.Module):
    """`net` with classifier-free guidance weight W (see the module docstring); net's interface otherwise."""

    def __init__(self,
        net: torch.nn.Module,   # A denoiser called as net(x, sigma, class_labels, **kwargs), e.g. EDMPrecond.
        guidance: float,        # Guidance weight W >= 0 (1 = plain conditional).
    ) -> None:
        super().__init__()
        check_guidance(net, guidance)
        self.net = net
        self.guidance = float(guidance)

    def __getattr__(self, name: str) -> Any:
        """Every other attribute (img_resolution, label_dim, sigma_min/max, round_sigma, data_shape, ...) is the
        wrapped network's, so samplers and CLIs read the wrapper as they read the network."""
        try:
            return super().__getattr__(name)   # parameters, buffers and submodules (self.net)
        except AttributeError:
            if name == 'net':
                raise
            return getattr(self.net, name)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if self.guidance == 1 or not self.label_dim:
            return self.net(x, sigma, class_labels, augment_labels=augment_labels, **kwargs)
        n = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.numel() > 1:
            sigma = sigma.reshape(n).repeat(2)
        if class_labels is None:
            class_labels = torch.zeros([n, self.label_dim], device=x.device)
        class_labels = class_labels.reshape(-1, self.label_dim).expand(n, -1)
        labels = torch.cat([class_labels, torch.zeros_like(class_labels)])
        if augment_labels is not None:
            augment_labels = augment_labels.repeat(2, *([1] * (augment_labels.ndim - 1)))
        D = self.net(torch.cat([x, x]), sigma, labels, augment_labels=augment_labels, **kwargs)
        D_cond, D_uncond = D.chunk(2)
        return D_uncond + self.guidance * (D_cond - D_uncond)
