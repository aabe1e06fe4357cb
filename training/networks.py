"""EDM-compatible network architectures and preconditioners.

Two U-Nets -- `SongUNet` (DDPM++ / NCSN++, Song et al. 2021) and `DhariwalUNet` (ADM, Dhariwal &
Nichol 2021) -- and four preconditioners that wrap them as denoisers D(x; sigma):
`VPPrecond`, `VEPrecond`, `iDDPMPrecond` and `EDMPrecond` (Karras et al. 2022, Table 1).

Constructor keyword arguments, defaults, parameter/buffer names and shapes follow the EDM reference
exactly, so its checkpoints load with `load_state_dict(strict=True)` and the outputs agree to float32
rounding. As in `training.layers`, `forward` only reads attributes the reference also stores.
"""
from __future__ import annotations

import math

import torch
from torch.nn.functional import silu

from torch_utils import persistence
from training.layers import Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding, UNetBlock, drop_labels
from training.networks_dna import DNAUNet
from training.vp import vp_sigma, vp_sigma_inv

__all__ = ['SongUNet', 'DhariwalUNet', 'DNAUNet', 'VPPrecond', 'VEPrecond', 'iDDPMPrecond', 'EDMPrecond', 'data_shape']


def _check_geometry(net: str, img_resolution: int, channel_mult: list[int], attn_resolutions: list[int]) -> None:
    """Raise ValueError unless the U-Net's resolution ladder img_resolution >> level is well defined."""
    if len(channel_mult) == 0:
        raise ValueError(f'{net}: channel_mult must name at least one resolution level')
    if not isinstance(img_resolution, int) or img_resolution < 1 or img_resolution & (img_resolution - 1):
        raise ValueError(f'{net}: img_resolution must be a power of two, got {img_resolution!r}')
    depth = len(channel_mult)
    if img_resolution < 2 ** (depth - 1):
        raise ValueError(f'{net}: img_resolution {img_resolution} is too small for {depth} levels '
                         f'(channel_mult={list(channel_mult)}); it must be at least {2 ** (depth - 1)}')
    ladder = [img_resolution >> level for level in range(depth)]
    missing = [r for r in attn_resolutions if r not in ladder]
    if missing:
        raise ValueError(f'{net}: attn_resolutions {missing} never occur; the resolutions are {ladder}')


def _levels(img_resolution: int, channel_mult: list[int]) -> list[tuple[int, int, int, str]]:
    """(level, channel multiplier, resolution, name tag 'RxR') of each U-Net level, top resolution first."""
    return [(level, mult, img_resolution >> level, f'{img_resolution >> level}x{img_resolution >> level}')
            for level, mult in enumerate(channel_mult)]


@persistence.persistent_class
class SongUNet(torch.nn.Module):
    """DDPM++ / NCSN++ U-Net (EDM's re-implementation of Song et al.'s score_sde networks)."""

    def __init__(
        self,
        img_resolution: int,              # Image resolution at input and output (power of two).
        in_channels: int,                 # Colour channels at the input.
        out_channels: int,                # Colour channels at the output.
        label_dim: int = 0,               # Number of class labels; 0 = unconditional.
        augment_dim: int = 0,             # Augmentation label width; 0 = no augmentation conditioning.
        model_channels: int = 128,        # Base channel count.
        channel_mult: list[int] = [1, 2, 2, 2],  # Channel multiplier per resolution level.
        channel_mult_emb: int = 4,        # Embedding width = model_channels * channel_mult_emb.
        num_blocks: int = 4,              # Residual blocks per resolution level.
        attn_resolutions: list[int] = [16],  # Resolutions that get self-attention.
        dropout: float = 0.10,            # Dropout probability inside the blocks.
        label_dropout: float = 0,         # Probability of dropping the class label during training.
        embedding_type: str = 'positional',  # Noise embedding: 'positional' (DDPM++) or 'fourier' (NCSN++).
        channel_mult_noise: int = 1,      # Noise embedding width multiplier: 1 (DDPM++), 2 (NCSN++).
        encoder_type: str = 'standard',   # 'standard' (DDPM++), 'skip', or 'residual' (NCSN++).
        decoder_type: str = 'standard',   # 'standard' or 'skip'.
        resample_filter: list[int] = [1, 1],  # FIR taps: [1,1] (DDPM++) or [1,3,3,1] (NCSN++).
    ):
        if embedding_type not in ('positional', 'fourier'):
            raise ValueError(f"SongUNet: unknown embedding_type {embedding_type!r}; expected 'positional' or 'fourier'")
        if encoder_type not in ('standard', 'skip', 'residual'):
            raise ValueError(f"SongUNet: unknown encoder_type {encoder_type!r}; expected 'standard', 'skip' or 'residual'")
        if decoder_type not in ('standard', 'skip'):
            raise ValueError(f"SongUNet: unknown decoder_type {decoder_type!r}; expected 'standard' or 'skip'")
        _check_geometry('SongUNet', img_resolution, channel_mult, attn_resolutions)
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode='xavier_uniform')
        init_zero = dict(init_mode='xavier_uniform', init_weight=1e-5)
        init_attn = dict(init_mode='xavier_uniform', init_weight=math.sqrt(0.2))
        block = dict(
            emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
            resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
            init=init, init_zero=init_zero, init_attn=init_attn,
        )

        # Mapping network: noise (+ label + augmentation) -> embedding.
        if embedding_type == 'positional':
            self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(num_channels=noise_channels)
        self.map_label = Linear(in_features=label_dim, out_features=noise_channels, **init) if label_dim else None
        self.map_augment = (Linear(in_features=augment_dim, out_features=noise_channels, bias=False, **init)
                            if augment_dim else None)
        self.map_layer0 = Linear(in_features=noise_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)

        # Encoder. `aux_*` modules carry the downsampled input image alongside (skip/residual types).
        self.enc = torch.nn.ModuleDict()
        width = in_channels          # channels of the main path so far
        aux_width = in_channels      # channels of the auxiliary image path
        for level, mult, res, tag in _levels(img_resolution, channel_mult):
            if level == 0:
                self.enc[f'{tag}_conv'] = Conv2d(in_channels=width, out_channels=model_channels, kernel=3, **init)
                width = model_channels
            else:
                self.enc[f'{tag}_down'] = UNetBlock(in_channels=width, out_channels=width, down=True, **block)
                if encoder_type == 'skip':
                    self.enc[f'{tag}_aux_down'] = Conv2d(in_channels=aux_width, out_channels=aux_width, kernel=0,
                                                         down=True, resample_filter=resample_filter)
                    self.enc[f'{tag}_aux_skip'] = Conv2d(in_channels=aux_width, out_channels=width, kernel=1, **init)
                if encoder_type == 'residual':
                    self.enc[f'{tag}_aux_residual'] = Conv2d(
                        in_channels=aux_width, out_channels=width, kernel=3, down=True,
                        resample_filter=resample_filter, fused_resample=True, **init)
                    aux_width = width
            for idx in range(num_blocks):
                self.enc[f'{tag}_block{idx}'] = UNetBlock(in_channels=width, out_channels=model_channels * mult,
                                                          attention=(res in attn_resolutions), **block)
                width = model_channels * mult
        skip_widths = [m.out_channels for name, m in self.enc.items() if 'aux' not in name]

        # Decoder. Every `_block{idx}` consumes one encoder skip (concatenated along channels).
        self.dec = torch.nn.ModuleDict()
        last = len(channel_mult) - 1
        for level, mult, res, tag in reversed(_levels(img_resolution, channel_mult)):
            if level == last:
                self.dec[f'{tag}_in0'] = UNetBlock(in_channels=width, out_channels=width, attention=True, **block)
                self.dec[f'{tag}_in1'] = UNetBlock(in_channels=width, out_channels=width, **block)
            else:
                self.dec[f'{tag}_up'] = UNetBlock(in_channels=width, out_channels=width, up=True, **block)
            for idx in range(num_blocks + 1):
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f'{tag}_block{idx}'] = UNetBlock(in_channels=width + skip_widths.pop(),
                                                          out_channels=model_channels * mult, attention=attn, **block)
                width = model_channels * mult
            if decoder_type == 'skip' or level == 0:
                if decoder_type == 'skip' and level < last:
                    self.dec[f'{tag}_aux_up'] = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=0,
                                                       up=True, resample_filter=resample_filter)
                self.dec[f'{tag}_aux_norm'] = GroupNorm(num_channels=width, eps=1e-6)
                self.dec[f'{tag}_aux_conv'] = Conv2d(in_channels=width, out_channels=out_channels, kernel=3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        # Mapping. The noise embedding is used as [sin, cos] (PositionalEmbedding emits [cos, sin]).
        cos_half, sin_half = self.map_noise(noise_labels).chunk(2, dim=1)
        emb = torch.cat([sin_half, cos_half], dim=1)
        if self.map_label is not None:
            labels = drop_labels(self, class_labels, x.shape[0])
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer1(silu(self.map_layer0(emb))))

        # Encoder.
        skips = []
        aux = x
        for name, module in self.enc.items():
            if 'aux_down' in name:
                aux = module(aux)
            elif 'aux_skip' in name:
                x = x + module(aux)
                skips[-1] = x
            elif 'aux_residual' in name:
                x = (x + module(aux)) / math.sqrt(2)
                skips[-1] = aux = x
            else:
                x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
                skips.append(x)

        # Decoder. `out` accumulates the (upsampled) image-space outputs of the aux heads.
        out = None
        head = None
        for name, module in self.dec.items():
            if 'aux_up' in name:
                out = module(out)
            elif 'aux_norm' in name:
                head = module(x)
            elif 'aux_conv' in name:
                head = module(silu(head))
                out = head if out is None else head + out
            else:
                if x.shape[1] != module.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = module(x, emb)
        return out


@persistence.persistent_class
class DhariwalUNet(torch.nn.Module):
    """ADM U-Net (EDM's re-implementation of Dhariwal & Nichol's guided-diffusion network)."""

    def __init__(
        self,
        img_resolution: int,              # Image resolution at input and output (power of two).
        in_channels: int,                 # Colour channels at the input.
        out_channels: int,                # Colour channels at the output.
        label_dim: int = 0,               # Number of class labels; 0 = unconditional.
        augment_dim: int = 0,             # Augmentation label width; 0 = no augmentation conditioning.
        model_channels: int = 192,        # Base channel count.
        channel_mult: list[int] = [1, 2, 3, 4],  # Channel multiplier per resolution level.
        channel_mult_emb: int = 4,        # Embedding width = model_channels * channel_mult_emb.
        num_blocks: int = 3,              # Residual blocks per resolution level.
        attn_resolutions: list[int] = [32, 16, 8],  # Resolutions that get self-attention (64 ch/head).
        dropout: float = 0.10,            # Dropout probability inside the blocks.
        label_dropout: float = 0,         # Probability of dropping the class label during training.
    ):
        _check_geometry('DhariwalUNet', img_resolution, channel_mult, attn_resolutions)
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode='kaiming_uniform', init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode='kaiming_uniform', init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero)

        # Mapping network.
        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = (Linear(in_features=augment_dim, out_features=model_channels, bias=False, **init_zero)
                            if augment_dim else None)
        self.map_layer0 = Linear(in_features=model_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)
        self.map_label = (Linear(in_features=label_dim, out_features=emb_channels, bias=False,
                                 init_mode='kaiming_normal', init_weight=math.sqrt(label_dim))
                          if label_dim else None)

        # Encoder.
        self.enc = torch.nn.ModuleDict()
        width = in_channels
        for level, mult, res, tag in _levels(img_resolution, channel_mult):
            if level == 0:
                self.enc[f'{tag}_conv'] = Conv2d(in_channels=width, out_channels=model_channels * mult, kernel=3, **init)
                width = model_channels * mult
            else:
                self.enc[f'{tag}_down'] = UNetBlock(in_channels=width, out_channels=width, down=True, **block)
            for idx in range(num_blocks):
                self.enc[f'{tag}_block{idx}'] = UNetBlock(in_channels=width, out_channels=model_channels * mult,
                                                          attention=(res in attn_resolutions), **block)
                width = model_channels * mult
        skip_widths = [m.out_channels for m in self.enc.values()]

        # Decoder.
        self.dec = torch.nn.ModuleDict()
        last = len(channel_mult) - 1
        for level, mult, res, tag in reversed(_levels(img_resolution, channel_mult)):
            if level == last:
                self.dec[f'{tag}_in0'] = UNetBlock(in_channels=width, out_channels=width, attention=True, **block)
                self.dec[f'{tag}_in1'] = UNetBlock(in_channels=width, out_channels=width, **block)
            else:
                self.dec[f'{tag}_up'] = UNetBlock(in_channels=width, out_channels=width, up=True, **block)
            for idx in range(num_blocks + 1):
                self.dec[f'{tag}_block{idx}'] = UNetBlock(in_channels=width + skip_widths.pop(),
                                                          out_channels=model_channels * mult,
                                                          attention=(res in attn_resolutions), **block)
                width = model_channels * mult
        self.out_norm = GroupNorm(num_channels=width)
        self.out_conv = Conv2d(in_channels=width, out_channels=out_channels, kernel=3, **init_zero)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        # Mapping.
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(drop_labels(self, class_labels, x.shape[0]))
        emb = silu(emb)

        # Encoder, then decoder consuming the skips in reverse order.
        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for module in self.dec.values():
            if x.shape[1] != module.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = module(x, emb)
        return self.out_conv(silu(self.out_norm(x)))


_MODEL_TYPES = {'SongUNet': SongUNet, 'DhariwalUNet': DhariwalUNet, 'DNAUNet': DNAUNet}


class _Precond(torch.nn.Module):
    """Shared plumbing: D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), F run in fp16 when enabled.

    Subclasses call `_init_common` (the attributes every preconditioner stores, then the model) and implement
    `_coefficients(sigma)` -> (c_skip, c_out, c_in, c_noise) for sigma of shape [N, 1, ..., 1] (as many dims
    as x) in float32, and may override `_model_output`.
    """

    def _init_common(self, img_resolution: int, img_channels: int, label_dim: int, use_fp16: bool, model_type: str,
                     model_kwargs: dict, out_channels: int | None = None) -> None:
        """Store the common attributes and build `self.model` (out_channels default: img_channels)."""
        if model_type not in _MODEL_TYPES:
            raise ValueError(f'{type(self).__name__}: unknown model_type {model_type!r}; '
                             f'expected one of {", ".join(_MODEL_TYPES)}')
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.model = _MODEL_TYPES[model_type](img_resolution=img_resolution, in_channels=img_channels,
                                              out_channels=out_channels or img_channels, label_dim=label_dim,
                                              **model_kwargs)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                force_fp32: bool = False, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape([-1] + [1] * (x.ndim - 1))
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros([1, self.label_dim], device=x.device)
        else:
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        fp16 = self.use_fp16 and not force_fp32 and x.device.type == 'cuda'
        dtype = torch.float16 if fp16 else torch.float32

        c_skip, c_out, c_in, c_noise = self._coefficients(sigma)
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels,
                         augment_labels=augment_labels)
        return c_skip * x + c_out * self._model_output(F_x).to(torch.float32)

    def _model_output(self, F_x: torch.Tensor) -> torch.Tensor:
        return F_x

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Per-sample tensor shape: the model's `data_shape` if it has one (e.g. DNAUNet: (A, L)),
        else (img_channels, img_resolution, img_resolution)."""
        shape = getattr(self.model, 'data_shape', None) or (self.img_channels, self.img_resolution, self.img_resolution)
        return tuple(int(s) for s in shape)

    def round_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Continuous-sigma preconditioners accept every sigma as is."""
        return torch.as_tensor(sigma)


@persistence.persistent_class
class VPPrecond(_Precond):
    """Variance-preserving preconditioning (Song et al. 2021): sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1)."""

    def __init__(
        self,
        img_resolution: int,              # Image resolution.
        img_channels: int,                # Colour channels.
        label_dim: int = 0,               # Number of class labels; 0 = unconditional.
        use_fp16: bool = False,           # Run the model in float16 (CUDA only)?
        beta_d: float = 19.9,             # Extent of the noise schedule.
        beta_min: float = 0.1,            # Initial slope of the noise schedule.
        M: int = 1000,                    # Number of DDPM timesteps the noise label is scaled to.
        epsilon_t: float = 1e-5,          # Smallest training t.
        model_type: str = 'SongUNet',     # 'SongUNet' or 'DhariwalUNet'.
        **model_kwargs,                   # Further keyword arguments of the model.
    ):
        super().__init__()
        self._init_common(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs)
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        with torch.device('cpu'):  # float32 on the CPU, also under a meta-device context
            self.sigma_min = float(self.sigma(epsilon_t))
            self.sigma_max = float(self.sigma(1))

    def _coefficients(self, sigma):
        c_skip = 1
        c_out = -sigma
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        c_noise = (self.M - 1) * self.sigma_inv(sigma)
        return c_skip, c_out, c_in, c_noise

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """sigma(t) of the VP schedule."""
        return vp_sigma(torch.as_tensor(t), self.beta_d, self.beta_min)

    def sigma_inv(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """t(sigma), the inverse of `sigma`."""
        return vp_sigma_inv(sigma, self.beta_d, self.beta_min)


@persistence.persistent_class
class VEPrecond(_Precond):
    """Variance-exploding preconditioning (Song et al. 2021): D = x + sigma F(x; log(sigma/2))."""

    def __init__(
        self,
        img_resolution: int,              # Image resolution.
        img_channels: int,                # Colour channels.
        label_dim: int = 0,               # Number of class labels; 0 = unconditional.
        use_fp16: bool = False,           # Run the model in float16 (CUDA only)?
        sigma_min: float = 0.02,          # Smallest supported noise level.
        sigma_max: float = 100,           # Largest supported noise level.
        model_type: str = 'SongUNet',     # 'SongUNet' or 'DhariwalUNet'.
        **model_kwargs,                   # Further keyword arguments of the model.
    ):
        super().__init__()
        self._init_common(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def _coefficients(self, sigma):
        return 1, sigma, 1, (0.5 * sigma).log()


@persistence.persistent_class
class iDDPMPrecond(_Precond):
    """Improved-DDPM preconditioning (Nichol & Dhariwal 2021) on the discrete sigma ladder `u`.

    u_M = 0 and u_{j-1} = sqrt((u_j^2 + 1) / max(alpha_bar(j-1) / alpha_bar(j), C_1) - 1) with
    alpha_bar(j) = sin(pi/2 * j / (M (C_2 + 1)))^2. The model predicts 2*img_channels channels of which
    the first img_channels are used.
    """

    def __init__(
        self,
        img_resolution: int,              # Image resolution.
        img_channels: int,                # Colour channels.
        label_dim: int = 0,               # Number of class labels; 0 = unconditional.
        use_fp16: bool = False,           # Run the model in float16 (CUDA only)?
        C_1: float = 0.001,               # Timestep adjustment at low noise levels.
        C_2: float = 0.008,               # Timestep adjustment at high noise levels.
        M: int = 1000,                    # Number of discrete timesteps.
        model_type: str = 'DhariwalUNet',  # 'SongUNet' or 'DhariwalUNet'.
        **model_kwargs,                   # Further keyword arguments of the model.
    ):
        super().__init__()
        self._init_common(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs,
                          out_channels=img_channels * 2)
        self.C_1 = C_1
        self.C_2 = C_2
        self.M = M

        # The ladder is built in float32 on the CPU, one step at a time like the reference (also when
        # the network itself is constructed under a meta-device context).
        with torch.device('cpu'):
            u = torch.zeros(M + 1)
            for j in range(M, 0, -1):
                ratio = self.alpha_bar(j - 1) / self.alpha_bar(j)
                u[j - 1] = ((u[j] ** 2 + 1) / ratio.clip(min=C_1) - 1).sqrt()
        self.register_buffer('u', u)
        self.sigma_min = float(u[M - 1])
        self.sigma_max = float(u[0])

    def _coefficients(self, sigma):
        c_noise = self.M - 1 - self.round_sigma(sigma, return_index=True).to(torch.float32)
        return 1, -sigma, 1 / (sigma ** 2 + 1).sqrt(), c_noise

    def _model_output(self, F_x):
        return F_x[:, :self.img_channels]

    def alpha_bar(self, j: torch.Tensor | int) -> torch.Tensor:
        """alpha_bar(j) = sin(pi/2 * j / M / (C_2 + 1))^2."""
        j = torch.as_tensor(j)
        return (0.5 * math.pi * j / self.M / (self.C_2 + 1)).sin() ** 2

    def round_sigma(self, sigma: torch.Tensor | float, return_index: bool = False) -> torch.Tensor:
        """Nearest ladder value u_j to each sigma (or its index j when return_index)."""
        sigma = torch.as_tensor(sigma)
        query = sigma.to(self.u.device).to(torch.float32).reshape(1, -1, 1)
        index = torch.cdist(query, self.u.reshape(1, -1, 1)).argmin(dim=2)
        result = index if return_index else self.u[index.flatten()].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)


@persistence.persistent_class
class EDMPrecond(_Precond):
    """EDM preconditioning (Karras et al. 2022, Table 1)."""

    def __init__(
        self,
        img_resolution: int,              # Image resolution.
        img_channels: int,                # Colour channels.
        label_dim: int = 0,               # Number of class labels; 0 = unconditional.
        use_fp16: bool = False,           # Run the model in float16 (CUDA only)?
        sigma_min: float = 0,             # Smallest supported noise level.
        sigma_max: float = float('inf'),  # Largest supported noise level.
        sigma_data: float = 0.5,          # Expected standard deviation of the data.
        model_type: str = 'DhariwalUNet',  # 'SongUNet' or 'DhariwalUNet'.
        **model_kwargs,                   # Further keyword arguments of the model.
    ):
        super().__init__()
        self._init_common(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data

    def _coefficients(self, sigma):
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise


def data_shape(net: torch.nn.Module) -> tuple[int, ...]:
    """Per-sample tensor shape of the data a loaded network denoises (latents are [n, *data_shape(net)]).

    Any object with a `data_shape` attribute answers for itself (our preconditioners, DNAUNet, the
    guidance wrapper); other networks (e.g. an EDM pickle loaded through its own source) are images
    (img_channels, img_resolution, img_resolution).
    """
    shape = getattr(net, 'data_shape', None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    return (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
