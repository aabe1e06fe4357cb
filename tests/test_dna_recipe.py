"""DNA-Diffusion's recipe pieces: the DDPM σ distribution (--sigma-dist ddpm), --sigma-data, --metrics-guidance."""
import math

import numpy as np
import pytest
import torch

import infonoise
from infonoise.samplers import DDPMSampler, ddpm_sigma_levels
from training import options as O
from training.training_loop import build_sigma_sampler


def test_ddpm_levels_closed_form():
    levels = ddpm_sigma_levels()
    assert levels.shape == (50,) and np.all(np.diff(levels) > 0)
    # t = 1: ᾱ = 1 - 1e-4, so σ = sqrt(1e-4 / (1 - 1e-4)).
    assert levels[0] == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    # t = 2: β_2 = 1e-4 + (0.2 - 1e-4) / 49.
    beta2 = 1e-4 + (0.2 - 1e-4) / 49
    abar2 = (1 - 1e-4) * (1 - beta2)
    assert levels[1] == pytest.approx(math.sqrt((1 - abar2) / abar2), rel=1e-12)
    # t = 50 by an explicit product, written independently of numpy's cumprod.
    abar = 1.0
    for t in range(50):
        abar *= 1 - (1e-4 + t * (0.2 - 1e-4) / 49)
    assert levels[-1] == pytest.approx(math.sqrt((1 - abar) / abar), rel=1e-10)
    assert 14.6 < levels[-1] < 14.8
    with pytest.raises(ValueError):
        ddpm_sigma_levels(0)
    with pytest.raises(ValueError):
        ddpm_sigma_levels(50, 0.3, 0.2)


def test_ddpm_sampler_draws_the_levels_uniformly_and_reports_its_mass():
    sampler = DDPMSampler()
    g = torch.Generator().manual_seed(0)
    draws = sampler.sample(50_000, generator=g)
    assert draws.dtype == torch.float32 and draws.shape == (50_000,)
    levels = torch.from_numpy(ddpm_sigma_levels().astype(np.float32))
    index = (draws[:, None] == levels[None]).float().argmax(dim=1)
    assert torch.equal(levels[index], draws)                             # every draw is one of the 50 levels
    freq = torch.bincount(index, minlength=50).double() / 50_000
    assert (freq - 0.02).abs().max() < 0.004                             # binomial sd 0.0006: 6 sd
    again = sampler.sample(50_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    # Profile on the default grid (0.002 .. 80): all 50 levels inside, so the bin masses sum to 1.
    prof = sampler.profile()
    grid = infonoise.SigmaGrid(0.002, 80.0, 64)
    mass = prof['pi'] * grid.widths.numpy()
    assert mass.sum() == pytest.approx(1.0) and np.allclose(mass * 50, np.round(mass * 50))
    # observe/step/state like the other fixed samplers.
    sampler.observe(draws[:4], torch.ones(4))
    assert sampler.step() is False and sampler.state_dict() == {'step': 1}
    other = DDPMSampler()
    other.load_state_dict(sampler.state_dict())
    assert other.profile()['step'] == 1


def test_sigma_dist_ddpm_is_usable_in_any_row():
    for preset in ('dna-cpu', 'bmnist5k-cpu', 'mnist5k-cpu'):
        opts = O.resolve_options({'data': 'dna:x.txt', 'sigma_dist': 'ddpm'}, O.load_preset(preset))
        kwargs = O.sigma_sampler_kwargs(opts, 'discrete')
        assert kwargs == {'class_name': 'infonoise.samplers.DDPMSampler'}
        assert isinstance(build_sigma_sampler(kwargs), DDPMSampler)


def _facts(channels, resolution, label_dim, kwargs):
    return dict(name='x', resolution=resolution, num_channels=channels, label_dim=label_dim, has_labels=label_dim > 0,
                endpoint='discrete', size=10, dataset_kwargs=kwargs)


def test_sigma_data_reaches_network_loss_and_infonoise_weight():
    dna = {'class_name': 'training.dataset_discrete.DNADataset'}
    opts = O.resolve_options({'data': 'dna:x.txt'}, O.load_preset('dna-cpu'))
    assert opts['sigma_data'] == pytest.approx(math.sqrt(3) / 2) and opts['metrics_guidance'] == 2.0
    config = O.build_config(opts, _facts(4, 200, 4, dna))
    assert config['network_kwargs']['sigma_data'] == config['loss_kwargs']['sigma_data'] == opts['sigma_data']
    assert config['metrics_guidance'] == 2.0
    opts = O.resolve_options({'data': 'dna:x.txt', 'sigma_dist': 'infonoise', 'weighting': 'edm',
                              'sigma_data': 0.7}, O.load_preset('dna-cpu'))
    config = O.build_config(opts, _facts(4, 200, 4, dna))
    assert config['sigma_sampler_kwargs']['sigma_data'] == 0.7 == config['network_kwargs']['sigma_data']
    # Continuous presets keep EDM's 0.5; the bMNIST presets use the measured 0.604.
    for preset, want in (('mnist5k-cpu', 0.5), ('cifar10-uncond', 0.5), ('bmnist5k-cpu', 0.604), ('bmnist', 0.604)):
        opts = O.resolve_options({}, O.load_preset(preset))
        assert opts['sigma_data'] == want, preset
    with pytest.raises(O.OptionsError):
        O.validate_options(O.resolve_options({'sigma_data': 0.0}, O.load_preset('mnist5k-cpu')))


def test_dna_one_hot_per_element_std_is_sqrt3_over_2():
    # One base per column: +1 on one row, -1 on three; mean -1/2, E[x^2] = 1, so std = sqrt(1 - 1/4).
    from training.dataset_discrete import one_hot_dna
    x = one_hot_dna(['ACGTTTGA', 'GGGGCCCA']).astype(np.float64) / 127.5 - 1
    assert x.mean() == -0.5 and x.std() == pytest.approx(math.sqrt(3) / 2)
