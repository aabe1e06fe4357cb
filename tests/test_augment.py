"""Tests for training/augment.py: the labels must describe exactly the transform that was applied."""
import math

import numpy as np
import pytest
import torch

from training.augment import AugmentPipe, edm_augment_kwargs

ALL_ON = dict(xflip=1, yflip=1, rotate_int=1, translate_int=1, scale=1, rotate_frac=1, aniso=1,
              translate_frac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)


def images(n=8, c=3, h=16, w=16, seed=0):
    return torch.randn([n, c, h, w], generator=torch.Generator().manual_seed(seed))


def run(pipe, x, seed=1):
    torch.manual_seed(seed)
    return pipe(x)


def test_edm_augment_kwargs():
    assert edm_augment_kwargs(0.12) == dict(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1,
                                            translate_frac=1)


@pytest.mark.parametrize('kwargs,dim', [(edm_augment_kwargs(0), 9), (dict(p=0, **ALL_ON), 19)])
def test_p0_is_exact_identity_with_zero_labels(kwargs, dim):
    x = images()
    out, labels = run(AugmentPipe(**kwargs), x)
    assert torch.equal(out, x)
    assert labels.shape == (8, dim) and labels.dtype == torch.float32
    assert not labels.any()


def test_no_augmentation_gives_empty_labels():
    x = images()
    out, labels = run(AugmentPipe(), x)
    assert torch.equal(out, x) and labels.shape == (8, 0)


def test_label_layout_edm_recipe():
    pipe = AugmentPipe(**edm_augment_kwargs(1))
    assert pipe.label_dim == 9
    assert AugmentPipe(**ALL_ON).label_dim == 19
    x = images(n=64, h=8, w=8)
    _, labels = run(pipe, x)
    assert labels.shape == (64, 9)
    xflip, yflip, scale, rot_c, rot_s, an_c, an_s, tx, ty = labels.T
    assert set(xflip.tolist()) == {0.0, 1.0} and set(yflip.tolist()) <= {0.0, 1.0}
    assert torch.allclose((rot_c + 1) ** 2 + rot_s ** 2, torch.ones(64), atol=1e-6)  # cos θ − 1, sin θ
    for col in (scale, an_c, an_s, tx, ty):  # continuous Gaussian parameters, nonzero at p = 1
        assert (col != 0).float().mean() > 0.2


def test_xflip_labels_follow_the_global_rng_stream():
    """Row k is flipped iff randint(2)[k] == 1 and rand()[k] < xflip·p, drawn in that order."""
    x = images(n=32, h=4, w=4)
    pipe = AugmentPipe(p=0.5, xflip=1)
    _, labels = run(pipe, x, seed=7)
    torch.manual_seed(7)
    coin = torch.randint(2, [32, 1, 1, 1])
    keep = torch.rand([32, 1, 1, 1]) < 0.5
    assert torch.equal(labels[:, 0], (coin * keep).flatten().float())


@pytest.mark.parametrize('name,dim', [('xflip', 3), ('yflip', 2)])
def test_flip_is_exact_where_labelled(name, dim):
    x = images(n=32)
    out, labels = run(AugmentPipe(**{name: 1}), x)
    flipped = labels[:, 0] == 1
    assert 0 < flipped.sum() < 32
    assert torch.equal(out[flipped], x[flipped].flip(dim))
    assert torch.equal(out[~flipped], x[~flipped])


def test_rotate_int_is_exact_quarter_turns():
    x = images(n=32)
    out, labels = run(AugmentPipe(rotate_int=1), x)
    a, b = labels[:, 0].long(), labels[:, 1].long()
    k = {(0, 0): 0, (1, 0): 1, (1, 1): 2, (0, 1): 3}
    seen = set()
    for i in range(32):
        turns = k[(a[i].item(), b[i].item())]
        seen.add(turns)
        assert torch.equal(out[i], torch.rot90(x[i], turns, dims=(1, 2))), i
    assert seen == {0, 1, 2, 3}


def test_translate_int_is_exact_reflected_shift():
    n, h, w, t_max = 32, 12, 16, 0.25
    x = images(n=n, h=h, w=w)
    out, labels = run(AugmentPipe(translate_int=1, translate_int_max=t_max), x)
    tx = np.rint(labels[:, 0].numpy() * w * t_max).astype(int)
    ty = np.rint(labels[:, 1].numpy() * h * t_max).astype(int)
    assert np.abs(tx).max() > 0 and np.abs(ty).max() > 0
    xn = x.numpy()
    for i in range(n):
        pad_y, pad_x = abs(ty[i]), abs(tx[i])
        padded = np.pad(xn[i], [(0, 0), (pad_y, pad_y), (pad_x, pad_x)], mode='reflect')
        # Content moves right by t_x and up by t_y: out[y, x] = in[y + t_y, x − t_x].
        want = padded[:, pad_y + ty[i]: pad_y + ty[i] + h, pad_x - tx[i]: pad_x - tx[i] + w]
        np.testing.assert_array_equal(out[i].numpy(), want)


def smooth_field(x, y):
    """A band-limited test image in centred pixel coordinates (periods ≥ 8 px)."""
    return (torch.cos(2 * math.pi * (0.7 * x + 0.4 * y) / 16 + 0.3)
            + 0.5 * torch.sin(2 * math.pi * (-0.3 * x + 0.8 * y) / 20))


def test_fractional_transform_matches_labels_on_smooth_image():
    n, size = 16, 32
    c = (size - 1) / 2
    coords = torch.arange(size, dtype=torch.float64) - c
    yy, xx = torch.meshgrid(coords, coords, indexing='ij')
    x = smooth_field(xx, yy).float().expand(n, 3, size, size).contiguous()
    pipe = AugmentPipe(scale=1, rotate_frac=1, aniso=1, aniso_rotate_prob=0, translate_frac=1)
    out, labels = run(pipe, x, seed=3)
    w_scale, rot_c, rot_s, w_aniso, aniso_sin, w_tx, w_ty = labels.double().T
    assert not aniso_sin.any()  # axis not rotated, so the label is (w, 0)

    # The symlet-6 filter is not symmetric: its centroid sits δ = 0.049 px off the pixel centre in both
    # the 2x upsampling (input frame) and the decimation (output frame). The two cancel for
    # translations and scalings about the centre but not under rotation (≈0.1 px at 180°), so the
    # model of the warp is: output pixel q samples the input at G⁻¹(q + δ) − δ.
    from training.augment import _SYM6
    taps = np.asarray(_SYM6)
    delta = ((np.arange(12) * taps).sum() / taps.sum() - 5) / 2
    assert 0.04 < delta < 0.06

    checked = 0
    for i in range(n):
        # Inverse map from the labels: output pixel q samples the input at G⁻¹ q.
        s = 2 ** (0.2 * w_scale[i])
        a = 2 ** (0.2 * w_aniso[i])
        theta = math.atan2(rot_s[i], rot_c[i] + 1)
        qx, qy = xx + delta, yy + delta
        qx, qy = qx - w_tx[i] * size * 0.125, qy - w_ty[i] * size * 0.125   # T⁻¹
        qx, qy = qx / a, qy * a                                             # aniso⁻¹
        qx, qy = (math.cos(theta) * qx - math.sin(theta) * qy,
                  math.sin(theta) * qx + math.cos(theta) * qy)              # rotation⁻¹
        qx, qy = qx / s - delta, qy / s - delta                             # scale⁻¹
        inside = (qx.abs() < c - 4) & (qy.abs() < c - 4) & (xx.abs() < c - 2) & (yy.abs() < c - 2)
        if inside.sum() < 20:
            continue
        want = smooth_field(qx, qy)[inside]
        got = out[i, 1].double()[inside]
        assert (got - want).abs().max() < 0.01, i
        checked += 1
    assert checked >= n // 2
    # The same image without its transform would not match: the labels carry the information.
    assert (out[:, 1].double() - x[:, 1].double()).abs().max() > 0.5


def test_color_transforms_match_labels():
    x = images(n=16)
    out, labels = run(AugmentPipe(brightness=1, contrast=1), x)
    b = labels[:, 0] * 0.2
    c = 2 ** (labels[:, 1] * 0.5)
    assert torch.allclose(out, (x + b[:, None, None, None]) * c[:, None, None, None], atol=1e-5)

    out, labels = run(AugmentPipe(lumaflip=1), x)
    flip = labels[:, 0] == 1
    luma = x.mean(dim=1, keepdim=True)
    assert torch.allclose(out[flip], (x - 2 * luma)[flip], atol=1e-5)
    assert torch.equal(out[~flip], x[~flip])

    out, labels = run(AugmentPipe(hue=1, saturation=1), x)
    theta = torch.atan2(labels[:, 1], labels[:, 0] + 1)
    assert (theta.abs() > 0.1).any()
    gain = 2 ** labels[:, 2]
    # Hue rotates and saturation scales the chroma about the grey axis; luma is unchanged.
    assert torch.allclose(out.mean(dim=1), x.mean(dim=1), atol=1e-5)
    chroma_in = (x - x.mean(dim=1, keepdim=True)).norm(dim=1)
    chroma_out = (out - out.mean(dim=1, keepdim=True)).norm(dim=1)
    assert torch.allclose(chroma_out, chroma_in * gain[:, None, None], rtol=1e-4, atol=1e-5)


def test_grayscale_color_uses_mean_row():
    x = images(n=8, c=1)
    out, labels = run(AugmentPipe(brightness=1, contrast=1, hue=1), x)
    b, c = labels[:, 0] * 0.2, 2 ** (labels[:, 1] * 0.5)
    assert torch.allclose(out, (x + b[:, None, None, None]) * c[:, None, None, None], atol=1e-5)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match='square'):
        AugmentPipe(rotate_int=1)(images(h=8, w=12))
    with pytest.raises(ValueError, match='channels'):
        AugmentPipe(hue=1)(images(c=2))
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        AugmentPipe(xflip=1)(torch.zeros(3, 8, 8))


def test_persistent_constructor_record():
    pipe = AugmentPipe(**edm_augment_kwargs(0.12))
    assert pipe._init_kwargs == edm_augment_kwargs(0.12)


@pytest.mark.gpu
def test_pipe_runs_on_cuda_and_resampling_matches_cpu():
    from training.augment import _resample
    x = images(n=8)
    out, labels = AugmentPipe(**edm_augment_kwargs(1), brightness=1, hue=1)(x.cuda())
    assert out.device.type == 'cuda' and labels.shape == (8, 12) and torch.isfinite(out).all()
    torch.manual_seed(0)
    theta = torch.rand(8) * 2 * math.pi
    G_inv = torch.zeros(8, 3, 3)
    G_inv[:, 0, 0], G_inv[:, 0, 1], G_inv[:, 1, 0], G_inv[:, 1, 1] = theta.cos(), -theta.sin(), theta.sin(), theta.cos()
    G_inv[:, :2, 2] = torch.randn(8, 2)
    G_inv[:, 2, 2] = 1
    allow_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        warped = _resample(x.cuda(), G_inv.cuda()).cpu()
    finally:
        torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.testing.assert_close(warped, _resample(x, G_inv), rtol=1e-4, atol=1e-4)
