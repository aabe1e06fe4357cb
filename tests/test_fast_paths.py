"""Opt-in fast paths (training.fast_paths) stay within their documented tolerance of the exact path.

The fixture networks are freshly initialised (near-zero branch ends), which would make every path
trivially agree; their weights are therefore randomised first so that every layer carries signal.
"""
import contextlib

import pytest
import torch
from helpers import perturb_

import training.networks as networks
from training.fast_paths import TOLERANCES, apply_fast_paths, autocast, maybe_compile, set_fused_attention


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def randomised(rec: dict, seed: int = 0) -> torch.nn.Module:
    net = getattr(networks, rec['precond'])(**rec['precond_kwargs'], **rec['model_kwargs'])
    net.load_state_dict(rec['state_dict'], strict=True)
    return perturb_(net, seed).eval()


def forward(net, rec, device='cpu', ctx=None):
    move = lambda t: None if t is None else t.to(device)
    with torch.no_grad(), (ctx or contextlib.nullcontext()):
        return net(move(rec['x']), move(rec['sigma']), move(rec['class_labels']),
                   augment_labels=move(rec['augment_labels'])).cpu()


@pytest.fixture(scope='module')
def cases(parity_records):
    out = {}
    for name, rec in parity_records.items():
        net = randomised(rec)
        out[name] = (net, rec, forward(net, rec))
    return out


def test_network_output_depends_on_the_unet(cases):
    # Guard against vacuous comparisons: the model part of D is a large share of the output.
    for name, (net, rec, exact) in cases.items():
        with torch.no_grad():
            for p in net.model.parameters():
                p.mul_(0.5)
        halved = forward(net, rec)
        with torch.no_grad():
            for p in net.model.parameters():
                p.mul_(2)
        assert torch.equal(forward(net, rec), exact)
        assert rel_err(halved, exact) > 1e-2, name


def test_sdpa_within_tolerance(cases):
    switched = 0
    for name, (net, rec, exact) in cases.items():
        keys = list(net.state_dict())
        params = list(net.parameters())
        switched += set_fused_attention(net, True)
        out = forward(net, rec)
        assert rel_err(out, exact) <= TOLERANCES['sdpa'], name
        assert list(net.state_dict()) == keys and all(a is b for a, b in zip(net.parameters(), params))
        apply_fast_paths(net)
        assert torch.equal(forward(net, rec), exact), name   # switching back restores the exact path
    assert switched > 0                                       # DDPM++/NCSN++ records have attention blocks


def test_channels_last_within_tolerance(cases):
    for name, (net, rec, exact) in cases.items():
        params = list(net.parameters())
        apply_fast_paths(net, channels_last=True)
        conv = [p for p in net.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
        assert all(a is b for a, b in zip(net.parameters(), params))
        assert rel_err(forward(net, rec), exact) <= TOLERANCES['channels_last'], name
        apply_fast_paths(net, sdpa=True, channels_last=True)
        assert rel_err(forward(net, rec), exact) <= TOLERANCES['sdpa'], name
        apply_fast_paths(net)
        assert all(p.is_contiguous() for p in net.parameters())
        assert list(net.state_dict()) == list(rec['state_dict'])


def test_bf16_autocast_within_tolerance(cases):
    for name, (net, rec, exact) in cases.items():
        out = forward(net, rec, ctx=autocast('cpu', torch.bfloat16))
        assert out.dtype == torch.float32
        err = rel_err(out, exact)
        assert 1e-6 < err <= TOLERANCES['bf16'], (name, err)  # bf16 really ran, and stayed close


def test_gradients_match_under_sdpa_and_channels_last(parity_records):
    rec = parity_records['ddpmpp_vp_cond_aug']
    net = randomised(rec).train()

    def grads():
        net.zero_grad()
        out = net(rec['x'], rec['sigma'], rec['class_labels'], augment_labels=rec['augment_labels'])
        out.square().mean().backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    exact = grads()
    apply_fast_paths(net, sdpa=True, channels_last=True)
    assert rel_err(grads(), exact) <= 1e-4
    apply_fast_paths(net)
    assert torch.equal(grads(), exact)


def test_autocast_context():
    assert isinstance(autocast('cpu', None), contextlib.nullcontext)
    with autocast(torch.device('cpu'), 'bf16'):
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu')
    with pytest.raises(ValueError, match='dtype'):
        autocast('cpu', 'int8')


def test_maybe_compile_disabled_is_identity(cases):
    net = next(iter(cases.values()))[0]
    assert maybe_compile(net, False) is net


@pytest.mark.slow
def test_compile_matches_exact(parity_records):
    rec = parity_records['ddpmpp_edm_uncond']
    net = randomised(rec)
    exact = forward(net, rec)
    try:
        compiled = maybe_compile(net, True)
        out = forward(compiled, rec)
    except Exception as exc:  # no C++ toolchain / backend: the feature is optional
        pytest.skip(f'torch.compile unavailable here: {type(exc).__name__}: {exc}'.splitlines()[0])
    assert rel_err(out, exact) <= 1e-5
    assert compiled.state_dict().keys() == {'_orig_mod.' + k for k in net.state_dict()}


# ----------------------------------------------------------------------------------------------
# CUDA.

@pytest.fixture
def strict_fp32_cuda():
    """Disable TF32 so that float32 CUDA results are comparable to the CPU at 1e-5."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.gpu
def test_cuda_fp16_path_and_force_fp32(parity_records, strict_fp32_cuda):
    for name, rec in parity_records.items():
        exact = forward(randomised(rec), rec)
        net = randomised(rec).cuda()
        net.use_fp16 = True
        dtypes = []
        net.model.register_forward_pre_hook(lambda m, args: dtypes.append(args[0].dtype))
        fp16 = forward(net, rec, 'cuda')
        with torch.no_grad():
            fp32 = net(rec['x'].cuda(), rec['sigma'].cuda(),
                       None if rec['class_labels'] is None else rec['class_labels'].cuda(), force_fp32=True,
                       augment_labels=None if rec['augment_labels'] is None else rec['augment_labels'].cuda()).cpu()
        assert dtypes == [torch.float16, torch.float32], name
        assert fp16.dtype == torch.float32
        assert rel_err(fp32, exact) <= 1e-5, name
        assert 0 < rel_err(fp16, exact) <= 1e-2, name


@pytest.mark.gpu
def test_cuda_fast_paths(parity_records, strict_fp32_cuda):
    for name, rec in parity_records.items():
        exact = forward(randomised(rec), rec)
        net = randomised(rec).cuda()
        assert rel_err(forward(net, rec, 'cuda'), exact) <= 1e-5, name
        apply_fast_paths(net, sdpa=True, channels_last=True)
        assert rel_err(forward(net, rec, 'cuda'), exact) <= 1e-5, name
        assert rel_err(forward(net, rec, 'cuda', autocast('cuda', 'bf16')), exact) <= TOLERANCES['bf16'], name
        net.use_fp16 = True
        assert rel_err(forward(net, rec, 'cuda'), exact) <= 1e-2, name   # fp16 + SDPA + channels_last


@pytest.mark.gpu
def test_cuda_fp16_training_step_is_finite(parity_records):
    rec = parity_records['ddpmpp_vp_cond_aug']
    net = randomised(rec).cuda().train()
    net.use_fp16 = True
    apply_fast_paths(net, sdpa=True, channels_last=True)
    out = net(rec['x'].cuda(), rec['sigma'].cuda(), rec['class_labels'].cuda(),
              augment_labels=rec['augment_labels'].cuda())
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
