"""SigmaGrid, loss weights, the fixed σ samplers and profile serialisation."""
import io
import json
import math
import pickle

import numpy as np
import pytest
import torch

import infonoise
from infonoise import (LogNormalSampler, LogUniformSampler, SigmaGrid, edm_weight, get_weight,
                       profile_from_json, profile_to_json, unit_weight, ve_weight, vp_weight)


# ----------------------------------------------------------------------------------------- grid

def test_grid_edges_centres_widths():
    g = SigmaGrid(0.002, 80, 64)
    e = g.edges.numpy()
    assert g.edges.dtype == torch.float64 and e.shape == (65,)
    assert e[0] == 0.002 and e[-1] == 80.0
    ratios = e[1:] / e[:-1]
    np.testing.assert_allclose(ratios, (80 / 0.002) ** (1 / 64), rtol=1e-12)
    np.testing.assert_allclose(g.sigma.numpy(), np.sqrt(e[1:] * e[:-1]), rtol=1e-15)
    np.testing.assert_allclose(g.widths.numpy(), np.diff(e), rtol=1e-15)
    assert g.log_width == pytest.approx(math.log(80 / 0.002) / 64)


def test_bin_index_matches_brute_force_and_clamps_to_edge_bins():
    g = SigmaGrid(0.01, 10, 16)
    rng = np.random.default_rng(0)
    s = np.exp(rng.uniform(math.log(1e-4), math.log(1e3), 5000))
    expected = np.clip(np.searchsorted(g.edges.numpy(), s, side='right') - 1, 0, 15)
    for dtype in (torch.float64, torch.float32):
        t = torch.from_numpy(s).to(dtype)
        got = g.bin_index(t)
        assert got.dtype == torch.int64 and got.device == t.device
        inside = (s > 0.0101) & (s < 9.99)       # float32 rounding may flip samples sitting on an edge
        np.testing.assert_array_equal(got.numpy()[inside | (dtype == torch.float64)],
                                      expected[inside | (dtype == torch.float64)])
    special = torch.tensor([0.0, -1.0, 1e-30, 1e30, float('inf'), -float('inf'), 0.01, 10.0])
    assert g.bin_index(special).tolist() == [0, 0, 0, 15, 15, 0, 0, 15]
    assert g.bin_index(torch.ones(3, 1, 1, 1)).shape == (3, 1, 1, 1)


@pytest.mark.parametrize('kwargs, name', [
    (dict(sigma_min=0, sigma_max=1, num_bins=4), 'sigma_min'),
    (dict(sigma_min=-1, sigma_max=1, num_bins=4), 'sigma_min'),
    (dict(sigma_min=2, sigma_max=1, num_bins=4), 'sigma_max'),
    (dict(sigma_min=1, sigma_max=1, num_bins=4), 'sigma_max'),
    (dict(sigma_min=1, sigma_max=float('inf'), num_bins=4), 'sigma_max'),
    (dict(sigma_min=0.1, sigma_max=1, num_bins=1), 'num_bins'),
    (dict(sigma_min=0.1, sigma_max=1, num_bins=2.5), 'num_bins'),
])
def test_grid_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SigmaGrid(**kwargs)


# ----------------------------------------------------------------------------------------- weights

def test_weights_closed_forms_and_lookup():
    s = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(edm_weight(s), (s ** 2 + 0.25) / (0.25 * s ** 2))
    assert edm_weight(torch.tensor(0.5)).item() == pytest.approx(8.0)      # (0.25 + 0.25) / 0.0625
    torch.testing.assert_close(edm_weight(s, sigma_data=1.0), (s ** 2 + 1) / s ** 2)
    torch.testing.assert_close(ve_weight(s), 1 / s ** 2)
    torch.testing.assert_close(vp_weight(s), 1 / s ** 2)
    assert torch.equal(unit_weight(s), torch.ones(3, dtype=torch.float64))
    np.testing.assert_array_equal(unit_weight(np.array([1.0, 2.0])), [1.0, 1.0])
    torch.testing.assert_close(get_weight('edm', sigma_data=1.0)(s), edm_weight(s, 1.0))
    for name, fn in (('vp', vp_weight), ('ve', ve_weight), ('unit', unit_weight)):
        torch.testing.assert_close(get_weight(name)(s), fn(s))
    assert pickle.loads(pickle.dumps(get_weight('edm')))(s).equal(edm_weight(s))
    with pytest.raises(ValueError, match='weight'):
        get_weight('karras')


# ----------------------------------------------------------------------------------------- fixed samplers

def test_fixed_samplers_use_the_reference_expressions_and_random_stream():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s = LogNormalSampler(-1.2, 1.2).sample(1000, generator=g1)
    ref = (torch.randn([1000, 1, 1, 1], generator=g2) * 1.2 + -1.2).exp().flatten()
    assert s.dtype == torch.float32 and torch.equal(s, ref)
    g1.manual_seed(6), g2.manual_seed(6)
    s = LogUniformSampler(0.002, 80).sample(1000, generator=g1)
    ref = 0.002 * ((80 / 0.002) ** torch.rand(1000, generator=g2))
    assert s.dtype == torch.float32 and torch.equal(s, ref)


@pytest.mark.parametrize('sampler', [LogNormalSampler(-1.2, 1.2), LogUniformSampler(0.01, 20)])
def test_fixed_sampler_profile_density_matches_its_histogram(sampler):
    grid = SigmaGrid(0.002, 80, 32)
    prof = sampler.profile(grid, weight_fn=edm_weight)
    s = sampler.sample(400_000, generator=torch.Generator().manual_seed(0)).double().numpy()
    hist = np.histogram(s, bins=grid.edges.numpy())[0] / s.size
    expected = prof['pi'] * grid.widths.numpy()
    assert 0.5 * np.abs(hist - expected).sum() < 0.005
    np.testing.assert_allclose(prof['phi'], prof['pi'] * edm_weight(grid.sigma.numpy()), rtol=1e-12)
    assert np.isnan(prof['rate']).all() and prof['refreshes'] == 0


def test_fixed_sampler_default_profile_grid_step_and_state():
    s = LogNormalSampler()
    prof = s.profile()
    assert prof['sigma'].shape == (64,) and prof['edges'][0] == 0.002 and prof['edges'][-1] == 80
    assert np.isnan(prof['phi']).all()
    s.observe(torch.ones(4), torch.ones(4))
    assert s.step() is False and s.step() is False
    state = s.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    t = LogNormalSampler()
    t.load_state_dict(torch.load(buf, weights_only=True))
    assert t.profile()['step'] == 2
    with pytest.raises(ValueError, match='P_std'):
        LogNormalSampler(P_std=0)
    with pytest.raises(ValueError, match='sigma_max'):
        LogUniformSampler(1.0, 0.5)


# ----------------------------------------------------------------------------------------- serialisation

def test_profile_json_round_trip_keeps_values_and_nan():
    prof = LogUniformSampler().profile(weight_fn=edm_weight)
    prof['counts'] = np.arange(64, dtype=np.int64)
    d = profile_to_json(prof)
    text = json.dumps(d, allow_nan=False)               # strict JSON: NaN became null
    back = profile_from_json(json.loads(text))
    assert set(back) == set(prof)
    for k, v in prof.items():
        if isinstance(v, np.ndarray):
            assert back[k].dtype == (np.int64 if k == 'counts' else np.float64)
            np.testing.assert_array_equal(back[k], v)
        elif isinstance(v, float) and math.isnan(v):
            assert math.isnan(back[k])
        else:
            assert back[k] == v
    assert pickle.loads(pickle.dumps(d)) == d
    with pytest.raises(ValueError):
        profile_to_json({'x': object()})


def test_package_exports_the_contract_names():
    for name in ('SigmaGrid', 'LogNormalSampler', 'LogUniformSampler', 'InfoNoiseSampler', 'edm_weight',
                 'vp_weight', 've_weight', 'unit_weight', 'get_weight', 'entropy_rate', 'onset_pivot',
                 'powerlaw_pivot', 'gate', 'sampler_table', 'infogrid_sigma_steps', 'profile_to_json',
                 'profile_from_json', 'EmpiricalBayes', 'TwoPoint', 'GaussianMixture', 'CurieWeiss'):
        assert name in infonoise.__all__ and hasattr(infonoise, name)
