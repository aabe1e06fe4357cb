"""training.networks_dna.DNAUNet behind EDM preconditioning, classifier-free guidance, snapshots."""
import io
import math

import pytest
import torch
from helpers import perturb_

from torch_utils import persistence
from training import network_io
from training.guidance import GuidedDenoiser, check_guidance
from training.loss import EDMLoss
from training.networks import EDMPrecond, VPPrecond, data_shape
from training.networks_dna import DNAUNet

pytestmark = pytest.mark.usefixtures('one_torch_thread')

L = 32   # sequence length of the tiny test nets (divisible by 4 for the default three levels)


def tiny_precond(label_dim=2, seed=0, length=L, **kwargs):
    torch.manual_seed(seed)
    kwargs = dict(dict(model_channels=8, label_dropout=0.1), **kwargs)
    return EDMPrecond(img_resolution=length, img_channels=4, label_dim=label_dim, model_type='DNAUNet', **kwargs)


def one_hot_batch(n, length=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(4, [n, length], generator=g)
    return torch.nn.functional.one_hot(idx, 4).permute(0, 2, 1).float() * 2 - 1


def test_shapes_data_shape_and_reference_module_names():
    net = tiny_precond().eval()
    x = one_hot_batch(3)
    out = net(x, torch.tensor([0.1, 1.0, 10.0]), torch.eye(2)[[0, 1, 0]])
    assert out.shape == (3, 4, L) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert net(x, 0.5).shape == (3, 4, L)                                   # scalar σ, no labels
    assert net.data_shape == (4, L) and data_shape(net) == (4, L) and data_shape(net.model) == (4, L)
    image_net = VPPrecond(img_resolution=8, img_channels=3, model_channels=8, channel_mult=[1], num_blocks=1,
                          attn_resolutions=[])
    assert data_shape(image_net) == (3, 8, 8)
    keys = set(net.model.state_dict())
    for name in ('init_conv.weight', 'time_mlp.0.weights', 'time_mlp.3.weight', 'label_emb.weight',
                 'downs.0.0.mlp.1.weight', 'downs.0.0.block1.proj.weight', 'downs.0.0.block1.norm.weight',
                 'downs.0.2.fn.fn.to_qkv.weight', 'downs.0.2.fn.fn.to_out.1.g', 'downs.0.2.fn.norm.g',
                 'downs.0.3.weight', 'mid_attn.fn.fn.to_out.weight', 'ups.0.0.res_conv.weight', 'ups.0.3.1.weight',
                 'final_res_block.res_conv.weight', 'final_conv.weight', 'cross_attn.to_q.weight',
                 'cross_attn.to_kv.weight', 'cross_attn.to_out.weight', 'norm_to_cross.weight'):
        assert name in keys, name
    # The picture [4, L] halves twice: 4 x L -> 2 x L/2 -> 1 x L/4 (DNA-Diffusion's 4x200 -> 2x100 -> 1x50).
    assert net.model.downs[0][3].stride == (2, 2) and net.model.downs[2][3].stride == (1, 1)
    assert net.model.label_emb.weight.shape == (10, 32)      # num_classes rows (null = row 0), width 4*dim
    assert 'cross_attn.to_out.bias' not in keys


# DNA-Diffusion's UNet, written out module by module from the reference's definitions (models/layers.py and
# models/unet.py), independently of training/networks_dna.py. Each helper is one reference module.
def _conv2d(cin, cout, k, bias=True):            # nn.Conv2d(cin, cout, k)
    return cin * cout * k * k + (cout if bias else 0)


def _linear(cin, cout, bias=True):                # nn.Linear(cin, cout)
    return cin * cout + (cout if bias else 0)


def _ref_block(cin, cout):                        # Block: Conv2d(3x3) + GroupNorm(groups, cout) (weight and bias)
    return _conv2d(cin, cout, 3) + 2 * cout


def _ref_resnet_block(cin, cout, time_dim):       # ResnetBlock: SiLU + Linear(time_dim, 2 cout); 2 Blocks; 1x1 res_conv
    return (_linear(time_dim, 2 * cout) + _ref_block(cin, cout) + _ref_block(cout, cout)
            + (_conv2d(cin, cout, 1) if cin != cout else 0))


def _ref_layer_norm(c):                           # LayerNorm of layers.py: a gain g of shape (1, c, 1, 1), no bias
    return c


def _ref_linear_attention(c, heads=4, dim_head=32):   # to_qkv 1x1 no bias; to_out = Conv2d 1x1 + LayerNorm
    hidden = heads * dim_head
    return _conv2d(c, 3 * hidden, 1, bias=False) + _conv2d(hidden, c, 1) + _ref_layer_norm(c)


def _ref_attention(c, heads=4, dim_head=32):          # to_qkv 1x1 no bias; to_out = Conv2d 1x1
    hidden = heads * dim_head
    return _conv2d(c, 3 * hidden, 1, bias=False) + _conv2d(hidden, c, 1)


def _ref_residual_prenorm(c, fn_params):          # Residual(PreNorm(c, fn)): PreNorm adds one LayerNorm gain
    return _ref_layer_norm(c) + fn_params


def _ref_efficient_attention(query_dim, context_dim, dim_head=64, heads=1):
    # memory_efficient_attention_pytorch.Attention: to_q, to_kv, to_out, all nn.Linear(..., bias=False)
    inner = dim_head * heads
    return (_linear(query_dim, inner, bias=False) + _linear(context_dim, 2 * inner, bias=False)
            + _linear(inner, query_dim, bias=False))


def reference_parameter_count(dim=200, dim_mults=(1, 2, 4), num_classes=10, learned_sinusoidal_dim=18,
                              length=200, letters=4):
    """Parameters of DNA-Diffusion's UNet(dim) at its configuration's defaults (num_classes 10, groups 4)."""
    time_dim = 4 * dim
    dims = [dim] + [dim * m for m in dim_mults]
    in_out = list(zip(dims[:-1], dims[1:]))
    total = _conv2d(1, dim, 7)                                                       # init_conv
    total += (learned_sinusoidal_dim // 2                                            # LearnedSinusoidalPosEmb
              + _linear(learned_sinusoidal_dim + 1, time_dim) + _linear(time_dim, time_dim))   # time_mlp
    total += num_classes * time_dim                                                  # label_emb
    for i, (cin, cout) in enumerate(in_out):                                         # downs
        last = i == len(in_out) - 1
        total += 2 * _ref_resnet_block(cin, cin, time_dim)
        total += _ref_residual_prenorm(cin, _ref_linear_attention(cin))
        total += _conv2d(cin, cout, 3) if last else _conv2d(cin, cout, 4)            # Downsample or 3x3 conv
    mid = dims[-1]
    total += 2 * _ref_resnet_block(mid, mid, time_dim) + _ref_residual_prenorm(mid, _ref_attention(mid))
    for cin, cout in reversed(in_out):                                               # ups
        total += 2 * _ref_resnet_block(cout + cin, cout, time_dim)
        total += _ref_residual_prenorm(cout, _ref_linear_attention(cout))
        total += _conv2d(cout, cin, 3)                                               # Upsample's conv or 3x3 conv
    total += _ref_resnet_block(2 * dim, dim, time_dim) + _conv2d(dim, 1, 1)          # final_res_block, final_conv
    total += _ref_efficient_attention(length, dim)                                   # cross_attn
    total += 2 * letters * length                                                    # norm_to_cross: nn.LayerNorm
    return total


def test_full_width_parameter_count():
    assert reference_parameter_count() == 94_566_810          # DNA-Diffusion's UNet(dim=200), counted by hand
    with torch.device('meta'):
        net = DNAUNet(img_resolution=200, in_channels=4, out_channels=4, label_dim=4)
    assert sum(p.numel() for p in net.parameters()) == 94_566_810
    assert net.cross_attn.to_q.weight.shape == (64, 200) and net.norm_to_cross.weight.shape == (800,)
    assert net.cross_attn.to_out.bias is None and net.label_emb.weight.shape == (10, 800)
    small = tiny_precond(label_dim=3).model
    assert sum(p.numel() for p in small.parameters()) == reference_parameter_count(dim=8, length=L)
    wide = tiny_precond(label_dim=3, num_classes=12).model
    assert sum(p.numel() for p in wide.parameters()) == reference_parameter_count(dim=8, length=L, num_classes=12)


def test_geometry_and_option_errors():
    for kwargs in (dict(img_resolution=30), dict(channel_mult=[1, 2, 4, 8]), dict(out_channels=8),
                   dict(augment_dim=9), dict(model_channels=6), dict(learned_sinusoidal_dim=7),
                   dict(label_dim=4, num_classes=4)):
        args = dict(dict(img_resolution=L, in_channels=4, out_channels=4, model_channels=8), **kwargs)
        with pytest.raises(ValueError):
            DNAUNet(**args)


def test_class_embedding_is_the_table_lookup_with_a_null_row():
    model = tiny_precond(label_dim=3).model
    table = model.label_emb.weight
    assert torch.equal(model.embed_labels(torch.zeros(1, 3)), table[:1])
    for k in range(3):
        assert torch.allclose(model.embed_labels(torch.eye(3)[k:k + 1]), table[k + 1:k + 2], atol=1e-6)


def test_conditioning_changes_the_output_and_zero_labels_are_the_null_class():
    net = perturb_(tiny_precond(label_dim=2), seed=1).eval()
    x, sigma = one_hot_batch(2), torch.tensor([0.7, 0.7])
    a = net(x, sigma, torch.eye(2)[[0, 0]])
    b = net(x, sigma, torch.eye(2)[[1, 1]])
    null = net(x, sigma, torch.zeros(2, 2))
    assert (a - b).abs().max() > 1e-2 and (a - null).abs().max() > 1e-2
    assert torch.equal(net(x, sigma, None), null)            # no labels = the null class


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate():
    net = perturb_(tiny_precond(label_dim=2, label_dropout=0.5), seed=2)
    n = 200
    x = one_hot_batch(1).expand(n, -1, -1)
    sigma = torch.full([n], 0.5)
    labels = torch.eye(2)[[1] * n]
    net.eval()
    cond, null = net(x[:1], sigma[:1], labels[:1]), net(x[:1], sigma[:1], torch.zeros(1, 2))
    net.train()
    torch.manual_seed(0)
    out = net(x, sigma, labels)
    is_null = (out - null).flatten(1).abs().max(dim=1).values < 1e-5
    is_cond = (out - cond).flatten(1).abs().max(dim=1).values < 1e-5
    assert (is_null ^ is_cond).all()                                     # every sample is one or the other
    assert abs(is_null.float().mean().item() - 0.5) < 0.15               # binomial(200, 0.5): sd 0.035
    net.eval()
    assert torch.allclose(net(x[:4], sigma[:4], labels[:4]), cond.expand(4, -1, -1), atol=1e-5)   # off in eval


def test_edm_preconditioning_closed_form_and_small_sigma_limit():
    net = perturb_(tiny_precond(label_dim=2), seed=3).eval()
    x = one_hot_batch(3)
    labels = torch.eye(2)[[0, 1, 1]]
    sigma = torch.tensor([0.02, 0.5, 20.0])
    s, sd = sigma[:, None, None], net.sigma_data
    F = net.model(x / (s ** 2 + sd ** 2).sqrt(), sigma.log() / 4, labels)
    want = sd ** 2 / (s ** 2 + sd ** 2) * x + s * sd / (s ** 2 + sd ** 2).sqrt() * F
    assert torch.allclose(net(x, sigma, labels), want, atol=1e-5)
    # c_skip -> 1 and c_out -> 0 as σ -> 0: the denoiser returns its input.
    near = net(x, torch.full([3], 1e-5), labels)
    assert (near - x).abs().max() < 1e-3


def test_determinism_given_a_seed():
    a, b = tiny_precond(seed=7), tiny_precond(seed=7)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    other = tiny_precond(seed=8).state_dict().values()
    assert any(not torch.equal(va, vb) for va, vb in zip(a.state_dict().values(), other))
    x, labels = one_hot_batch(4), torch.eye(2)[[0, 1, 0, 1]]
    losses = []
    for net in (a, b):
        torch.manual_seed(11)
        terms = EDMLoss(weighting='unit').compute(net.train(), x, labels)
        assert terms.loss.shape == x.shape and terms.sigma.shape == terms.error.shape == (4,)
        loss = terms.loss.mean()
        loss.backward()
        losses.append((loss.item(), net.model.init_conv.weight.grad.clone()))
    assert losses[0][0] == losses[1][0] and torch.equal(losses[0][1], losses[1][1])


def test_snapshot_round_trip_through_the_safe_loader():
    net = perturb_(tiny_precond(label_dim=2), seed=4).eval()
    snap = dict(ema=net, loss_fn=EDMLoss(weighting='unit'), augment_pipe=None,
                dataset_kwargs=dict(class_name='training.dataset_discrete.DNADataset', path='x.tsv',
                                    cell_types=['HepG2_A', 'K562_B']))
    buf = io.BytesIO()
    persistence.dump_network_pickle(snap, buf)
    buf.seek(0)
    loaded = persistence.load_network_pickle(buf, class_map=network_io.class_map())   # what load_network uses
    ema = loaded['ema']
    assert type(ema) is EDMPrecond and type(ema.model) is DNAUNet and not ema.training
    assert loaded['dataset_kwargs']['cell_types'] == ['HepG2_A', 'K562_B']
    state, again = net.state_dict(), ema.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    x, sigma, labels = one_hot_batch(2), torch.tensor([0.3, 3.0]), torch.eye(2)
    assert torch.equal(net(x, sigma, labels), ema(x, sigma, labels))
    assert network_io.class_map()['DNAUNet'] is DNAUNet


def test_guidance_combines_conditional_and_unconditional_denoisers():
    net = perturb_(tiny_precond(label_dim=2), seed=5).eval()
    x, sigma, labels = one_hot_batch(3), torch.tensor(0.8), torch.eye(2)[[1, 0, 1]]
    cond, uncond = net(x, sigma, labels), net(x, sigma, torch.zeros(3, 2))
    for w in (0.0, 1.0, 2.5):
        guided = GuidedDenoiser(net, w)
        assert torch.allclose(guided(x, sigma, labels), uncond + w * (cond - uncond), atol=1e-5)
    guided = GuidedDenoiser(net, 2.0)
    per_sample = guided(x, torch.tensor([0.8, 0.8, 0.8]), labels)        # σ per sample also works
    assert torch.allclose(per_sample, 2 * cond - uncond, atol=1e-5)
    assert guided.data_shape == (4, L) and guided.label_dim == 2 and guided.sigma_min == net.sigma_min
    assert math.isinf(guided.sigma_max)


def test_guidance_errors():
    check_guidance(tiny_precond(label_dim=0), 1.0)                       # W = 1 is always fine
    with pytest.raises(ValueError, match='unconditional'):
        check_guidance(tiny_precond(label_dim=0), 2.0)
    with pytest.raises(ValueError, match='label dropout'):
        check_guidance(tiny_precond(label_dim=2, label_dropout=0), 2.0)
    with pytest.raises(ValueError, match='>= 0'):
        check_guidance(tiny_precond(label_dim=2), -1.0)
