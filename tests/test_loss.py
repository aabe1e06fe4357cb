"""Tests for training/loss.py: bitwise agreement with the reference formulas, pluggable σ and weight."""
import math
import os

import pytest
import torch

from infonoise.samplers import LogNormalSampler, LogUniformSampler
from torch_utils import persistence
from training.augment import AugmentPipe, edm_augment_kwargs
from training.loss import EDMLoss, LossTerms, VELoss, VPLoss, VPTimeSampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TinyDenoiser(torch.nn.Module):
    """A small differentiable denoiser that uses every input the losses pass."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.7))
        self.calls = []

    def forward(self, x, sigma, class_labels=None, augment_labels=None):
        self.calls.append(dict(sigma=sigma, augment_labels=augment_labels))
        out = x * self.gain / (1 + sigma ** 2) + 0.1 * torch.tanh(x)
        if class_labels is not None:
            out = out + class_labels.sum(dim=1).reshape(-1, 1, 1, 1) * 0.01
        if augment_labels is not None:
            out = out + augment_labels.sum(dim=1).reshape(-1, 1, 1, 1) * 0.02
        return out


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn([n, 3, 8, 8], generator=g)
    labels = torch.eye(10)[torch.randint(10, [n], generator=g)]
    return images, labels


# Hand-written reference formulas (EDM's loss bodies, σ drawn first, then augment, then noise).

def reference_edm(net, images, labels, augment_pipe=None, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
    rnd_normal = torch.randn([images.shape[0], 1, 1, 1])
    sigma = (rnd_normal * P_std + P_mean).exp()
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    y, aug = augment_pipe(images) if augment_pipe is not None else (images, None)
    n = torch.randn_like(y) * sigma
    return weight * ((net(y + n, sigma, labels, augment_labels=aug) - y) ** 2)


def reference_ve(net, images, labels, sigma_min=0.02, sigma_max=100):
    rnd_uniform = torch.rand([images.shape[0], 1, 1, 1])
    sigma = sigma_min * ((sigma_max / sigma_min) ** rnd_uniform)
    weight = 1 / sigma ** 2
    n = torch.randn_like(images) * sigma
    return weight * ((net(images + n, sigma, labels, augment_labels=None) - images) ** 2)


def reference_vp(net, images, labels, beta_d=19.9, beta_min=0.1, epsilon_t=1e-5):
    rnd_uniform = torch.rand([images.shape[0], 1, 1, 1])
    t = 1 + rnd_uniform * (epsilon_t - 1)
    sigma = ((0.5 * beta_d * (t ** 2) + beta_min * t).exp() - 1).sqrt()
    weight = 1 / sigma ** 2
    n = torch.randn_like(images) * sigma
    return weight * ((net(images + n, sigma, labels, augment_labels=None) - images) ** 2)


@pytest.mark.parametrize('loss_fn,reference', [
    (EDMLoss(), reference_edm),
    (EDMLoss(P_mean=0.3, P_std=0.6, sigma_data=0.8),
     lambda *a: reference_edm(*a, P_mean=0.3, P_std=0.6, sigma_data=0.8)),
    (VELoss(), reference_ve),
    (VELoss(sigma_min=0.1, sigma_max=7), lambda *a: reference_ve(*a, sigma_min=0.1, sigma_max=7)),
    (VPLoss(), reference_vp),
    (VPLoss(beta_d=15, beta_min=0.2, epsilon_t=1e-3),
     lambda *a: reference_vp(*a, beta_d=15, beta_min=0.2, epsilon_t=1e-3)),
])
def test_default_losses_equal_reference_bitwise(loss_fn, reference):
    images, labels = batch()
    net = TinyDenoiser()
    torch.manual_seed(11)
    got = loss_fn(net, images, labels)
    after_ours = torch.rand(3)
    torch.manual_seed(11)
    want = reference(net, images, labels)
    after_ref = torch.rand(3)
    assert torch.equal(got, want)
    assert torch.equal(after_ours, after_ref)  # the same amount of the global stream was consumed


def test_edm_loss_with_augment_pipe_equals_reference_bitwise():
    images, labels = batch(n=8)
    net = TinyDenoiser()
    pipe = AugmentPipe(**edm_augment_kwargs(0.5))
    torch.manual_seed(5)
    got = EDMLoss()(net, images, labels, augment_pipe=pipe)
    torch.manual_seed(5)
    want = reference_edm(net, images, labels, augment_pipe=pipe)
    assert torch.equal(got, want)
    assert net.calls[0]['augment_labels'].shape == (8, 9)


def test_edm_loss_on_fixture_network_equals_reference(parity_records):
    if not os.path.exists(os.path.join(ROOT, 'training', 'networks.py')):
        pytest.skip('training/networks.py not written yet')
    import training.networks
    rec = parity_records['ddpmpp_edm_uncond']
    net = getattr(training.networks, rec['precond'])(**rec['precond_kwargs'], **rec['model_kwargs'])
    net.load_state_dict(rec['state_dict'], strict=True)
    images = rec['x'][:2]
    with torch.no_grad():
        torch.manual_seed(2)
        got = EDMLoss()(net, images)
        torch.manual_seed(2)
        want = reference_edm(net, images, None)
    assert torch.equal(got, want)


def test_compute_returns_sigma_and_unweighted_per_sample_error():
    images, labels = batch()
    net = TinyDenoiser()
    loss_fn = EDMLoss()
    torch.manual_seed(3)
    terms = loss_fn.compute(net, images, labels)
    assert isinstance(terms, LossTerms)
    torch.manual_seed(3)
    assert torch.equal(terms.loss, loss_fn(net, images, labels))

    # Rebuild σ, the noise and the error from the same stream by hand.
    torch.manual_seed(3)
    sigma = (torch.randn([6]) * 1.2 - 1.2).exp()
    noise = torch.randn_like(images) * sigma.reshape(-1, 1, 1, 1)
    with torch.no_grad():
        denoised = net(images + noise, sigma.reshape(-1, 1, 1, 1), labels)
    mse = ((denoised - images) ** 2).mean(dim=(1, 2, 3))
    assert terms.sigma.shape == (6,) and torch.equal(terms.sigma, sigma)
    assert terms.error.shape == (6,)
    torch.testing.assert_close(terms.error, mse, rtol=1e-6, atol=0)
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(terms.loss.mean(dim=(1, 2, 3)), weight * mse, rtol=1e-5, atol=0)

    # Gradients flow through the loss, never through the error.
    assert terms.loss.requires_grad and not terms.error.requires_grad and not terms.sigma.requires_grad
    terms.loss.sum().backward()
    assert net.gain.grad is not None and net.gain.grad != 0


def test_swapping_sigma_sampler_changes_sigma():
    images, labels = batch(n=64)
    loss_fn = EDMLoss()
    torch.manual_seed(0)
    default = loss_fn.compute(TinyDenoiser(), images, labels).sigma
    assert not ((default >= 0.5) & (default <= 0.6)).all()
    loss_fn.sigma_sampler = LogUniformSampler(0.5, 0.6)
    torch.manual_seed(0)
    swapped = loss_fn.compute(TinyDenoiser(), images, labels).sigma
    assert ((swapped >= 0.5) & (swapped <= 0.6)).all()
    # The weight stays the EDM one at the new σ's.
    torch.manual_seed(0)
    terms = loss_fn.compute(TinyDenoiser(), images, labels)
    weight = (terms.sigma ** 2 + 0.25) / (terms.sigma * 0.5) ** 2
    torch.testing.assert_close(terms.loss.mean(dim=(1, 2, 3)), weight * terms.error, rtol=1e-5, atol=0)


def test_sampler_generator_is_not_used_by_default_and_samplers_share_stream():
    # The default samplers consume the global stream exactly like the reference draws.
    torch.manual_seed(4)
    a = LogNormalSampler().sample(5)
    torch.manual_seed(4)
    assert torch.equal(a, (torch.randn([5, 1, 1, 1]) * 1.2 - 1.2).exp().flatten())


@pytest.mark.parametrize('cls', [EDMLoss, VELoss, VPLoss])
def test_unit_weighting_gives_plain_squared_error(cls):
    images, labels = batch()
    net = TinyDenoiser()
    loss_fn = cls(weighting='unit')
    torch.manual_seed(8)
    terms = loss_fn.compute(net, images, labels)
    assert torch.equal(terms.loss.detach().mean(dim=(1, 2, 3)), terms.error)
    assert loss_fn.weight_fn(torch.tensor([0.1, 10.0])).tolist() == [1.0, 1.0]


def test_weighting_options():
    sigma = torch.tensor([0.1, 1.0, 30.0])
    edm_weight = VELoss(weighting='edm', sigma_data=0.8).weight_fn(sigma)
    assert torch.equal(edm_weight, (sigma ** 2 + 0.64) / (sigma * 0.8) ** 2)
    for loss_fn in (VELoss(), VPLoss()):
        assert loss_fn.weighting == 've' and torch.equal(loss_fn.weight_fn(sigma), 1 / sigma ** 2)
    assert EDMLoss().weighting == 'edm'
    with pytest.raises(ValueError, match='sqrt'):
        EDMLoss(weighting='sqrt')


def test_vp_time_sampler():
    s = VPTimeSampler(beta_d=19.9, beta_min=0.1, epsilon_t=1e-5)
    torch.manual_seed(1)
    sigma = s.sample(1000)
    assert sigma.shape == (1000,) and sigma.dtype == torch.float32
    lo = math.sqrt(math.exp(0.5 * 19.9 * 1e-10 + 0.1 * 1e-5) - 1)
    hi = math.sqrt(math.exp(0.5 * 19.9 + 0.1) - 1)
    assert lo * 0.5 <= sigma.min() and sigma.max() <= hi * (1 + 1e-5)
    # t = σ⁻¹(σ) is uniform on [ε_t, 1]: its mean is ≈ (1 + ε_t)/2.
    t = ((0.1 ** 2 + 2 * 19.9 * torch.log1p(sigma.double() ** 2)).sqrt() - 0.1) / 19.9
    assert abs(t.mean().item() - 0.5) < 0.03
    gen = torch.Generator().manual_seed(9)
    assert torch.equal(s.sample(4, generator=gen), s.sample(4, generator=torch.Generator().manual_seed(9)))
    assert s.step() is False and s.profile() == {} and s.state_dict() == {}
    s.observe(sigma, sigma)
    s.load_state_dict({})
    assert isinstance(VPLoss(beta_d=10).sigma_sampler, VPTimeSampler)
    assert VPLoss(beta_d=10).sigma_sampler.beta_d == 10


def test_snapshot_round_trip_drops_sampler_and_keeps_kwargs(tmp_path):
    loss_fn = VELoss(sigma_min=0.05, sigma_max=50, weighting='unit')
    loss_fn.sigma_sampler = LogUniformSampler(1.0, 2.0)
    path = tmp_path / 'snap.pkl'
    persistence.dump_network_pickle({'loss_fn': loss_fn}, str(path))
    loaded = persistence.load_network_pickle(str(path))['loss_fn']
    assert type(loaded) is VELoss
    assert (loaded.sigma_min, loaded.sigma_max, loaded.weighting) == (0.05, 50, 'unit')
    assert isinstance(loaded.sigma_sampler, LogUniformSampler)
    assert (loaded.sigma_sampler.sigma_min, loaded.sigma_sampler.sigma_max) == (0.05, 50)
    _, (meta,) = EDMLoss(P_mean=-1.0).__reduce__()
    assert 'sigma_sampler' not in meta['state'] and meta['state']['_init_kwargs'] == {'P_mean': -1.0}


def test_state_restored_without_sampler_gets_default():
    loss_fn = EDMLoss.__new__(EDMLoss)
    loss_fn.__dict__.update(P_mean=-1.0, P_std=1.5, sigma_data=0.5)  # a reference object's state
    assert loss_fn.weighting == 'edm'
    sampler = loss_fn.sigma_sampler
    assert isinstance(sampler, LogNormalSampler) and (sampler.P_mean, sampler.P_std) == (-1.0, 1.5)
    assert loss_fn.sigma_sampler is sampler
    with pytest.raises(AttributeError):
        loss_fn.no_such_attribute


@pytest.mark.gpu
def test_loss_compute_does_not_sync_on_cuda():
    images, labels = batch(n=16)
    images, labels = images.cuda(), labels.cuda()
    net = TinyDenoiser().cuda()
    for loss_fn in (EDMLoss(), VELoss(), VPLoss(), EDMLoss(weighting='unit')):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            terms = loss_fn.compute(net, images, labels)
        finally:
            torch.cuda.set_sync_debug_mode('default')
        assert terms.loss.device.type == 'cuda' and terms.sigma.shape == (16,) and terms.error.shape == (16,)
        torch.testing.assert_close(terms.loss.mean(dim=(1, 2, 3)), loss_fn.weight_fn(terms.sigma) * terms.error,
                                   rtol=1e-5, atol=0)
