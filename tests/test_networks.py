"""training.networks / training.layers against the EDM reference and against closed forms.

Note on the golden fixture: its networks are freshly initialised, so the last layer of every residual
branch is (near) zero -- exactly zero for ADM. The fixture therefore pins names, shapes, the
preconditioning and (through the EDM record at sigma = 80, where c_out F dominates the output) the
DDPM++ skip path, but not block internals. The second fixture (edm_parity_perturbed.pt: the reference run
with every parameter overwritten by `helpers.perturb_`, see tests/data/README.md) pins the block internals
against the reference too; they are also checked below against independent constructions (naive attention,
scipy FIR resampling, float64 gradcheck, sampling distributions).
"""
import os
import copy
import math

import numpy as np
import pytest
import scipy.signal
import scipy.stats
import torch
from helpers import perturb_

import training.networks as networks
from torch_utils import persistence
from training.layers import Conv2d, GroupNorm, Linear, PositionalEmbedding, UNetBlock, attention, weight_init

SMALL = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.0)
PRECONDS = ['VPPrecond', 'VEPrecond', 'iDDPMPrecond', 'EDMPrecond']


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def build(rec: dict) -> torch.nn.Module:
    net = getattr(networks, rec['precond'])(**rec['precond_kwargs'], **rec['model_kwargs'])
    net.load_state_dict(rec['state_dict'], strict=True)
    return net.eval()


def run(net, rec, **kw):
    with torch.no_grad():
        return net(rec['x'], rec['sigma'], rec['class_labels'], augment_labels=rec['augment_labels'], **kw)


# ----------------------------------------------------------------------------------------------
# Golden fixture.

def test_fixture_parity(parity_records):
    assert len(parity_records) >= 5
    for name, rec in parity_records.items():
        net = build(rec)
        assert list(net.state_dict().keys()) == list(rec['state_dict'].keys()), name
        for key, value in net.state_dict().items():
            assert value.shape == rec['state_dict'][key].shape, (name, key)
        out = run(net, rec)
        assert out.dtype == torch.float32
        assert rel_err(out, rec['output']) <= 1e-5, name
        assert sum(p.numel() for p in net.parameters()) == rec['num_params'], name


def test_fixture_parity_with_perturbed_weights(parity_records):
    # The reference networks with O(1) random weights in every branch (zero-initialised layers included).
    from training.sampler import edm_sampler
    golden = torch.load(os.path.join(os.path.dirname(__file__), 'data', 'edm_parity_perturbed.pt'), weights_only=True)
    assert set(golden) == set(parity_records)
    for name, rec in parity_records.items():
        ref = golden[name]
        net = build(rec)
        assert [n for n, _ in net.named_parameters()] == ref['param_names'], name   # the perturbation's order
        perturb_(net, ref['seed']).eval()
        out = run(net, rec)
        assert rel_err(out, ref['output']) <= 1e-5, name
        assert rel_err(ref['output'], rec['output']) > 0.3, name   # the branches now carry signal
        if 'sampler_output' in ref:
            s = rec['sampler']
            with torch.no_grad():
                x = edm_sampler(net, s['latents'], s['class_labels'], num_steps=s['num_steps'],
                                sigma_min=s['sigma_min'], sigma_max=s['sigma_max'], rho=s['rho'])
            assert torch.isfinite(ref['sampler_output']).all() and rel_err(x, ref['sampler_output']) <= 1e-5, name


@pytest.mark.parametrize('name, tol', [('ddpmpp_edm_uncond', 1e-3), ('ncsnpp_ve_uncond', 7e-3),
                                       ('ddpmpp_vp_cond_aug', 7e-3)])
def test_fixture_unet_output_at_high_sigma(parity_records, name, tol):
    # At the largest sigma, c_out F(c_in x; c_noise) is a resolvable part of the reference output, so the
    # reference UNet's own output can be read back (to ~2e-5 for EDM, ~4e-3 for VE/VP where c_skip = 1;
    # dropping NCSN++'s 1/sqrt(2) on the residual encoder path gives 1.4e-2).
    # This pins the skip path of the network (everything except the near-zero-initialised branch ends).
    rec = parity_records[name]
    net = build(rec)
    i = int(rec['sigma'].argmax())
    x, sigma = rec['x'][i:i + 1], rec['sigma'][i:i + 1]
    labels = None if rec['class_labels'] is None else rec['class_labels'][i:i + 1]
    aug = None if rec['augment_labels'] is None else rec['augment_labels'][i:i + 1]
    s = sigma.reshape(-1, 1, 1, 1)
    if rec['precond'] == 'EDMPrecond':
        sd = net.sigma_data
        c_skip, c_out = sd ** 2 / (s ** 2 + sd ** 2), s * sd / (s ** 2 + sd ** 2).sqrt()
        c_in, c_noise = 1 / (sd ** 2 + s ** 2).sqrt(), sigma.log() / 4
    elif rec['precond'] == 'VEPrecond':
        c_skip, c_out, c_in, c_noise = 1, s, 1, (sigma / 2).log()
    else:
        c_skip, c_out, c_in, c_noise = 1, -s, 1 / (s ** 2 + 1).sqrt(), (net.M - 1) * net.sigma_inv(sigma)
    F_ref = (rec['output'][i:i + 1] - c_skip * x) / c_out
    with torch.no_grad():
        F_x = net.model(c_in * x, c_noise, labels, augment_labels=aug)
    assert rel_err(F_x, F_ref) <= tol


def test_iddpm_ladder_matches_reference(parity_records):
    rec = parity_records['adm_iddpm_uncond']
    net = networks.iDDPMPrecond(**rec['precond_kwargs'], **rec['model_kwargs'])  # built, not loaded
    assert torch.allclose(net.u, rec['state_dict']['u'], rtol=1e-6, atol=0)  # bitwise on torch 2.13 CPU
    assert net.sigma_min == float(net.u[net.M - 1]) and net.sigma_max == float(net.u[0])
    assert net.u[-1] == 0 and bool((net.u[:-1] > net.u[1:]).all())
    # round_sigma snaps onto the ladder and the index is consistent.
    s = torch.tensor([0.01, 0.5, 3.0, 70.0])
    idx = net.round_sigma(s, return_index=True)
    assert torch.equal(net.round_sigma(s), net.u[idx])
    brute = (s[:, None] - net.u[None, :]).abs().argmin(dim=1)
    assert torch.equal(idx, brute)


# ----------------------------------------------------------------------------------------------
# Full-size parameter counts (reference facts), on the meta device.

DDPMPP = dict(model_type='SongUNet', embedding_type='positional', encoder_type='standard', decoder_type='standard',
              channel_mult_noise=1, resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2])
NCSNPP = dict(DDPMPP, embedding_type='fourier', encoder_type='residual', channel_mult_noise=2,
              resample_filter=[1, 3, 3, 1])
ADM = dict(model_type='DhariwalUNet', model_channels=192, channel_mult=[1, 2, 3, 4])


@pytest.mark.parametrize('kwargs, expected', [
    (dict(img_resolution=32, img_channels=3, augment_dim=9, **DDPMPP), 55_733_891),
    (dict(img_resolution=32, img_channels=3, label_dim=10, augment_dim=9, **DDPMPP), 55_735_299),
    (dict(img_resolution=32, img_channels=3, augment_dim=9, **NCSNPP), 56_397_827),
    (dict(img_resolution=64, img_channels=3, augment_dim=9, dropout=0.05, **dict(DDPMPP, channel_mult=[1, 2, 2, 2])),
     61_805_571),
    (dict(img_resolution=64, img_channels=3, label_dim=1000, **ADM), 295_899_267),
    (dict(img_resolution=32, img_channels=1, augment_dim=9, **dict(DDPMPP, channel_mult=[1, 1, 1])), 15_429_889),
])
def test_full_size_parameter_counts(kwargs, expected):
    with torch.device('meta'):
        net = networks.EDMPrecond(**kwargs)
    assert sum(p.numel() for p in net.parameters()) == expected


# ----------------------------------------------------------------------------------------------
# Invalid configurations.

@pytest.mark.parametrize('cls, kwargs, match', [
    ('EDMPrecond', dict(model_type='UNet3000'), 'model_type'),
    ('VPPrecond', dict(model_type='songunet'), 'model_type'),
    ('EDMPrecond', dict(model_type='SongUNet', embedding_type='sinusoidal'), 'embedding_type'),
    ('EDMPrecond', dict(model_type='SongUNet', encoder_type='dense'), 'encoder_type'),
    ('EDMPrecond', dict(model_type='SongUNet', decoder_type='residual'), 'decoder_type'),
    ('EDMPrecond', dict(model_type='SongUNet', attn_resolutions=[4]), 'attn_resolutions'),
    ('EDMPrecond', dict(model_type='DhariwalUNet', attn_resolutions=[32]), 'attn_resolutions'),
    ('EDMPrecond', dict(model_type='SongUNet', img_resolution=24), 'power of two'),
    ('iDDPMPrecond', dict(img_resolution=12), 'power of two'),
    ('EDMPrecond', dict(model_type='SongUNet', img_resolution=2, channel_mult=[1, 2, 2], attn_resolutions=[]),
     'too small'),
    ('VEPrecond', dict(channel_mult=[]), 'channel_mult'),
])
def test_invalid_configurations_raise(cls, kwargs, match):
    args = dict(img_resolution=16, img_channels=3, **SMALL)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        getattr(networks, cls)(**args)


def test_attention_only_at_requested_resolutions():
    net = networks.SongUNet(img_resolution=16, in_channels=3, out_channels=3, **dict(SMALL, attn_resolutions=[16]))
    with_attn = {name for name, m in net.named_modules() if isinstance(m, UNetBlock) and m.num_heads}
    # The bottleneck's first block always attends (as in the reference).
    assert with_attn == {'enc.16x16_block0', 'dec.16x16_block1', 'dec.8x8_in0'}


# ----------------------------------------------------------------------------------------------
# Forward semantics.

def small_net(precond='EDMPrecond', model_type='SongUNet', label_dim=0, **kw):
    torch.manual_seed(0)
    return getattr(networks, precond)(img_resolution=16, img_channels=3, label_dim=label_dim,
                                      model_type=model_type, **dict(SMALL, **kw))


@pytest.mark.parametrize('model_type', ['SongUNet', 'DhariwalUNet'])
def test_label_dropout_in_training_mode(model_type):
    torch.manual_seed(1)
    x, sigma = torch.randn(16, 3, 16, 16), torch.full([16], 1.5)
    labels = torch.eye(10)[torch.arange(16) % 10]
    zeros = torch.zeros_like(labels)

    net = perturb_(small_net(model_type=model_type, label_dim=10))

    def outputs(label_dropout, train):
        net.model.label_dropout = label_dropout
        net.train(train)
        torch.manual_seed(2)
        with torch.no_grad():
            return net(x, sigma, labels), net(x, sigma, zeros)

    with_labels, without = outputs(0.0, False)
    assert rel_err(with_labels, without) > 1e-3                 # labels matter at all
    assert torch.equal(outputs(1.0, False)[0], with_labels)     # eval mode: no dropout
    assert torch.equal(outputs(0.0, True)[0], with_labels)      # p = 0: no dropout
    assert torch.allclose(outputs(1.0, True)[0], without, rtol=0, atol=1e-6)  # p = 1: all dropped
    mixed = outputs(0.5, True)[0]
    kept = [torch.allclose(mixed[i], with_labels[i], atol=1e-6) for i in range(16)]
    dropped = [torch.allclose(mixed[i], without[i], atol=1e-6) for i in range(16)]
    assert all(k != d for k, d in zip(kept, dropped))          # each row: either kept or dropped
    assert 0 < sum(dropped) < 16


def test_missing_class_labels_mean_zero_labels():
    net = perturb_(small_net(model_type='DhariwalUNet', label_dim=10)).eval()
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        assert torch.equal(net(x, sigma), net(x, sigma, torch.zeros(2, 10)))


@pytest.mark.parametrize('model_type', ['SongUNet', 'DhariwalUNet'])
def test_augment_labels_enter_the_embedding(model_type):
    net = perturb_(small_net(model_type=model_type, augment_dim=9)).eval()
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0])
    aug = torch.randn(2, 9)
    with torch.no_grad():
        plain = net(x, sigma)
        assert torch.equal(net(x, sigma, augment_labels=torch.zeros(2, 9)), plain)
        assert rel_err(net(x, sigma, augment_labels=aug), plain) > 1e-3


@pytest.mark.parametrize('precond', PRECONDS)
def test_force_fp32_and_use_fp16_on_cpu_stay_float32(precond):
    # fp16 is only ever used on CUDA; on the CPU use_fp16 and force_fp32 change nothing.
    model_type = 'DhariwalUNet' if precond == 'iDDPMPrecond' else 'SongUNet'
    a = perturb_(small_net(precond, model_type, use_fp16=False)).eval()
    b = perturb_(small_net(precond, model_type, use_fp16=True)).eval()
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        ref = a(x, sigma)
        assert torch.equal(b(x, sigma), ref)
        assert torch.equal(b(x, sigma, force_fp32=True), ref)


def test_preconditioning_closed_forms():
    # ADM with out_conv weight 0 and bias b gives F = b exactly, so D = c_skip x + c_out b.
    x = torch.randn(3, 3, 16, 16)
    sigma = torch.tensor([0.01, 1.0, 50.0])
    s = sigma.reshape(-1, 1, 1, 1)
    b = torch.tensor([0.3, -0.2, 0.7])
    for precond in PRECONDS:
        net = small_net(precond, 'DhariwalUNet').eval()
        with torch.no_grad():
            net.model.out_conv.bias[:3].copy_(b)
            out = net(x, sigma)
        F = b.reshape(1, 3, 1, 1)
        if precond == 'EDMPrecond':
            expected = 0.25 / (s ** 2 + 0.25) * x + s * 0.5 / (s ** 2 + 0.25).sqrt() * F
        elif precond == 'VEPrecond':
            expected = x + s * F
        else:
            expected = x - s * F
        assert rel_err(out, expected) < 1e-6, precond


def capture_model_inputs(net, *args, **kwargs):
    seen = {}

    def grab(module, args_, kwargs_):
        seen['x'], seen['noise'] = args_[0].clone(), args_[1].clone()
        seen.update(kwargs_)

    handle = net.model.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        net(*args, **kwargs)
    handle.remove()
    return seen


@pytest.mark.parametrize('precond', PRECONDS)
def test_model_inputs_follow_table1(precond):
    # EDM paper, Table 1: the network sees c_in(sigma) x and c_noise(sigma).
    net = small_net(precond, 'DhariwalUNet', label_dim=10).eval()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    sigma = torch.tensor([0.01, 1.0, 50.0], dtype=torch.float64)
    labels = torch.eye(10)[:3].double()
    seen = capture_model_inputs(net, x, sigma, labels, augment_labels=torch.ones(3, 9))
    s = sigma.reshape(-1, 1, 1, 1)
    if precond == 'EDMPrecond':
        c_in, c_noise = 1 / (s ** 2 + 0.25).sqrt(), sigma.log() / 4
    elif precond == 'VEPrecond':
        c_in, c_noise = torch.ones_like(s), (sigma / 2).log()
    elif precond == 'VPPrecond':
        t = ((0.1 ** 2 + 2 * 19.9 * (1 + sigma ** 2).log()).sqrt() - 0.1) / 19.9
        c_in, c_noise = 1 / (s ** 2 + 1).sqrt(), 999 * t
    else:
        j = (sigma[:, None] - net.u.double()[None, :]).abs().argmin(dim=1)
        c_in, c_noise = 1 / (s ** 2 + 1).sqrt(), (999 - j).double()
    assert seen['x'].dtype == torch.float32 and seen['noise'].dtype == torch.float32
    assert torch.allclose(seen['x'].double(), c_in * x, rtol=1e-6, atol=1e-6)
    assert torch.allclose(seen['noise'].double(), c_noise, rtol=2e-4, atol=1e-5)  # float32 log1p loss at small sigma
    assert torch.equal(seen['class_labels'], labels.float())
    assert torch.equal(seen['augment_labels'], torch.ones(3, 9))


@pytest.mark.parametrize('model_type', ['SongUNet', 'DhariwalUNet'])
def test_mapping_network_formula(model_type):
    model = perturb_(small_net(model_type=model_type, label_dim=10, augment_dim=9)).model.eval()
    noise = torch.tensor([-1.3, 0.2, 2.0])
    labels = torch.eye(10)[[1, 5, 7]]
    aug = torch.randn(3, 9)
    seen = {}

    def grab(module, args):
        seen['emb'] = args[0].clone()

    handle = model.enc['8x8_block0'].affine.register_forward_pre_hook(grab)
    with torch.no_grad():
        model(torch.randn(3, 3, 16, 16), noise, labels, augment_labels=aug)
    handle.remove()

    def lin(layer, v):
        return v @ layer.weight.T + (0 if layer.bias is None else layer.bias)

    silu = torch.nn.functional.silu
    half = 8
    with torch.no_grad():
        if model_type == 'SongUNet':   # DDPM++: [sin, cos], endpoint frequencies, labels scaled by sqrt(label_dim)
            phase = noise[:, None] * (1 / 10000) ** (torch.arange(half) / (half - 1))
            e = torch.cat([phase.sin(), phase.cos()], dim=1) + lin(model.map_label, labels * math.sqrt(10))
            e = e + lin(model.map_augment, aug)
            expected = silu(lin(model.map_layer1, silu(lin(model.map_layer0, e))))
        else:                          # ADM: [cos, sin]; labels added after map_layer1, before the SiLU
            phase = noise[:, None] * (1 / 10000) ** (torch.arange(half) / half)
            e = torch.cat([phase.cos(), phase.sin()], dim=1) + lin(model.map_augment, aug)
            expected = silu(lin(model.map_layer1, silu(lin(model.map_layer0, e))) + lin(model.map_label, labels))
    assert torch.allclose(seen['emb'], expected, rtol=1e-5, atol=1e-6)


def test_vp_schedule_helpers():
    net = small_net('VPPrecond')
    t = np.linspace(1e-3, 1, 50)
    sigma = np.sqrt(np.exp(0.5 * 19.9 * t ** 2 + 0.1 * t) - 1)
    assert np.allclose(net.sigma(torch.tensor(t)).numpy(), sigma, rtol=1e-12)
    assert np.allclose(net.sigma_inv(torch.tensor(sigma)).numpy(), t, rtol=1e-10)
    assert net.sigma_max == pytest.approx(math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1), rel=1e-6)
    assert net.sigma_min == pytest.approx(0.001, rel=0.03)  # float32 rounding of exp(1e-6) - 1, as the reference


def test_precond_attributes_and_persistence():
    for precond in PRECONDS:
        net = small_net(precond, 'DhariwalUNet', label_dim=10, use_fp16=True)
        assert (net.img_resolution, net.img_channels, net.label_dim, net.use_fp16) == (16, 3, 10, True)
        assert 0 <= net.sigma_min < net.sigma_max
        assert torch.is_tensor(net.round_sigma(0.5))
        assert persistence.is_persistent(net) and persistence.is_persistent(net.model)
        assert net._init_kwargs['label_dim'] == 10 and net._init_kwargs['model_channels'] == 16
    assert small_net('EDMPrecond').sigma_data == 0.5
    clone = copy.deepcopy(small_net())
    assert list(clone.state_dict()) == list(small_net().state_dict())


@pytest.mark.parametrize('encoder_type, decoder_type', [('skip', 'skip'), ('residual', 'skip'), ('skip', 'standard')])
def test_song_unet_skip_variants_run(encoder_type, decoder_type):
    net = small_net(model_type='SongUNet', encoder_type=encoder_type, decoder_type=decoder_type,
                    resample_filter=[1, 3, 3, 1]).eval()
    names = set(net.model.enc) | set(net.model.dec)
    if encoder_type == 'skip':
        assert {'8x8_aux_down', '8x8_aux_skip'} <= names
    if decoder_type == 'skip':
        assert {'16x16_aux_up', '8x8_aux_norm', '8x8_aux_conv', '16x16_aux_conv'} <= names
        assert net.model.dec['16x16_aux_up'].weight is None     # pure resampling, no parameters
    with torch.no_grad():
        out = perturb_(net)(torch.randn(2, 3, 16, 16), torch.tensor([0.3, 3.0]))
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


@pytest.mark.parametrize('precond, model_type', [('EDMPrecond', 'SongUNet'), ('iDDPMPrecond', 'DhariwalUNet'),
                                                 ('VEPrecond', 'SongUNet')])
def test_backward_reaches_every_parameter(precond, model_type):
    extra = dict(embedding_type='fourier') if model_type == 'SongUNet' else {}
    net = perturb_(small_net(precond, model_type, label_dim=10, augment_dim=9, **extra))
    net.train()
    x = torch.randn(4, 3, 16, 16)
    loss = net(x, torch.tensor([0.1, 0.5, 2.0, 20.0]), torch.eye(10)[:4], augment_labels=torch.randn(4, 9))
    loss.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_unet_gradcheck_float64():
    # The custom attention backward, resampling and skip plumbing agree with finite differences.
    torch.manual_seed(3)
    model = networks.SongUNet(img_resolution=8, in_channels=1, out_channels=1, model_channels=8, channel_mult=[1, 1],
                              num_blocks=1, attn_resolutions=[4], dropout=0).double()
    perturb_(model)
    model.double().eval()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    noise = torch.tensor([0.3], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: model(x, noise, None), (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Layers against independent constructions.

def naive_residual_part(block: UNetBlock, x: torch.Tensor, emb: torch.Tensor, resample) -> torch.Tensor:
    """Residual half of a UNetBlock written out from its formula (float64, dropout off)."""
    F = torch.nn.functional

    def gn(norm, t):
        return F.group_norm(t, norm.num_groups, norm.weight, norm.bias, norm.eps)

    h = F.silu(gn(block.norm0, x))
    h = F.conv2d(resample(h), block.conv0.weight, block.conv0.bias, padding=1)
    cond = (emb @ block.affine.weight.T + block.affine.bias)[:, :, None, None]
    if block.adaptive_scale:
        scale, shift = cond[:, :block.out_channels], cond[:, block.out_channels:]
        h = F.silu(gn(block.norm1, h) * (1 + scale) + shift)
    else:
        h = F.silu(gn(block.norm1, h + cond))
    h = F.conv2d(h, block.conv1.weight, block.conv1.bias, padding=1)
    skip = resample(x)
    if block.skip is not None and block.skip.weight is not None:
        skip = F.conv2d(skip, block.skip.weight, block.skip.bias)
    return (h + skip) * block.skip_scale


@pytest.mark.parametrize('kwargs, resample', [
    (dict(in_channels=8, out_channels=8, adaptive_scale=True, down=True),                      # ADM down block
     lambda t: torch.nn.functional.avg_pool2d(t, 2)),
    (dict(in_channels=8, out_channels=12, adaptive_scale=False, up=True, resample_proj=True),  # DDPM++ up block
     lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode='nearest')),
    (dict(in_channels=12, out_channels=8, adaptive_scale=False, skip_scale=math.sqrt(0.5)),    # width change
     lambda t: t),
])
def test_unet_block_residual_formula(kwargs, resample):
    torch.manual_seed(11)
    block = perturb_(UNetBlock(emb_channels=6, **kwargs)).double()
    x = torch.randn(2, kwargs['in_channels'], 8, 8, dtype=torch.float64)
    emb = torch.randn(2, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(block(x, emb), naive_residual_part(block, x, emb, resample), rtol=1e-10, atol=1e-12)


def naive_attention_block(block: UNetBlock, x: torch.Tensor) -> torch.Tensor:
    """Attention part of a UNetBlock from its documented channel layout, head by head, in float64."""
    n, c, h, w = x.shape
    heads = block.num_heads
    ch = c // heads
    y = torch.nn.functional.group_norm(x, block.norm2.num_groups, block.norm2.weight.double(),
                                       block.norm2.bias.double(), block.norm2.eps)
    qkv = torch.nn.functional.conv2d(y, block.qkv.weight.double(), block.qkv.bias.double()).reshape(n, 3 * c, h * w)
    out = torch.zeros(n, c, h * w, dtype=torch.float64)
    for head in range(heads):
        channels = [(head * ch + i) * 3 for i in range(ch)]
        q = qkv[:, [i + 0 for i in channels]]
        k = qkv[:, [i + 1 for i in channels]]
        v = qkv[:, [i + 2 for i in channels]]
        for b in range(n):
            logits = q[b].T @ k[b] / math.sqrt(ch)                      # [L_q, L_k]
            weights = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            weights = weights / weights.sum(dim=1, keepdim=True)
            out[b, head * ch:(head + 1) * ch] = v[b] @ weights.T
    proj = torch.nn.functional.conv2d(out.reshape(n, c, h, w), block.proj.weight.double(), block.proj.bias.double())
    return (proj + x) * block.skip_scale


@pytest.mark.parametrize('num_heads', [1, 2])
def test_attention_channel_layout(num_heads):
    torch.manual_seed(4)
    block = UNetBlock(8, 8, emb_channels=4, attention=True, num_heads=num_heads, skip_scale=0.7, eps=1e-6).double()
    perturb_(block)
    block.double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    emb = torch.randn(2, 4, dtype=torch.float64)
    # Run the residual part through the block itself, then compare the attention part to the naive one.
    captured = {}

    def grab_input(module, inputs, output):
        captured['x'] = inputs[0].clone()          # returns None: the output is left alone

    handle = block.norm2.register_forward_hook(grab_input)
    with torch.no_grad():
        out = block(x, emb)
    handle.remove()
    expected = naive_attention_block(block, captured['x'])
    assert torch.allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_attention_op_gradcheck_and_fp32_accumulation():
    torch.manual_seed(5)
    q, k, v = (torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v), (q, k, v))
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                           v.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(attention(q, k, v), ref, rtol=1e-12, atol=1e-12)
    # bfloat16 inputs: output keeps the dtype, softmax is accurate to the bf16 rounding of the result.
    qb, kb, vb = (t.detach().to(torch.bfloat16) for t in (q, k, v))
    out = attention(qb, kb, vb)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, attention(qb.double(), kb.double(), vb.double())) < 2e-2


def fir_down_truth(x: np.ndarray, taps: list[float]) -> np.ndarray:
    f = np.outer(taps, taps) / np.sum(taps) ** 2
    pad = (len(taps) - 1) // 2
    xp = np.pad(x, pad)
    return scipy.signal.correlate2d(xp, f, mode='valid')[::2, ::2]


def fir_up_truth(x: np.ndarray, taps: list[float]) -> np.ndarray:
    f = np.outer(taps, taps) / np.sum(taps) ** 2 * 4
    pad = (len(taps) - 1) // 2
    z = np.zeros((2 * x.shape[0] - 1, 2 * x.shape[1] - 1))
    z[::2, ::2] = x
    full = scipy.signal.convolve2d(z, f, mode='full')
    return full[pad:full.shape[0] - pad, pad:full.shape[1] - pad]


@pytest.mark.parametrize('taps', [[1, 1], [1, 3, 3, 1]])
def test_resampling_matches_fir_truth(taps):
    torch.manual_seed(6)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    down = Conv2d(2, 2, kernel=0, down=True, resample_filter=taps)
    up = Conv2d(2, 2, kernel=0, up=True, resample_filter=taps)
    with torch.no_grad():
        d, u = down(x), up(x)
    assert d.shape == (1, 2, 4, 4) and u.shape == (1, 2, 16, 16)
    for c in range(2):
        assert np.allclose(d[0, c].numpy(), fir_down_truth(x[0, c].numpy(), taps), atol=1e-12)
        assert np.allclose(u[0, c].numpy(), fir_up_truth(x[0, c].numpy(), taps), atol=1e-12)
    if taps == [1, 1]:  # box filter: average pooling and nearest-neighbour upsampling
        assert torch.allclose(d, torch.nn.functional.avg_pool2d(x, 2))
        assert torch.allclose(u, torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest'))


def test_fused_resampling_is_conv_then_filter():
    torch.manual_seed(7)
    taps = [1, 3, 3, 1]
    conv = Conv2d(2, 3, kernel=3, down=True, resample_filter=taps, fused_resample=True).double()
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = conv(x)
        h = torch.nn.functional.conv2d(x, conv.weight, padding=2).numpy()  # 3x3 conv, padded for the filter
    f = np.outer(taps, taps) / 64
    for c in range(3):
        expected = scipy.signal.correlate2d(h[0, c], f, mode='valid')[::2, ::2] + conv.bias[c].item()
        assert np.allclose(y[0, c].numpy(), expected, atol=1e-12)


def test_positional_embedding_closed_form():
    x = torch.tensor([0.0, 0.7, -3.0])
    for endpoint in (False, True):
        emb = PositionalEmbedding(num_channels=8, max_positions=100, endpoint=endpoint)(x)
        freqs = (1 / 100) ** (np.arange(4) / (4 - endpoint))
        phase = np.outer(x.numpy(), freqs)
        assert np.allclose(emb.numpy(), np.concatenate([np.cos(phase), np.sin(phase)], axis=1), atol=1e-6)


def test_group_norm_group_count():
    assert GroupNorm(256).num_groups == 32
    assert GroupNorm(64).num_groups == 16       # at least 4 channels per group
    assert GroupNorm(12).num_groups == 3


# ----------------------------------------------------------------------------------------------
# Initialisation distributions.

@pytest.mark.parametrize('mode, dist', [
    ('xavier_uniform', lambda fi, fo: scipy.stats.uniform(-math.sqrt(6 / (fi + fo)), 2 * math.sqrt(6 / (fi + fo)))),
    ('xavier_normal', lambda fi, fo: scipy.stats.norm(0, math.sqrt(2 / (fi + fo)))),
    ('kaiming_uniform', lambda fi, fo: scipy.stats.uniform(-math.sqrt(3 / fi), 2 * math.sqrt(3 / fi))),
    ('kaiming_normal', lambda fi, fo: scipy.stats.norm(0, math.sqrt(1 / fi))),
])
def test_weight_init_distributions(mode, dist):
    torch.manual_seed(8)
    sample = weight_init([100, 200], mode=mode, fan_in=300, fan_out=50).flatten().numpy()
    assert scipy.stats.kstest(sample, dist(300, 50).cdf).pvalue > 1e-3
    with pytest.raises(ValueError, match='init_mode'):
        weight_init([2], mode='orthogonal', fan_in=1, fan_out=1)


def test_layer_fans_and_multipliers():
    torch.manual_seed(9)
    conv = Conv2d(20, 30, kernel=3, init_mode='kaiming_uniform', init_weight=0.5, init_bias=2)
    bound = math.sqrt(3 / (20 * 9))
    assert conv.weight.abs().max() <= 0.5 * bound and conv.weight.abs().max() > 0.45 * bound
    assert conv.bias.abs().max() <= 2 * bound and conv.bias.abs().max() > bound
    lin = Linear(40, 60, init_mode='xavier_uniform')
    bound = math.sqrt(6 / 100)
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.95 * bound
    assert torch.equal(lin.bias, torch.zeros(60))


def test_network_init_schemes():
    torch.manual_seed(10)
    song = networks.SongUNet(img_resolution=16, in_channels=3, out_channels=3, label_dim=10, **SMALL)
    blk = song.enc['8x8_block0']                                   # 16 -> 32 channels, with attention
    xavier = lambda fi, fo: math.sqrt(6 / (fi + fo))
    assert blk.conv0.weight.abs().max() <= xavier(16 * 9, 32 * 9)
    assert blk.conv1.weight.abs().max() <= 1e-5 * xavier(32 * 9, 32 * 9)
    assert blk.conv1.weight.abs().max() > 0.5e-5 * xavier(32 * 9, 32 * 9)
    assert blk.qkv.weight.abs().max() <= math.sqrt(0.2) * xavier(32, 96)
    assert blk.qkv.weight.abs().max() > 0.9 * math.sqrt(0.2) * xavier(32, 96)
    assert all(torch.equal(p, torch.zeros_like(p)) for n, p in song.named_parameters()
               if n.endswith('bias') and 'norm' not in n)
    assert blk.skip.weight.shape == (32, 16, 1, 1)                # resample_proj / width change: 1x1
    fourier = networks.SongUNet(img_resolution=16, in_channels=3, out_channels=3, embedding_type='fourier',
                                channel_mult_noise=32, **SMALL)
    assert 14 < float(fourier.map_noise.freqs.std()) < 18       # N(0, 16^2), 256 draws

    adm = networks.DhariwalUNet(img_resolution=16, in_channels=3, out_channels=3, label_dim=1000, augment_dim=9,
                                **SMALL)
    blk = adm.enc['8x8_block0']
    for layer, fan_in in ((blk.conv0, 16 * 9), (blk.affine, 64)):
        assert layer.weight.abs().max() <= 1 / math.sqrt(fan_in) and layer.bias.abs().max() <= 1 / math.sqrt(fan_in)
        assert layer.weight.abs().max() > 0.9 / math.sqrt(fan_in)
    for layer in (blk.conv1, adm.out_conv, adm.map_augment):
        assert not layer.weight.any() and (layer.bias is None or not layer.bias.any())
    assert 0.95 < float(adm.map_label.weight.detach().std()) < 1.05       # kaiming_normal * sqrt(label_dim) = N(0, 1)
    assert adm.enc['16x16_block0'].skip is None and not adm.enc['8x8_block0'].num_heads  # 32 ch < 64 per head
