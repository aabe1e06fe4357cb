"""Opt-in fast paths (training.fast_paths) stay within their documented tolerance of the exact path.

The fixture networks are freshly initialised (near-zero branch ends), which would make every path
trivially agree; their weights are therefore randomised first so that every layer carries signal.
"""
import contextlib
import copy

import pytest
import torch
from helpers import perturb_

import training.networks as networks
from torch_utils import misc
from training import checkpoint
from training import options as O
from training.dataset import ResidentBatches, open_dataset
from training.augment import AugmentPipe, edm_augment_kwargs
from training.fast_paths import (FAST_PATH_DEFAULTS, TOLERANCES, apply_fast_paths, autocast, autocast_network,
                                 maybe_compile, nan_to_num_grads_, optimizer_kwargs_for, resolve_fast_paths,
                                 set_fused_attention, set_optimizer_impl_)
from training.loss import EDMLoss


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


def test_bf16_autocast_covers_the_network_alone(one_torch_thread):
    # The loss gets the network wrapped, so σ, augmentation and noise -- the network's input and the target --
    # stay bitwise those of the exact path; only the network's output moves, within its tolerance.
    torch.manual_seed(0)
    net = networks.EDMPrecond(img_resolution=16, img_channels=3, label_dim=0, model_type='SongUNet',
                              model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8],
                              augment_dim=9, dropout=0)
    perturb_(net, 1).train()
    inputs = []
    net.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    pipe = AugmentPipe(**edm_augment_kwargs(1.0))   # every image augmented
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    runs = []
    for wrapped in (net, autocast_network(net, 'cpu', torch.bfloat16)):
        torch.manual_seed(5)
        runs.append(EDMLoss().compute(wrapped, images, None, augment_pipe=pipe))
    (exact, bf16), (x_exact, x_bf16) = runs, inputs
    assert autocast_network(net, 'cpu', None) is net
    assert torch.equal(x_bf16, x_exact) and torch.equal(bf16.sigma, exact.sigma)
    assert bf16.loss.dtype == torch.float32
    assert 1e-6 < rel_err(bf16.loss, exact.loss) <= TOLERANCES['bf16']


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
    with autocast(torch.device('cpu'), torch.bfloat16):
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu')


def test_maybe_compile_disabled_is_identity(cases):
    net = next(iter(cases.values()))[0]
    assert maybe_compile(net, False) is net


def test_compile_wrapper_with_the_eager_backend_matches_exact(parity_records):
    # Fast counterpart of the slow test below: Dynamo captures the network's graph and the 'eager' backend runs
    # it (no inductor code generation, which alone takes minutes on 2 cores); the wrapper's numerics and
    # state_dict naming are checked, the generated kernels only by the slow test.
    rec = parity_records['ddpmpp_edm_uncond']
    net = randomised(rec)
    exact = forward(net, rec)
    torch._dynamo.reset()
    compiled = maybe_compile(net, True, backend='eager')
    assert torch.equal(forward(compiled, rec), exact)
    assert compiled.state_dict().keys() == {'_orig_mod.' + k for k in net.state_dict()}


@pytest.mark.slow
def test_compile_matches_exact(parity_records):
    """Inductor's generated kernels against the exact path. Slow (minutes of C++ compilation on 2 cores); the
    fast counterpart above checks the same wrapper with the 'eager' backend."""
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
# The optimizer and the non-finite gradient pass.

ADAM = dict(class_name='torch.optim.Adam', lr=2e-3, betas=[0.9, 0.999], eps=1e-8)
SHAPES = [(16, 8, 3, 3), (16,), (8, 16, 3, 3), (7,), (1000,), (33, 17)]


def adam_run(steps, fused=False, start=None, grad_seed=1):
    """Parameters (flattened) and optimizer after `steps` Adam steps on seeded gradients of varying scale.

    start: (parameters, optimizer state_dict, steps done) to continue from, loaded as a resume would."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
    kwargs = optimizer_kwargs_for(ADAM, fused=fused)
    opt = getattr(torch.optim, kwargs.pop('class_name').rsplit('.', 1)[1])(params, **kwargs)
    done = 0
    if start is not None:
        with torch.no_grad():
            for p, q in zip(params, start[0]):
                p.copy_(q)
        opt.load_state_dict(copy.deepcopy(start[1]))   # loading may alias the saved tensors
        set_optimizer_impl_(opt, fused=fused)
        done = start[2]
    grads = torch.Generator().manual_seed(grad_seed)
    for i in range(done + steps):
        scaled = [torch.randn(s, generator=grads) * 10.0 ** (i % 5 - 2) for s in SHAPES]
        if i < done:
            continue   # the resumed run skips the gradients of the steps already taken
        for p, grad in zip(params, scaled):
            p.grad = grad
        for group in opt.param_groups:
            group['lr'] = ADAM['lr'] * min(i / 5, 1)
        opt.step()
    return params, opt


def flat(params):
    return torch.cat([p.detach().flatten() for p in params])


def test_fused_adam_within_tolerance(one_torch_thread):
    exact_params, exact_opt = adam_run(20)
    fused_params, fused_opt = adam_run(20, fused=True)
    assert fused_opt.param_groups[0]['fused'] is True and not exact_opt.param_groups[0]['fused']
    assert rel_err(flat(fused_params), flat(exact_params)) <= TOLERANCES['fused_adam']
    moved = rel_err(flat(exact_params), flat(adam_run(0)[0]))
    assert moved > 1e-3   # the comparison is not vacuous: the parameters did move


def test_optimizer_impl_survives_a_resume(one_torch_thread):
    exact = flat(adam_run(12)[0])
    params, opt = adam_run(6)
    saved = ([p.detach().clone() for p in params], opt.state_dict(), 6)
    # Default -> default: bitwise continuation (the reference for resume tests).
    assert torch.equal(flat(adam_run(6, start=saved)[0]), exact)
    # Default -> fused: the fused flags and device-side step counts are this run's, within tolerance.
    fused_params, fused_opt = adam_run(6, fused=True, start=saved)
    assert fused_opt.param_groups[0]['fused'] is True
    assert all(s['step'].dtype == torch.float32 and float(s['step']) == 12 for s in fused_opt.state.values())
    assert rel_err(flat(fused_params), exact) <= TOLERANCES['fused_adam']
    # Fused -> default: the saved fused flag does not stick.
    params, opt = adam_run(6, fused=True)
    back_params, back_opt = adam_run(6, start=([p.detach().clone() for p in params], opt.state_dict(), 6))
    assert back_opt.param_groups[0]['fused'] is None
    assert all(s['step'].device.type == 'cpu' for s in back_opt.state.values())
    assert rel_err(flat(back_params), exact) <= TOLERANCES['fused_adam']


def test_optimizer_kwargs_for():
    assert optimizer_kwargs_for(ADAM) == ADAM and 'fused' not in ADAM
    assert optimizer_kwargs_for(ADAM, fused=True) == dict(ADAM, fused=True)
    with pytest.raises(ValueError, match='Adam'):
        optimizer_kwargs_for(dict(class_name='torch.optim.SGD', lr=0.1), fused=True)


def test_resolve_fast_paths_and_the_train_options_that_fill_them():
    assert resolve_fast_paths(None) == FAST_PATH_DEFAULTS and not any(FAST_PATH_DEFAULTS.values())
    assert resolve_fast_paths(dict(sdpa=True)) == dict(FAST_PATH_DEFAULTS, sdpa=True)
    with pytest.raises(ValueError, match='unknown fast path'):
        resolve_fast_paths(dict(fp8=True))
    # Every speed option of train.py reaches the loop's fast_paths (compile_mode is a library-only setting).
    opts = O.resolve_options(dict(bf16=True, fused_adam=True, sdpa=True), O.load_preset('digits-demo'))
    facts = dict(name='digits', resolution=8, num_channels=1, label_dim=0, has_labels=False, endpoint='continuous',
                 size=1797)
    fast = O.build_config(opts, facts)['fast_paths']
    assert set(fast) == set(FAST_PATH_DEFAULTS) - {'compile_mode'}
    assert resolve_fast_paths(fast) == dict(FAST_PATH_DEFAULTS, bf16=True, fused_adam=True, sdpa=True)


def grads_with(*specials):
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(s, generator=g) * 1e6 for s in SHAPES]
    grads[1][0] = -0.0
    for index, value in specials:
        grads[index].view(-1)[5] = value
    return grads


@pytest.mark.parametrize('specials', [(), ((0, float('nan')),), ((2, float('inf')), (4, float('-inf'))),
                                      ((5, float('nan')), (3, 3.4e38))])
def test_nan_to_num_grads_is_bitwise_the_per_tensor_pass(specials):
    grads = grads_with(*specials)
    expected = [torch.nan_to_num(g.clone(), nan=0, posinf=1e5, neginf=-1e5) for g in grads]
    nan_to_num_grads_(grads + [None], nan=0, posinf=1e5, neginf=-1e5)
    for got, want in zip(grads, expected):
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))   # bits, signed zeros included
    if specials:
        assert any(float(g.view(-1)[5]) in (0.0, 1e5, -1e5) for g in grads)


# ----------------------------------------------------------------------------------------------
# The resident data path.

def test_resident_batches_are_the_dataloader_batches():
    dataset = open_dataset('builtin:digits', use_labels=True, xflip=True)   # 3,594 items, one-hot labels
    batch = 100   # does not divide the dataset: batches straddle passes of the sampler
    torch.manual_seed(7)
    loader = iter(torch.utils.data.DataLoader(dataset, sampler=misc.InfiniteSampler(dataset, seed=3),
                                              batch_size=batch))
    after_loader = torch.rand(4)
    torch.manual_seed(7)
    resident = iter(ResidentBatches(dataset, misc.InfiniteSampler(dataset, seed=3), batch, 'cpu'))
    assert torch.equal(torch.rand(4), after_loader)   # the same draw from the global generator on starting
    for _ in range(40):
        (a, la), (b, lb) = next(loader), next(resident)
        assert a.dtype == b.dtype == torch.uint8 and la.dtype == lb.dtype == torch.float32
        assert torch.equal(a, b) and torch.equal(la, lb)
    flipped = dataset.get_details(dataset.__len__() - 1).xflip
    assert flipped   # the x-flipped half took part


def test_resident_batches_end_with_the_sampler():
    dataset = open_dataset('builtin:digits')
    batches = list(ResidentBatches(dataset, [5, 1, 4, 1, 5, 9, 2, 6, 5, 3], 4, 'cpu'))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert torch.equal(batches[2][0], torch.stack([torch.from_numpy(dataset[i][0]) for i in (5, 3)]))
    assert batches[0][1].shape == (4, 0)
    with pytest.raises(ValueError, match='positive'):
        ResidentBatches(dataset, [0], 0, 'cpu')


def train_tiny(tmp_path, name, resident, device='cpu', **fast):
    """Final (net, ema, optimizer state_dict) of 3 steps of a tiny conditional, augmented, x-flipped digits run
    (deterministic algorithms on CUDA, so that two runs can agree bitwise)."""
    given = dict(cbase=8, cres=[1], batch=16, kimg=0.048, workers=0, grid=0, plot=False, seed=1, cond=True,
                 xflip=True, augment=0.3, lr_rampup=0.0, sigma_dist='lognormal')
    opts = O.resolve_options(given, O.load_preset('digits-demo'))
    ds = open_dataset(opts['data'], use_labels=True, xflip=True, cache=True)
    config = O.build_config(opts, O.dataset_facts(ds))
    config.update(snapshot_ticks=None, state_dump_ticks=1000, fast_paths=dict(config['fast_paths'], **fast),
                  data_loader_kwargs=dict(num_workers=0, resident=resident), deterministic=device != 'cpu',
                  cudnn_benchmark=False)
    from training.training_loop import training_loop
    try:
        result = training_loop(run_dir=str(tmp_path / name), device=device, **config)
    finally:
        torch.use_deterministic_algorithms(False)   # the loop sets it process-wide
        torch.backends.cudnn.deterministic = False
    state = checkpoint.load_training_state(result['state'])
    return state['net'], state['ema'], state['optimizer']


def test_resident_data_and_fused_adam_in_the_loop(tmp_path, one_torch_thread):
    net, ema, optimizer = train_tiny(tmp_path, 'dataloader', resident=False)
    net_r, ema_r, optimizer_r = train_tiny(tmp_path, 'resident', resident=True)
    opt, opt_r = optimizer['state'], optimizer_r['state']
    for a, b in [(net, net_r), (ema, ema_r)]:
        assert all(torch.equal(a[k], b[k]) for k in a), 'the resident path must train bitwise identically'
    assert all(torch.equal(opt[i]['exp_avg'], opt_r[i]['exp_avg']) for i in opt)
    net_f, _, optimizer_f = train_tiny(tmp_path, 'fused', resident=True, fused_adam=True)
    opt_f = optimizer_f['state']
    # The saved optimizer says which kernel ran: fused only when asked for.
    assert [g['fused'] for g in optimizer_f['param_groups']] == [True]
    assert [g['fused'] for g in optimizer['param_groups']] == [None]
    flat_net = lambda sd: torch.cat([v.flatten().double() for v in sd.values()])   # noqa: E731
    assert rel_err(flat_net(net_f), flat_net(net)) <= TOLERANCES['fused_adam']
    assert all(float(s['step']) == 3 for s in opt.values()) and all(float(s['step']) == 3 for s in opt_f.values())
    assert sum(float(s['exp_avg'].abs().sum()) for s in opt.values()) > 0   # gradients reached the optimizer


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
        assert rel_err(forward(net, rec, 'cuda', autocast('cuda', torch.bfloat16)), exact) <= TOLERANCES['bf16'], name
        net.use_fp16 = True
        assert rel_err(forward(net, rec, 'cuda'), exact) <= 1e-2, name   # fp16 + SDPA + channels_last


@pytest.mark.gpu
def test_cuda_resident_data_and_fused_adam_in_the_loop(tmp_path):
    net, ema, _ = train_tiny(tmp_path, 'dataloader', resident=False, device='cuda')
    net_r, ema_r, _ = train_tiny(tmp_path, 'resident', resident=True, device='cuda')
    for a, b in [(net, net_r), (ema, ema_r)]:
        assert all(torch.equal(a[k], b[k]) for k in a), 'the resident path must train bitwise identically'
    net_f, _, optimizer_f = train_tiny(tmp_path, 'fused', resident=True, device='cuda', fused_adam=True)
    assert [g['fused'] for g in optimizer_f['param_groups']] == [True]
    flat_net = lambda sd: torch.cat([v.flatten().double() for v in sd.values()])   # noqa: E731
    assert rel_err(flat_net(net_f), flat_net(net)) <= TOLERANCES['fused_adam']
    assert all(float(s['step']) == 3 for s in optimizer_f['state'].values())


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
