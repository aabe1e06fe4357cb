"""training.metrics.registry: metric names, applicability, deterministic sampling, values against direct computation."""
import os

import numpy as np
import pytest
import torch

from training import generation
from training.dataset import dataset_kwargs_from_spec, open_dataset
from training.metrics import dna_eval, kmer, registry
from training.metrics.digit_features import digit_frechet, export_detector
from training.metrics.sequences import as_codes
from training.networks import EDMPrecond

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = 'dna:' + os.path.join(ROOT, 'tests', 'data', 'dna_metrics_excerpt.tsv')


@pytest.fixture(scope='module', autouse=True)
def cache_dir(tmp_path_factory, one_torch_thread):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('DNNLIB_CACHE_DIR', str(tmp_path_factory.mktemp('dnnlib-cache')))
        yield


def image_net(resolution: int = 8) -> EDMPrecond:
    torch.manual_seed(0)
    return EDMPrecond(img_resolution=resolution, img_channels=1, label_dim=0, model_type='SongUNet', model_channels=8,
                      channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0).eval()


@pytest.fixture(scope='module')
def dna_net() -> EDMPrecond:
    torch.manual_seed(0)
    return EDMPrecond(img_resolution=200, img_channels=4, label_dim=2, model_type='DNAUNet', model_channels=8,
                      channel_mult=[1, 2]).eval()


@pytest.fixture(scope='module')
def dna_kwargs():
    return dict(open_dataset(SPEC, use_labels=True).dataset_kwargs)


def test_parse_metrics():
    assert registry.parse_metrics('fd-dna, kmer-dna,fd-dna') == ['fd-dna', 'kmer-dna']
    assert registry.parse_metrics(['fid']) == ['fid'] and registry.parse_metrics(None) == []
    with pytest.raises(ValueError, match="Unknown metric 'sei-fid'; choose from fd-digits"):
        registry.parse_metrics('fd-dna,sei-fid')


def test_applicability_errors_are_one_sentence(dna_net, dna_kwargs):
    cases = [('fd-mnist', dna_net, 'fd-mnist is an image metric, but this run generates DNA sequences of shape '
                                   '[4, 200]'),
             ('fid', dna_kwargs, 'fid is an image metric, but this run generates DNA sequences'),
             ('kmer-dna', image_net(), 'kmer-dna is a DNA sequence metric, but this run generates images of shape '
                                       '[1, 8, 8]'),
             ('motif-dna', dataset_kwargs_from_spec('builtin:mnist5k-binary'), 'DNA sequence metric'),
             ('fd-digits', image_net(32), 'fd-digits measures 8x8 digit images'),
             ('fd-mnist', dataset_kwargs_from_spec('builtin:digits'), 'fd-mnist measures 32x32')]
    for name, target, message in cases:
        with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')) as info:
            registry.check_metric_applicable(name, target)
        assert '\n' not in str(info.value) and str(info.value).endswith('.')
    for name, target in [('fd-dna', dna_net), ('motif-dna', dna_kwargs), ('fd-digits', image_net()),
                         ('fd-digits', dataset_kwargs_from_spec('builtin:digits-binary')),
                         ('fd-mnist', dataset_kwargs_from_spec('builtin:mnist5k')), ('fid', image_net(32))]:
        registry.check_metric_applicable(name, target)


def test_sampling_is_balanced_deterministic_and_leaves_the_rng_alone(dna_net):
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    dna_net.train()
    samples, classes = registry.sample(dna_net, 6, seed=10, num_steps=3, batch=4)
    assert torch.equal(torch.rand(3), expected_next)                   # the caller's random stream is untouched
    assert dna_net.training                                            # the mode is restored
    assert samples.shape == (6, 4, 200) and samples.dtype == torch.float64 and classes.tolist() == [0, 1] * 3
    again, _ = registry.sample(dna_net.eval(), 6, seed=10, num_steps=3, batch=4)
    assert torch.equal(samples, again)
    # Sample i is what generate.py --seeds 10+i --class (i mod 2) produces (up to float32 rounding, which
    # depends on the batch composition).
    opts = generation.SamplerOptions(num_steps=3)
    one = generation.sample_batch(dna_net, [13], opts, generation.resolve_sigma_steps(dna_net, opts), class_idx=1)
    torch.testing.assert_close(one[0], samples[3], rtol=1e-3, atol=1e-3)
    # Guidance W = 0 samples the null class: every sample is what the unconditional branch gives.
    from training.guidance import GuidedDenoiser
    guided, _ = registry.sample(dna_net, 2, seed=10, num_steps=3, guidance=0.0)
    null = generation.sample_batch(GuidedDenoiser(dna_net, 0.0), [11], opts,
                                   generation.resolve_sigma_steps(dna_net, opts), class_idx=1)
    torch.testing.assert_close(null[0], guided[1], rtol=1e-3, atol=1e-3)
    assert not torch.allclose(guided[1], samples[1], atol=1e-3)


def test_a_sample_cache_resumes_bitwise_and_its_batches_are_what_is_returned(dna_net, tmp_path):
    # 6 samples, 2 classes, batch 2: files batch-0-0, batch-0-2, batch-1-0, batch-1-2 (class, start in class).
    plain, classes = registry.sample(dna_net, 6, seed=10, num_steps=3, batch=2)
    cache = tmp_path / 'cache'
    cached, _ = registry.sample(dna_net, 6, seed=10, num_steps=3, batch=2, cache=cache)
    assert torch.equal(cached, plain)
    assert sorted(os.listdir(cache)) == ['batch-0-0.npy', 'batch-0-2.npy', 'batch-1-0.npy', 'batch-1-2.npy']
    # What a kill leaves: some batches written, one missing, one truncated mid-write by hand, one of another shape.
    (cache / 'batch-1-2.npy').unlink()
    (cache / 'batch-0-2.npy').write_bytes((cache / 'batch-0-2.npy').read_bytes()[:100])
    np.save(cache / 'batch-1-0.npy', np.zeros((1, 4, 200)))
    resumed, again = registry.sample(dna_net, 6, seed=10, num_steps=3, batch=2, cache=cache)
    assert torch.equal(resumed, plain) and again.tolist() == classes.tolist()
    # A valid file is read, not resampled: samples 1 and 3 (class 1, starts 0) come from batch-1-0.
    marker = np.arange(2 * 4 * 200, dtype=np.float64).reshape(2, 4, 200)
    np.save(cache / 'batch-1-0.npy', marker)
    read, _ = registry.sample(dna_net, 6, seed=10, num_steps=3, batch=2, cache=cache)
    assert torch.equal(read[[1, 3]], torch.from_numpy(marker)) and torch.equal(read[[0, 2, 4, 5]], plain[[0, 2, 4, 5]])


def test_kmer_dna_is_the_per_cell_type_mean(dna_net, dna_kwargs):
    value = registry.evaluate_metrics(['kmer-dna'], dna_net, dna_kwargs, 8, seed=3, num_steps=3)['kmer-dna']
    samples, classes = registry.sample(dna_net, 8, seed=3, num_steps=3)
    reference = dna_eval.load_dna_split(SPEC, 'test')
    codes = as_codes(samples.numpy())
    per_type = [kmer.kmer_js(codes[classes == c], reference.codes[reference.labels == c])['mean'] for c in (0, 1)]
    assert value == pytest.approx(np.mean(per_type), rel=1e-12)
    assert registry.evaluate_metrics(['kmer-dna'], dna_net, dna_kwargs, 8, seed=3, num_steps=3)['kmer-dna'] == value
    cell_types = [dna_kwargs['cell_types'][c] for c in classes]
    report = dna_eval.evaluate_sequences(samples.numpy(), cell_types, dna_eval.get_reference(dna_kwargs), ['kmer-dna'])
    assert report.values['kmer-dna']['mean'] == value and report.num_generated == {
        'HepG2_ENCLB029COU': 4, 'K562_ENCLB843GMH': 4}
    per_k = report.details['kmer-dna']['K562_ENCLB843GMH']
    k562 = report.values['kmer-dna']['K562_ENCLB843GMH']
    assert np.mean([per_k[f'k{k}'] for k in range(1, 7)]) == pytest.approx(k562)


def test_all_dna_metrics_from_one_set_of_samples(dna_net, dna_kwargs):
    values = registry.evaluate_metrics(['motif-dna', 'fd-dna'], dna_net, dna_kwargs, 8, seed=0, num_steps=3)
    assert list(values) == ['motif-dna', 'fd-dna'] and all(np.isfinite(v) and v > 0 for v in values.values())
    with pytest.raises(ValueError, match='image metric'):
        registry.evaluate_metrics(['fd-digits'], dna_net, dna_kwargs, 4)


def test_image_metrics_match_direct_computation(tmp_path):
    net = image_net()
    binary = dict(open_dataset('builtin:digits-binary').dataset_kwargs)
    value = registry.evaluate_metrics(['fd-digits'], net, binary, 16, seed=1, num_steps=4)['fd-digits']
    samples, classes = registry.sample(net, 16, seed=1, num_steps=4)
    assert classes is None
    images = generation.to_uint8(samples)
    assert value == pytest.approx(digit_frechet(images, 'digits-binary'), rel=1e-12)
    # fid with the digit classifier exported as the detector and the run's own data as the reference
    # is the digit Fréchet distance against all real digits (features in float32 instead of float64).
    detector = tmp_path / 'digits.pt'
    export_detector(str(detector))
    digits = dict(open_dataset('builtin:digits').dataset_kwargs)
    fid = registry.evaluate_metrics(['fid'], net, digits, 16, seed=1, num_steps=4, detector=str(detector))['fid']
    assert fid == pytest.approx(digit_frechet(images, 'digits'), rel=1e-4)


def test_evaluate_samples_scores_given_samples_like_the_direct_metric():
    # Real digits as "samples" in [-1, 1]: the registry must give digit_frechet of the same uint8 images.
    ds = open_dataset('builtin:digits', max_size=200)
    images = np.stack([ds[i][0] for i in range(len(ds))])
    samples = torch.as_tensor(images, dtype=torch.float64) / 127.5 - 1
    got = registry.evaluate_samples(['fd-digits'], samples, None, dataset_kwargs_from_spec('builtin:digits'))
    assert got['fd-digits'] == pytest.approx(digit_frechet(torch.as_tensor(images), 'digits'), rel=1e-9)
