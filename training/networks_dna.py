"""DNA-Diffusion's U-Net (DaSilva et al. 2024) with the EDM model interface: `DNAUNet`.

A re-implementation, written for this project, of the network of pinellolab/DNA-Diffusion
(`src/dnadiffusion/models/unet.py`, class `UNet`, and the layers it uses from `models/layers.py`;
the version that the published pretrained model uses). It takes the call of EDM's U-Nets,
`model(x, noise_labels, class_labels, augment_labels=None)`, so the preconditioners in
`training.networks` wrap it unchanged (`EDMPrecond(..., model_type='DNAUNet')`).

Layout. Data are one-hot sequences [N, A, L] (A = 4 letters A, C, G, T; L = 200 positions; ±1 in
network units). Like DNA-Diffusion, the network views a sequence as a one-channel picture
[N, 1, A, L] (rows = letters, columns = positions) and works with 2-D convolutions throughout:

    r = 7x7 conv (1 -> dim) of the input
    per level (widths dim·dim_mults): 2 residual blocks, linear attention, 4x4/2 down-conv
    middle: residual block, attention, residual block
    per level, reversed: 2 residual blocks (each fed one encoder skip), linear attention, up
    y = 1x1 conv (dim -> 1) of a residual block (2·dim -> dim) of [x, r]          [N, 1, A, L]
    output = y + CrossAttention(query = LayerNorm(y) as A tokens of L features,
                                context = embedding as 4 tokens of dim features)

With dim_mults (1, 2, 4) the picture shrinks 4x200 -> 2x100 -> 1x50. Residual blocks are
conv-GroupNorm-(scale, shift)-SiLU twice plus a 1x1 skip; the (scale, shift) comes from the embedding
(learned random Fourier features of the noise label -> Linear-GELU-Linear, width 4·dim, plus the
cell-type embedding). Attention follows the reference exactly, including its quirks: the middle
attention l2-normalises queries and keys along the position axis and scales by 10; linear attention
takes softmaxes over features (queries) and positions (keys).

Where this differs from DNA-Diffusion, and why:
- Noise input: the preconditioner's c_noise (EDM: ln(σ)/4) replaces the DDPM step index t ∈ [0, 50);
  it enters the same learned Fourier embedding.
- Class input: a class vector c [N, label_dim] (one-hot; all zeros = the null class) instead of an
  index 1..K with 0 = null. The embedding table has `num_classes` rows as in the reference (its
  configuration's default: 10), at least label_dim + 1; row 0 is the null class, rows 1..label_dim the
  classes, and the remaining rows are never used (as in the reference, where 4 cell types use 5 of 10).
  c embeds as E_0 + Σ_k c_k (E_{k+1} − E_0), which is the table lookup for one-hot and zero rows.
- Label dropout (DNA-Diffusion's p_uncond = 0.1: a label becomes the null class with that
  probability) happens inside the network during training (`label_dropout`), as in EDM's U-Nets,
  so classifier-free guidance (`training.guidance`) can use the null class at sampling time.
- The final cross-attention hard-codes 200 features in the reference, which only fits dim = 200 and
  L = 200. Here queries have L features, the context has dim features, and the LayerNorm spans A·L
  values; at dim = L = 200 this is the reference's layer, and other widths (the CPU runs) still work.
- `dropout` adds dropout between the two convolutions of each residual block; the reference has
  none (0, the default).
- The cross-attention is plain softmax attention; the reference's memory-efficient kernel
  (memory_efficient_attention_pytorch's `Attention`, one head of width 64) computes the same softmax in
  chunks (its 1e-8 in the denominator aside). Like that layer, the output projection has no bias.
- The network runs in the dtype of its weights (float32); mixed precision is bfloat16 autocast.
History: an older version of the reference's `models/unet.py` computed the cross-attention but then
added y to itself instead of the attention output, so the layer had no effect; upstream fixed this in
October 2023, and we follow the fixed `UNet`.
Parameter names follow the reference's module tree (init_conv, time_mlp, label_emb, downs, mid_block1,
mid_attn, mid_block2, ups, final_res_block, final_conv, cross_attn, norm_to_cross).
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from torch_utils import persistence
from training.layers import drop_labels

__all__ = ['DNAUNet']


@persistence.persistent_class
class DNAFourierEmbedding(torch.nn.Module):
    """Learned random Fourier features of a scalar: [u, sin(2π u w), cos(2π u w)], w ~ N(0, 1) learned."""

    def __init__(self,
        num_features: int,    # Number of sine plus cosine features (even); the output has one more (u itself).
    ) -> None:
        super().__init__()
        if num_features < 2 or num_features % 2:
            raise ValueError(f'DNAFourierEmbedding: num_features must be even and >= 2, got {num_features}')
        self.weights = torch.nn.Parameter(torch.randn(num_features // 2))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u.reshape(-1, 1)
        phase = u * self.weights.reshape(1, -1) * (2 * math.pi)
        return torch.cat([u, phase.sin(), phase.cos()], dim=1)


@persistence.persistent_class
class DNAChannelNorm(torch.nn.Module):
    """Layer norm over the channel axis of [N, C, H, W] with a learned gain g and no bias."""

    def __init__(self,
        num_channels: int,    # C.
    ) -> None:
        super().__init__()
        self.g = torch.nn.Parameter(torch.ones(1, num_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


@persistence.persistent_class
class DNABlock(torch.nn.Module):
    """3x3 conv -> GroupNorm -> optional x·(1 + scale) + shift -> SiLU."""

    def __init__(self,
        in_channels: int,     # Input width.
        out_channels: int,    # Output width.
        groups: int = 8,      # GroupNorm groups.
    ) -> None:
        super().__init__()
        self.proj = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = torch.nn.GroupNorm(groups, out_channels)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


@persistence.persistent_class
class DNAResnetBlock(torch.nn.Module):
    """Two `DNABlock`s, the first modulated by the embedding, plus a (1x1 conv) skip."""

    def __init__(self,
        in_channels: int,     # Input width.
        out_channels: int,    # Output width.
        emb_channels: int,    # Embedding width (the (scale, shift) pair is projected from it).
        groups: int = 8,      # GroupNorm groups.
        dropout: float = 0,   # Dropout between the two blocks (the reference has none).
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.mlp = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(emb_channels, out_channels * 2))
        self.block1 = DNABlock(in_channels, out_channels, groups)
        self.block2 = DNABlock(out_channels, out_channels, groups)
        self.res_conv = (torch.nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                         else torch.nn.Identity())

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mlp(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block1(x, (scale, shift))
        h = F.dropout(h, p=self.dropout, training=self.training)
        return self.block2(h) + self.res_conv(x)


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, 3·heads·d, H, W] -> q, k, v each [N, heads, d, H·W] (channel order: q | k | v, head-major)."""
    n, c, h, w = qkv.shape
    return qkv.reshape(n, 3, heads, c // (3 * heads), h * w).unbind(1)


@persistence.persistent_class
class DNALinearAttention(torch.nn.Module):
    """Linear attention: softmax of queries over features, of keys over positions; output channel-normed."""

    def __init__(self,
        channels: int,        # Input and output width.
        heads: int = 4,       # Attention heads.
        head_channels: int = 32,  # Width per head.
    ) -> None:
        super().__init__()
        self.heads = heads
        self.scale = head_channels ** -0.5
        hidden = heads * head_channels
        self.to_qkv = torch.nn.Conv2d(channels, hidden * 3, 1, bias=False)
        self.to_out = torch.nn.Sequential(torch.nn.Conv2d(hidden, channels, 1), DNAChannelNorm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        q, k, v = _split_heads(self.to_qkv(x), self.heads)
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = k @ v.transpose(-1, -2)            # [N, heads, d, e] = Σ_n k_dn v_en
        out = context.transpose(-1, -2) @ q          # [N, heads, e, n] = Σ_d context_de q_dn
        return self.to_out(out.reshape(n, -1, h, w))


@persistence.persistent_class
class DNAAttention(torch.nn.Module):
    """Softmax attention over positions with queries and keys l2-normalised along the position axis."""

    def __init__(self,
        channels: int,        # Input and output width.
        heads: int = 4,       # Attention heads.
        head_channels: int = 32,  # Width per head.
        scale: float = 10,    # Logit scale (instead of 1/sqrt(d)).
    ) -> None:
        super().__init__()
        self.heads = heads
        self.scale = scale
        hidden = heads * head_channels
        self.to_qkv = torch.nn.Conv2d(channels, hidden * 3, 1, bias=False)
        self.to_out = torch.nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        q, k, v = _split_heads(self.to_qkv(x), self.heads)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        weights = (q.transpose(-1, -2) @ k * self.scale).softmax(dim=-1)   # [N, heads, i, j]
        out = (weights @ v.transpose(-1, -2)).transpose(-1, -2)            # [N, heads, d, i]
        return self.to_out(out.reshape(n, -1, h, w))


@persistence.persistent_class
class DNAResidualAttention(torch.nn.Module):
    """x + attention(channel_norm(x)); `linear` selects linear attention (the reference's Residual(PreNorm(..)))."""

    def __init__(self,
        channels: int,        # Width.
        linear: bool = True,  # Linear attention (levels) or full attention (middle).
    ) -> None:
        super().__init__()
        attention = DNALinearAttention(channels) if linear else DNAAttention(channels)
        self.fn = torch.nn.ModuleDict(dict(fn=attention, norm=DNAChannelNorm(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn['fn'](self.fn['norm'](x)) + x


@persistence.persistent_class
class DNACrossAttention(torch.nn.Module):
    """Single-head softmax attention of query tokens [N, T, query_channels] on context tokens."""

    def __init__(self,
        query_channels: int,     # Features per query token (and of the output).
        context_channels: int,   # Features per context token.
        head_channels: int = 64,  # Width of the attention head.
    ) -> None:
        super().__init__()
        self.scale = head_channels ** -0.5
        self.to_q = torch.nn.Linear(query_channels, head_channels, bias=False)
        self.to_kv = torch.nn.Linear(context_channels, head_channels * 2, bias=False)
        self.to_out = torch.nn.Linear(head_channels, query_channels, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.to_q(x) * self.scale
        k, v = self.to_kv(context).chunk(2, dim=-1)
        return self.to_out((q @ k.transpose(-1, -2)).softmax(dim=-1) @ v)


def _check_geometry(letters: int, length: int, levels: int, widths: list[int], groups: int) -> None:
    """ValueError unless the picture [letters, length] halves cleanly `levels - 1` times and widths fit the groups."""
    factor = 2 ** (levels - 1)
    if letters % factor or length % factor:
        raise ValueError(f'DNAUNet: {levels} levels halve the {letters}x{length} picture {levels - 1} times, so '
                         f'in_channels and img_resolution must be divisible by {factor}')
    bad = [w for w in widths if w % groups]
    if bad:
        raise ValueError(f'DNAUNet: widths {bad} are not divisible by resnet_block_groups={groups}')


@persistence.persistent_class
class DNAUNet(torch.nn.Module):
    """DNA-Diffusion's U-Net over one-hot sequences [N, A, L] (see the module docstring)."""

    def __init__(self,
        img_resolution: int,              # Sequence length L (DNA-Diffusion: 200).
        in_channels: int,                 # Alphabet size A (4: A, C, G, T), the rows of the picture.
        out_channels: int,                # Must equal in_channels (the output has the input's layout).
        label_dim: int = 0,               # Number of cell types; 0 = unconditional.
        num_classes: int = 10,            # Rows of the label table (DNA-Diffusion's default 10); >= label_dim + 1.
        augment_dim: int = 0,             # Must be 0: sequences are trained without augmentation.
        dim: int = 200,                   # Base width (DNA-Diffusion: 200); the embedding is 4·dim wide.
        dim_mults: list[int] = [1, 2, 4],  # Width multiplier per level; the picture halves between levels.
        resnet_block_groups: int = 4,     # GroupNorm groups in the residual blocks (DNA-Diffusion: 4).
        learned_sinusoidal_dim: int = 18,  # Learned Fourier features of the noise label (even; DNA-Diffusion: 18).
        label_dropout: float = 0.1,       # Training probability of replacing the label by the null class (p_uncond).
        dropout: float = 0,               # Dropout inside the residual blocks (DNA-Diffusion: none).
        model_channels: int | None = None,  # Alias of dim (what train.py --cbase sets); None = use dim.
        channel_mult: list[int] | None = None,  # Alias of dim_mults (train.py --cres); None = use dim_mults.
    ) -> None:
        super().__init__()
        dim = int(model_channels) if model_channels is not None else int(dim)
        dim_mults = [int(m) for m in (channel_mult if channel_mult is not None else dim_mults)]
        if out_channels != in_channels:
            raise ValueError(f'DNAUNet: out_channels ({out_channels}) must equal in_channels ({in_channels})')
        if augment_dim:
            raise ValueError('DNAUNet takes no augmentation labels; train DNA with --augment 0')
        if label_dim and int(num_classes) < label_dim + 1:
            raise ValueError(f'DNAUNet: num_classes ({num_classes}) must be at least label_dim + 1 = {label_dim + 1} '
                             f'(row 0 is the null class)')
        if not dim_mults:
            raise ValueError('DNAUNet: dim_mults must name at least one level')
        dims = [dim] + [dim * m for m in dim_mults]
        _check_geometry(in_channels, img_resolution, len(dim_mults), dims, resnet_block_groups)
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.label_dim = label_dim
        self.label_dropout = label_dropout
        self.dim = dim
        emb_channels = dim * 4

        def resnet(cin: int, cout: int) -> DNAResnetBlock:
            return DNAResnetBlock(cin, cout, emb_channels, groups=resnet_block_groups, dropout=dropout)

        self.init_conv = torch.nn.Conv2d(1, dim, 7, padding=3)
        self.time_mlp = torch.nn.Sequential(
            DNAFourierEmbedding(learned_sinusoidal_dim),
            torch.nn.Linear(learned_sinusoidal_dim + 1, emb_channels),
            torch.nn.GELU(),
            torch.nn.Linear(emb_channels, emb_channels),
        )
        self.label_emb = torch.nn.Embedding(int(num_classes), emb_channels) if label_dim else None

        pairs = list(zip(dims[:-1], dims[1:]))
        self.downs = torch.nn.ModuleList()
        for level, (cin, cout) in enumerate(pairs):
            last = level == len(pairs) - 1
            self.downs.append(torch.nn.ModuleList([
                resnet(cin, cin),
                resnet(cin, cin),
                DNAResidualAttention(cin, linear=True),
                torch.nn.Conv2d(cin, cout, 3, padding=1) if last else torch.nn.Conv2d(cin, cout, 4, 2, 1),
            ]))
        self.mid_block1 = resnet(dims[-1], dims[-1])
        self.mid_attn = DNAResidualAttention(dims[-1], linear=False)
        self.mid_block2 = resnet(dims[-1], dims[-1])
        self.ups = torch.nn.ModuleList()
        for level, (cin, cout) in enumerate(reversed(pairs)):
            last = level == len(pairs) - 1
            up = (torch.nn.Conv2d(cout, cin, 3, padding=1) if last else
                  torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode='nearest'),
                                      torch.nn.Conv2d(cout, cin, 3, padding=1)))
            self.ups.append(torch.nn.ModuleList([
                resnet(cout + cin, cout),
                resnet(cout + cin, cout),
                DNAResidualAttention(cout, linear=True),
                up,
            ]))
        self.final_res_block = resnet(dim * 2, dim)
        self.final_conv = torch.nn.Conv2d(dim, 1, 1)
        self.cross_attn = DNACrossAttention(img_resolution, dim)
        self.norm_to_cross = torch.nn.LayerNorm(in_channels * img_resolution)

    @property
    def data_shape(self) -> tuple[int, int]:
        """Per-sample tensor shape (A, L)."""
        return (self.in_channels, self.img_resolution)

    def embed_labels(self, class_labels: torch.Tensor) -> torch.Tensor:
        """E_0 + Σ_k c_k (E_{k+1} − E_0): the table row of a one-hot c, the null row (E_0) for c = 0."""
        table = self.label_emb.weight
        null = table[:1]
        return null + class_labels.to(table.dtype) @ (table[1:self.label_dim + 1] - null)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        if augment_labels is not None:
            raise ValueError('DNAUNet takes no augmentation labels')
        batch = x.shape[0]
        dtype = self.init_conv.weight.dtype
        x = self.init_conv(x.to(dtype)[:, None])                      # [N, dim, A, L]
        r = x
        emb = self.time_mlp(noise_labels.to(dtype).reshape(-1)).expand(batch, -1)
        if self.label_emb is not None:
            labels = torch.zeros([1, self.label_dim], device=x.device) if class_labels is None else class_labels
            emb = emb + self.embed_labels(drop_labels(self, labels, labels.shape[0]))

        skips = []
        for block1, block2, attn, down in self.downs:
            x = block1(x, emb)
            skips.append(x)
            x = attn(block2(x, emb))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, emb)), emb)
        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat([x, skips.pop()], dim=1), emb)
            x = attn(block2(torch.cat([x, skips.pop()], dim=1), emb))
            x = up(x)
        y = self.final_conv(self.final_res_block(torch.cat([x, r], dim=1), emb))   # [N, 1, A, L]

        letters, length = self.data_shape
        query = self.norm_to_cross(y.reshape(batch, letters * length)).reshape(batch, letters, length)
        context = emb.reshape(batch, 4, self.dim)
        return (y + self.cross_attn(query, context)[:, None])[:, 0]
