"""Non-leaking data augmentation with conditioning labels (EDM's ``AugmentPipe``).

The pipe transforms a batch of images and returns, next to them, a label vector per image that
describes exactly what was done. The network is conditioned on those labels (``augment_labels``), and
sampling uses all-zero labels, so augmentations never leak into generated images.

Label layout (columns in this order, each present only when its probability multiplier is > 0):

====================  =======  ======================================================
augmentation          columns  value
====================  =======  ======================================================
xflip                 1        1 if mirrored left-right, else 0
yflip                 1        1 if mirrored top-bottom, else 0
rotate_int            2        [k ∈ {1, 2}, k ∈ {2, 3}] for a rotation by k·90°
translate_int         2        t_x / (W·translate_int_max), t_y / (H·translate_int_max)
scale                 1        w, isotropic scale 2^(w·scale_std)
rotate_frac           2        cos θ − 1, sin θ
aniso                 2        w cos r, w sin r (scale 2^(±w·aniso_std) along the axis at angle r)
translate_frac        2        w_x, w_y (shift of w·translate_frac_std·size)
brightness            1        w (offset w·brightness_std)
contrast              1        w (gain 2^(w·contrast_std))
lumaflip              1        1 if the luma axis was mirrored
hue                   2        cos θ − 1, sin θ (rotation about the luma axis)
saturation            1        w (chroma gain 2^(w·saturation_std))
====================  =======  ======================================================

EDM's recipe (``edm_augment_kwargs``) enables xflip, yflip, scale, rotate_frac, aniso, translate_frac:
9 columns. An untransformed row always gets all-zero labels.

Conventions (those of the reference): pixel coordinates are centred on the image, x to the right,
y down. The geometric part builds a per-image 3×3 matrix G⁻¹ mapping an output pixel to the input
position it samples: G⁻¹ = S(1/s) · R(θ) · [R(−r) S(1/a, a) R(r)] · T(−t). The image is reflect-padded
far enough to cover every sampled position, upsampled 2× with the symlet-6 low-pass filter, resampled
bilinearly, and filtered and decimated back with the same filter.

Random numbers are drawn from the global torch RNG in the reference's order and shapes, so a seeded
run draws the reference's transforms. Unspecified by the reference and decided here: rows whose
geometric (or colour) parameters are all zero are passed through bit-exactly instead of being
resampled (the reference's resampling is an identity only up to ~1e-7), so ``p = 0`` is an exact
identity.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from torch_utils import persistence

# Low-pass decomposition filter of the symlet-6 wavelet (12 taps, orthonormal: Σh = √2, Σh² = 1).
_SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)


def edm_augment_kwargs(p: float) -> dict:
    """Constructor kwargs of EDM's training recipe (train.py ``--augment=p``): flips, scale,
    rotation, anisotropy and fractional translation, with x-flips at probability ½ whenever p > 0."""
    return dict(p=p, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)


# ------------------------------------------------------------------------------------------------
# Batched homogeneous matrices. Entries are Python numbers or tensors of shape [N].

def _homogeneous(rows: list, batch: int, device) -> torch.Tensor:
    """Stack a nested list of scalars / [N] tensors into a [N, R, C] float32 matrix batch."""
    entries = [torch.as_tensor(v, dtype=torch.float32, device=device).expand(batch)
               for row in rows for v in row]
    return torch.stack(entries, dim=-1).reshape(batch, len(rows), len(rows[0]))


def _translate2d(tx, ty, batch: int, device) -> torch.Tensor:
    return _homogeneous([[1, 0, tx], [0, 1, ty], [0, 0, 1]], batch, device)


def _scale2d(sx, sy, batch: int, device) -> torch.Tensor:
    return _homogeneous([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], batch, device)


def _rotate2d(theta: torch.Tensor, batch: int, device) -> torch.Tensor:
    cos, sin = theta.cos(), theta.sin()
    return _homogeneous([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], batch, device)


def _rotate3d(axis: torch.Tensor, theta: torch.Tensor, batch: int, device) -> torch.Tensor:
    """Rotation by θ about the unit axis (Rodrigues: cos θ·I + (1 − cos θ)·vvᵀ + sin θ·[v]×)."""
    vx, vy, vz = axis[0], axis[1], axis[2]
    cos, sin = theta.cos(), theta.sin()
    one_minus = 1 - cos
    return _homogeneous([
        [vx * vx * one_minus + cos, vx * vy * one_minus - vz * sin, vx * vz * one_minus + vy * sin, 0],
        [vy * vx * one_minus + vz * sin, vy * vy * one_minus + cos, vy * vz * one_minus - vx * sin, 0],
        [vz * vx * one_minus - vy * sin, vz * vy * one_minus + vx * sin, vz * vz * one_minus + cos, 0],
        [0, 0, 0, 1]], batch, device)


def _gate(value: torch.Tensor, prob: float, shape: list, device) -> torch.Tensor:
    """Keep ``value`` with probability ``prob`` (one uniform draw per entry of ``shape``), else 0."""
    keep = torch.rand(shape, device=device) < prob
    return torch.where(keep, value, torch.zeros_like(value))


def _reflect_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror an integer coordinate into [0, size) without repeating the edge pixel."""
    period = 2 * size - 2
    return (size - 1) - ((size - 1) - index.remainder(period)).abs()


# ------------------------------------------------------------------------------------------------
# Resampling.

def _filter_1d(images: torch.Tensor, taps: torch.Tensor, dim: int, up: bool) -> torch.Tensor:
    """2× up- (zero insertion + filter) or down-sampling (filter + decimation) along dim 2 or 3."""
    channels = images.shape[1]
    kernel_shape = [channels, 1, 1, len(taps)] if dim == 3 else [channels, 1, len(taps), 1]
    kernel = taps.reshape([1, 1] + kernel_shape[2:]).expand(kernel_shape).contiguous()
    stride = (1, 2) if dim == 3 else (2, 1)
    if up:  # out[n] = Σ_i x[i]·h[n + 5 − 2i]: zero insertion followed by convolution with h
        padding = (0, (len(taps) - 2) // 2) if dim == 3 else ((len(taps) - 2) // 2, 0)
        return F.conv_transpose2d(images, kernel, stride=stride, padding=padding, groups=channels)
    padding = (0, (len(taps) - 1) // 2) if dim == 3 else ((len(taps) - 1) // 2, 0)
    return F.conv2d(images, kernel, stride=stride, padding=padding, groups=channels)


def _resample(images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """Warp every image by its matrix G_inv [N, 3, 3] (output centred pixel → input centred pixel)."""
    N, C, H, W = images.shape
    device = images.device
    taps = torch.tensor(_SYM6, dtype=images.dtype, device=device)
    border = len(_SYM6) // 4  # extra output pixels kept on each side until the final crop

    # Pad just enough (plus the filter's reach) to cover where the output corners sample from.
    cx, cy = (W - 1) / 2, (H - 1) / 2
    corners = torch.tensor([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], device=device)
    sampled = G_inv @ corners  # [N, 3, 4]
    xs, ys = sampled[:, 0], sampled[:, 1]
    reach = torch.stack([(-xs).amax(), (-ys).amax(), xs.amax(), ys.amax()])
    margin = reach + torch.tensor([2 * border - cx, 2 * border - cy] * 2, device=device)
    margin = margin.clamp(min=0).minimum(torch.tensor([W - 1, H - 1] * 2, dtype=margin.dtype, device=device))
    pad_left, pad_top, pad_right, pad_bottom = margin.ceil().to(torch.int64).tolist()
    images = F.pad(images, [pad_left, pad_right, pad_top, pad_bottom], mode='reflect')
    G_inv = _translate2d((pad_left - pad_right) / 2, (pad_top - pad_bottom) / 2, N, device) @ G_inv

    # 2× upsampling; express G_inv in upsampled pixels.
    images = _filter_1d(_filter_1d(images, taps, dim=3, up=True), taps, dim=2, up=True)
    G_inv = _scale2d(2, 2, N, device) @ G_inv @ _scale2d(0.5, 0.5, N, device)
    G_inv = _translate2d(-0.5, -0.5, N, device) @ G_inv @ _translate2d(0.5, 0.5, N, device)

    # Bilinear resampling onto the (bordered) 2× output grid, in affine_grid's normalised coordinates.
    out_h, out_w = 2 * (H + 2 * border), 2 * (W + 2 * border)
    G_inv = (_scale2d(2 / images.shape[3], 2 / images.shape[2], N, device) @ G_inv
             @ _scale2d(out_w / 2, out_h / 2, N, device))
    grid = F.affine_grid(G_inv[:, :2, :].to(images.dtype), [N, C, out_h, out_w], align_corners=False)
    images = F.grid_sample(images, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    # Low-pass, decimate, crop the border.
    images = _filter_1d(images, taps, dim=3, up=False)[:, :, :, border:-border]
    images = _filter_1d(images, taps, dim=2, up=False)[:, :, border:-border, :]
    return images


def _apply_color(images: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Apply per-image 4×4 affine colour matrices M [N, 4, 4] to RGB or (via the mean row) L images."""
    N, C, H, W = images.shape
    flat = images.reshape(N, C, H * W)
    M = M.to(images.dtype)
    if C == 3:
        flat = M[:, :3, :3] @ flat + M[:, :3, 3:]
    else:  # grayscale: the average of the RGB rows acting on (l, l, l)
        rows = M[:, :3, :].mean(dim=1, keepdim=True)
        flat = flat * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]
    return flat.reshape(N, C, H, W)


# ------------------------------------------------------------------------------------------------

@persistence.persistent_class
class AugmentPipe:
    """EDM's augmentation pipeline: ``images, labels = pipe(images)`` for a float batch [N, C, H, W].

    Every ``*`` multiplier below is a probability multiplier: augmentation k is applied to an image
    with probability min(1, k·p); 0 disables it (and removes its label columns).
    """

    def __init__(self,
                 p: float = 1,                     # Overall multiplier for all augmentation probabilities.
                 # Pixel blitting (exact).
                 xflip: float = 0,                 # Left-right mirroring (applied to half of the selected images).
                 yflip: float = 0,                 # Top-bottom mirroring (idem).
                 rotate_int: float = 0,            # Rotation by a uniformly drawn multiple of 90° (square images).
                 translate_int: float = 0,         # Integer translation with reflected borders.
                 translate_int_max: float = 0.125,  # Range of integer translation, relative to the image size.
                 # Geometric transformations (resampled).
                 scale: float = 0,                 # Isotropic scaling.
                 rotate_frac: float = 0,           # Arbitrary rotation.
                 aniso: float = 0,                 # Anisotropic scaling.
                 translate_frac: float = 0,        # Fractional translation.
                 scale_std: float = 0.2,           # Log2 standard deviation of isotropic scaling.
                 rotate_frac_max: float = 1,       # Range of arbitrary rotation, 1 = full circle.
                 aniso_std: float = 0.2,           # Log2 standard deviation of anisotropic scaling.
                 aniso_rotate_prob: float = 0.5,   # Probability that the anisotropy axis is randomly rotated.
                 translate_frac_std: float = 0.125,  # Standard deviation of fractional translation, relative to size.
                 # Colour transformations (RGB or L images).
                 brightness: float = 0,            # Additive brightness.
                 contrast: float = 0,              # Multiplicative contrast.
                 lumaflip: float = 0,              # Mirroring of the luma axis.
                 hue: float = 0,                   # Rotation of the hue.
                 saturation: float = 0,            # Chroma gain.
                 brightness_std: float = 0.2,      # Standard deviation of brightness.
                 contrast_std: float = 0.5,        # Log2 standard deviation of contrast.
                 hue_max: float = 1,               # Range of hue rotation, 1 = full circle.
                 saturation_std: float = 1,        # Log2 standard deviation of saturation.
                 ):
        for name, value in dict(locals()).items():   # every constructor kwarg becomes a float attribute
            if name != 'self':
                setattr(self, name, float(value))

    @property
    def label_dim(self) -> int:
        """Number of label columns this configuration produces (9 for ``edm_augment_kwargs``)."""
        widths = dict(xflip=1, yflip=1, rotate_int=2, translate_int=2, scale=1, rotate_frac=2, aniso=2,
                      translate_frac=2, brightness=1, contrast=1, lumaflip=1, hue=2, saturation=1)
        return sum(width for name, width in widths.items() if getattr(self, name) > 0)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``images`` [N, C, H, W]; returns (images, labels [N, label_dim] float32)."""
        if images.ndim != 4:
            raise ValueError(f'images must be [N, C, H, W]; got shape {tuple(images.shape)}')
        N, C, H, W = images.shape
        if self.rotate_int > 0 and H != W:
            raise ValueError(f'rotate_int needs square images; got {H}x{W}')
        if self.translate_int > 0 and min(H, W) < 2:
            raise ValueError(f'translate_int needs images of at least 2x2 pixels; got {H}x{W}')
        if max(self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation) > 0 and C not in (1, 3):
            raise ValueError(f'colour augmentation needs RGB (3) or L (1) images; got {C} channels')
        labels: list[torch.Tensor] = []
        images = self._blit(images, labels)
        images = self._geometric(images, labels)
        images = self._color(images, labels)
        if not labels:
            return images, torch.zeros([N, 0], device=images.device)
        return images, torch.cat([v.to(torch.float32).reshape(N, -1) for v in labels], dim=1)

    # -- pixel blitting -----------------------------------------------------------------------------

    def _blit(self, images: torch.Tensor, labels: list) -> torch.Tensor:
        N, C, H, W = images.shape
        device = images.device
        per_image = [N, 1, 1, 1]

        for prob, dim in ((self.xflip, 3), (self.yflip, 2)):
            if prob > 0:
                flip = _gate(torch.randint(2, per_image, device=device), prob * self.p, per_image, device)
                images = torch.where(flip == 1, images.flip(dim), images)
                labels.append(flip)

        if self.rotate_int > 0:
            k = _gate(torch.randint(4, per_image, device=device), self.rotate_int * self.p, per_image, device)
            # k quarter turns = (mirror x if k ∈ {1,2}) ∘ (mirror y if k ∈ {2,3}) ∘ (transpose if k odd).
            images = torch.where((k == 1) | (k == 2), images.flip(3), images)
            images = torch.where((k == 2) | (k == 3), images.flip(2), images)
            images = torch.where((k == 1) | (k == 3), images.transpose(2, 3), images)
            labels += [(k == 1) | (k == 2), (k == 2) | (k == 3)]

        if self.translate_int > 0:
            w = torch.rand([2] + per_image, device=device) * 2 - 1
            w = _gate(w, self.translate_int * self.p, [1] + per_image, device)
            tx = (w[0] * (W * self.translate_int_max)).round().to(torch.int64)
            ty = (w[1] * (H * self.translate_int_max)).round().to(torch.int64)
            # Output pixel (y, x) reads input (y + t_y, x − t_x), mirrored at the borders.
            src_x = _reflect_index(torch.arange(W, device=device) - tx, W).expand(N, C, H, W)
            images = images.gather(3, src_x)
            src_y = _reflect_index(torch.arange(H, device=device).reshape(H, 1) + ty, H).expand(N, C, H, W)
            images = images.gather(2, src_y)
            labels += [tx / (W * self.translate_int_max), ty / (H * self.translate_int_max)]
        return images

    # -- geometric transformations ------------------------------------------------------------------

    def _geometric(self, images: torch.Tensor, labels: list) -> torch.Tensor:
        N, C, H, W = images.shape
        device = images.device
        G_inv: Optional[torch.Tensor] = None
        active = torch.zeros([N], dtype=torch.bool, device=device)

        def compose(matrix: torch.Tensor) -> None:
            nonlocal G_inv
            G_inv = matrix if G_inv is None else G_inv @ matrix

        if self.scale > 0:
            w = _gate(torch.randn([N], device=device), self.scale * self.p, [N], device)
            s = (w * self.scale_std).exp2()
            compose(_scale2d(1 / s, 1 / s, N, device))
            labels.append(w)
            active |= w != 0

        if self.rotate_frac > 0:
            theta = (torch.rand([N], device=device) * 2 - 1) * (math.pi * self.rotate_frac_max)
            theta = _gate(theta, self.rotate_frac * self.p, [N], device)
            compose(_rotate2d(theta, N, device))
            labels += [theta.cos() - 1, theta.sin()]
            active |= theta != 0

        if self.aniso > 0:
            w = torch.randn([N], device=device)
            r = (torch.rand([N], device=device) * 2 - 1) * math.pi
            w = _gate(w, self.aniso * self.p, [N], device)
            r = _gate(r, self.aniso_rotate_prob, [N], device)
            a = (w * self.aniso_std).exp2()
            compose(_rotate2d(-r, N, device) @ _scale2d(1 / a, a, N, device) @ _rotate2d(r, N, device))
            labels += [w * r.cos(), w * r.sin()]
            active |= w != 0

        if self.translate_frac > 0:
            w = _gate(torch.randn([2, N], device=device), self.translate_frac * self.p, [1, N], device)
            tx, ty = w[0] * (W * self.translate_frac_std), w[1] * (H * self.translate_frac_std)
            compose(_translate2d(-tx, -ty, N, device))
            labels += [w[0], w[1]]
            active |= (w[0] != 0) | (w[1] != 0)

        if G_inv is None or self.p == 0:
            return images
        warped = _resample(images, G_inv)
        return torch.where(active.reshape(N, 1, 1, 1), warped, images)

    # -- colour transformations ---------------------------------------------------------------------

    def _color(self, images: torch.Tensor, labels: list) -> torch.Tensor:
        N = images.shape[0]
        device = images.device
        M: Optional[torch.Tensor] = None
        active = torch.zeros([N], dtype=torch.bool, device=device)
        eye = torch.eye(4, device=device)
        luma = torch.tensor([1, 1, 1, 0], dtype=torch.float32, device=device) / math.sqrt(3)
        luma_proj = torch.outer(luma, luma)

        def compose(matrix: torch.Tensor) -> None:
            nonlocal M
            M = matrix if M is None else matrix @ M

        if self.brightness > 0:
            w = _gate(torch.randn([N], device=device), self.brightness * self.p, [N], device)
            b = w * self.brightness_std
            compose(_homogeneous([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], N, device))
            labels.append(w)
            active |= w != 0

        if self.contrast > 0:
            w = _gate(torch.randn([N], device=device), self.contrast * self.p, [N], device)
            c = (w * self.contrast_std).exp2()
            compose(_homogeneous([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], N, device))
            labels.append(w)
            active |= w != 0

        if self.lumaflip > 0:
            w = _gate(torch.randint(2, [N, 1, 1], device=device), self.lumaflip * self.p, [N, 1, 1], device)
            compose(eye - 2 * luma_proj * w)
            labels.append(w)
            active |= w.reshape(N) != 0

        if self.hue > 0:
            theta = (torch.rand([N], device=device) * 2 - 1) * (math.pi * self.hue_max)
            theta = _gate(theta, self.hue * self.p, [N], device)
            compose(_rotate3d(luma, theta, N, device))
            labels += [theta.cos() - 1, theta.sin()]
            active |= theta != 0

        if self.saturation > 0:
            w = _gate(torch.randn([N, 1, 1], device=device), self.saturation * self.p, [N, 1, 1], device)
            compose(luma_proj + (eye - luma_proj) * (w * self.saturation_std).exp2())
            labels.append(w)
            active |= w.reshape(N) != 0

        if M is None or self.p == 0:
            return images
        return torch.where(active.reshape(N, 1, 1, 1), _apply_color(images, M), images)
