"""Network primitives with EDM-compatible parameter names, shapes and initialisation.

Every module here stores exactly the attributes and tensors that the EDM reference stores, and its
`forward` reads nothing else (extra switches live at class level), so an object restored from an
official EDM pickle's `__dict__` runs unchanged. Weights are kept in float32 and cast to the
activation dtype on use, which is how the fp16 path works: the preconditioner casts the input to
float16 and every layer follows the input's dtype.
"""
from __future__ import annotations

import math

import torch
from torch.nn.functional import silu

from torch_utils import persistence

INIT_MODES = ('xavier_uniform', 'xavier_normal', 'kaiming_uniform', 'kaiming_normal')


def weight_init(shape: list[int] | tuple[int, ...], mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """Draw a tensor of `shape` from one of the four classic schemes.

    Uniform schemes draw from U(-b, b); normal schemes from N(0, s^2):
    xavier_uniform b = sqrt(6 / (fan_in + fan_out)), xavier_normal s = sqrt(2 / (fan_in + fan_out)),
    kaiming_uniform b = sqrt(3 / fan_in), kaiming_normal s = sqrt(1 / fan_in).
    """
    if mode == 'xavier_uniform':
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == 'xavier_normal':
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == 'kaiming_uniform':
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == 'kaiming_normal':
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f'unknown init_mode {mode!r}; expected one of {", ".join(INIT_MODES)}')


def drop_labels(net: torch.nn.Module, labels: torch.Tensor, batch: int) -> torch.Tensor:
    """`labels` with whole rows zeroed with probability `net.label_dropout` while `net` trains (classifier-free
    guidance training; `batch` rows are drawn); unchanged otherwise."""
    if not (net.training and net.label_dropout):
        return labels
    keep = torch.rand([batch, 1], device=labels.device) >= net.label_dropout
    return labels * keep.to(labels.dtype)


@persistence.persistent_class
class Linear(torch.nn.Module):
    """Fully connected layer y = x W^T + b with weight `[out_features, in_features]`."""

    def __init__(
        self,
        in_features: int,                 # Input width.
        out_features: int,                # Output width.
        bias: bool = True,                # Add a learned bias?
        init_mode: str = 'kaiming_normal',  # One of INIT_MODES (fan_in = in_features, fan_out = out_features).
        init_weight: float = 1,           # Multiplier applied to the drawn weight.
        init_bias: float = 0,             # Multiplier applied to the drawn bias (0 = zero bias).
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = torch.nn.Parameter(weight_init([out_features, in_features], **fans) * init_weight)
        self.bias = torch.nn.Parameter(weight_init([out_features], **fans) * init_bias) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight.to(x.dtype).t()
        if self.bias is not None:
            y = y.add_(self.bias.to(y.dtype))
        return y


@persistence.persistent_class
class Conv2d(torch.nn.Module):
    """2-D convolution ('same' padding) with optional 2x FIR up- or downsampling.

    `kernel=0` gives a pure resampling layer with no weights. Resampling uses the separable filter
    `resample_filter` applied per channel (transposed convolution with stride 2 for `up`, strided
    convolution for `down`). `fused_resample` merges padding of the 3x3 convolution and the filter
    into one pass (EDM uses it for NCSN++'s residual encoder path; its output differs slightly at
    the borders from the unfused order, so it is a distinct architecture choice, not a speed knob).
    """

    def __init__(
        self,
        in_channels: int,                 # Input channels.
        out_channels: int,                # Output channels.
        kernel: int,                      # Square kernel size; 0 = no convolution, resampling only.
        bias: bool = True,                # Add a learned bias (only when kernel > 0)?
        up: bool = False,                 # Upsample 2x before the convolution?
        down: bool = False,               # Downsample 2x (before, or after when fused)?
        resample_filter: list[float] = [1, 1],  # 1-D FIR taps of the resampling filter.
        fused_resample: bool = False,     # Fuse resampling with the convolution (see class doc).
        init_mode: str = 'kaiming_normal',  # fan_in = in*k*k, fan_out = out*k*k.
        init_weight: float = 1,           # Multiplier applied to the drawn weight.
        init_bias: float = 0,             # Multiplier applied to the drawn bias.
    ):
        if up and down:
            raise ValueError('Conv2d cannot both upsample and downsample')
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = None
        self.bias = None
        if kernel:
            self.weight = torch.nn.Parameter(weight_init([out_channels, in_channels, kernel, kernel], **fans) * init_weight)
            if bias:
                self.bias = torch.nn.Parameter(weight_init([out_channels], **fans) * init_bias)
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        kernel_2d = (torch.outer(f, f) / f.sum().square())[None, None]      # separable 2-D FIR kernel, unit sum
        self.register_buffer('resample_filter', kernel_2d if (up or down) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, convT = torch.nn.functional.conv2d, torch.nn.functional.conv_transpose2d
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        fused = self.fused_resample and w is not None
        if fused and self.up:
            up_f = (f * 4).expand(self.in_channels, 1, -1, -1)
            x = convT(x, up_f, groups=self.in_channels, stride=2, padding=w_pad + f_pad)
            x = conv(x, w)
        elif fused and self.down:
            x = conv(x, w, padding=w_pad + f_pad)
            x = conv(x, f.expand(self.out_channels, 1, -1, -1), groups=self.out_channels, stride=2)
        else:
            if self.up:
                x = convT(x, (f * 4).expand(self.in_channels, 1, -1, -1), groups=self.in_channels, stride=2, padding=f_pad)
            if self.down:
                x = conv(x, f.expand(self.in_channels, 1, -1, -1), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = conv(x, w, padding=w_pad)
        if self.bias is not None:
            x = x.add_(self.bias.to(x.dtype)[None, :, None, None])
        return x


@persistence.persistent_class
class GroupNorm(torch.nn.Module):
    """Group normalisation with min(num_groups, num_channels // min_channels_per_group) groups."""

    def __init__(
        self,
        num_channels: int,                # Channels of the input.
        num_groups: int = 32,             # Upper bound on the number of groups.
        min_channels_per_group: int = 4,  # Lower bound on channels per group.
        eps: float = 1e-5,                # Variance epsilon.
    ):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.group_norm(
            x, self.num_groups, weight=self.weight.to(x.dtype), bias=self.bias.to(x.dtype), eps=self.eps)


class _AttentionWeights(torch.autograd.Function):
    """softmax_k(q^T k / sqrt(C)) for q, k of shape [B, C, L] -> [B, L_q, L_k].

    Logits, softmax and their gradients are evaluated in (at least) float32 whatever the input dtype,
    while the saved tensors, output and gradients keep the input dtype (memory stays that of fp16).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        acc = torch.promote_types(q.dtype, torch.float32)
        with torch.autocast(device_type=q.device.type, enabled=False):
            logits = torch.bmm(q.to(acc).transpose(1, 2), (k / math.sqrt(k.shape[1])).to(acc))
            w = logits.softmax(dim=2).to(q.dtype)
        ctx.save_for_backward(q, k, w)
        return w

    @staticmethod
    def backward(ctx, grad_w: torch.Tensor):
        q, k, w = ctx.saved_tensors
        acc = torch.promote_types(q.dtype, torch.float32)
        inv_sqrt_c = 1 / math.sqrt(k.shape[1])
        with torch.autocast(device_type=q.device.type, enabled=False):
            g, p = grad_w.to(acc), w.to(acc)
            grad_logits = p * (g - (g * p).sum(dim=2, keepdim=True))       # softmax Jacobian-vector product
            grad_q = torch.bmm(k.to(acc), grad_logits.transpose(1, 2)).to(q.dtype) * inv_sqrt_c
            grad_k = torch.bmm(q.to(acc), grad_logits).to(k.dtype) * inv_sqrt_c
        return grad_q, grad_k


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """Single-head dot-product attention on channel-first tensors q, k, v: [B, C, L] -> [B, C, L].

    `fused=False` is the reference computation (float32 softmax); `fused=True` calls
    `torch.nn.functional.scaled_dot_product_attention` (same math and scale 1/sqrt(C), different
    kernels and rounding).
    """
    if fused:
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    w = _AttentionWeights.apply(q, k)
    return torch.bmm(v, w.transpose(1, 2))


@persistence.persistent_class
class UNetBlock(torch.nn.Module):
    """Residual block shared by DDPM++, NCSN++ and ADM, with optional resampling and self-attention.

    x -> GN -> SiLU -> conv0 (up/down) -> + embedding (additive, or scale/shift when adaptive_scale)
      -> GN -> SiLU -> dropout -> conv1, plus the (projected/resampled) input, times skip_scale;
    then optionally x + proj(attention(qkv(GN(x)))), times skip_scale.
    The qkv convolution emits, per head, channel triples (q, k, v) interleaved: output channel
    (h * C_head + c) * 3 + s holds component s of channel c in head h.
    """

    fused_attention = False  # class-level switch, set per instance by training.fast_paths

    def __init__(
        self,
        in_channels: int,                 # Input channels.
        out_channels: int,                # Output channels.
        emb_channels: int,                # Width of the conditioning embedding.
        up: bool = False,                 # Upsample 2x in conv0 and the skip path?
        down: bool = False,               # Downsample 2x in conv0 and the skip path?
        attention: bool = False,          # Append self-attention?
        num_heads: int | None = None,     # Attention heads; None = out_channels // channels_per_head.
        channels_per_head: int = 64,      # Used when num_heads is None.
        dropout: float = 0,               # Dropout probability before conv1.
        skip_scale: float = 1,            # Multiplier after each residual sum.
        eps: float = 1e-5,                # GroupNorm epsilon.
        resample_filter: list[float] = [1, 1],  # FIR taps for up/down.
        resample_proj: bool = False,      # Use a 1x1 conv on the skip path whenever it resamples.
        adaptive_scale: bool = True,      # Embedding as (scale, shift) rather than additive bias.
        init: dict = dict(),              # Conv2d/Linear init kwargs of ordinary layers.
        init_zero: dict = dict(init_weight=0),  # Init kwargs of the last layer of each branch.
        init_attn: dict | None = None,    # Init kwargs of the qkv conv (None = `init`).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        self.num_heads = (num_heads if num_heads is not None else out_channels // channels_per_head) if attention else 0
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale

        resample = dict(up=up, down=down, resample_filter=resample_filter)
        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=3, **resample, **init)
        affine_width = out_channels * 2 if adaptive_scale else out_channels
        self.affine = Linear(in_features=emb_channels, out_features=affine_width, **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=3, **init_zero)

        self.skip = None
        if out_channels != in_channels or up or down:
            skip_kernel = 1 if (resample_proj or out_channels != in_channels) else 0
            self.skip = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=skip_kernel, **resample, **init)

        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            qkv_init = init_attn if init_attn is not None else init
            self.qkv = Conv2d(in_channels=out_channels, out_channels=out_channels * 3, kernel=1, **qkv_init)
            self.proj = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        residual = x if self.skip is None else self.skip(x)
        h = self.conv0(silu(self.norm0(x)))

        cond = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = cond.chunk(2, dim=1)
            h = silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = silu(self.norm1(h.add_(cond)))
        h = self.conv1(torch.nn.functional.dropout(h, p=self.dropout, training=self.training))
        x = h.add_(residual) * self.skip_scale

        if self.num_heads:
            n, c = x.shape[:2]
            qkv = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, -1)
            q, k, v = qkv.unbind(2)
            a = attention(q, k, v, fused=self.fused_attention)
            x = self.proj(a.reshape(x.shape)).add_(x) * self.skip_scale
        return x


@persistence.persistent_class
class PositionalEmbedding(torch.nn.Module):
    """Sinusoidal embedding [cos(x f_i), sin(x f_i)], f_i = (1/max_positions)^(i / (C/2 - endpoint))."""

    def __init__(
        self,
        num_channels: int,                # Output width C (even).
        max_positions: int = 10000,       # Longest period of the sinusoids.
        endpoint: bool = False,           # Make the last frequency exactly 1/max_positions.
    ):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        exponents = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** exponents
        phase = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([phase.cos(), phase.sin()], dim=1)


@persistence.persistent_class
class FourierEmbedding(torch.nn.Module):
    """Random Fourier features [cos(2 pi f x), sin(2 pi f x)] with fixed f ~ N(0, scale^2) (buffer `freqs`)."""

    def __init__(
        self,
        num_channels: int,                # Output width (even).
        scale: float = 16,                # Standard deviation of the frequencies.
    ):
        super().__init__()
        self.register_buffer('freqs', torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([phase.cos(), phase.sin()], dim=1)
