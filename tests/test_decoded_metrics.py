"""Decoded scoring and real-data floors (training.metrics.registry): the sign / argmax decoding, which runs count
as discrete, and the floor of a set scored against itself (Fréchet distance 0)."""
import numpy as np
import pytest
import torch

from training.dataset import dataset_kwargs_from_spec
from training.metrics import registry


def test_decode_images_and_sequences():
    x = torch.tensor([[[[-0.3, 0.0], [0.7, -1.2]]]], dtype=torch.float64)
    assert registry.decode(x).tolist() == [[[[-1.0, 1.0], [1.0, -1.0]]]]
    seq = torch.tensor([[[0.1, -1.0, 0.2], [0.9, -0.8, 0.1], [-1.0, 0.5, 0.0], [0.0, 0.4, 0.3]]])   # [1, 4, 3]
    assert registry.decode(seq).tolist() == [[[-1, -1, -1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]]


def test_which_runs_are_discrete():
    assert registry.is_discrete(dataset_kwargs_from_spec('builtin:digits-binary'))
    assert registry.is_discrete(dataset_kwargs_from_spec('builtin:mnist5k-binary'))
    assert not registry.is_discrete(dataset_kwargs_from_spec('builtin:digits'))
    assert not registry.is_discrete(None)


def test_floor_of_the_whole_set_is_zero_and_grows_when_smaller():
    kwargs = dataset_kwargs_from_spec('builtin:digits-binary')
    whole = registry.real_floor(['fd-digits'], kwargs, 1797)['fd-digits']   # every real binarised digit vs itself
    assert abs(whole) < 1e-3
    small = registry.real_floor(['fd-digits'], kwargs, 64, seed=0)['fd-digits']
    assert small > 1.0 and small == registry.real_floor(['fd-digits'], kwargs, 64, seed=0)['fd-digits']
    with pytest.raises(ValueError, match='fewer than'):
        registry.real_floor(['fd-digits'], kwargs, 5000)


def _snapshot(path, dataset_kwargs):
    from torch_utils import persistence
    from training.networks import EDMPrecond
    torch.manual_seed(123)
    net = EDMPrecond(img_resolution=8, img_channels=1, label_dim=0, model_type='SongUNet', model_channels=8,
                     channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0).eval()
    persistence.dump_network_pickle(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs=dataset_kwargs,
                                         infonoise=None), str(path))
    return str(path)


def test_generate_writes_decoded_images_for_binarised_data(tmp_path):
    import PIL.Image
    from click.testing import CliRunner
    import generate
    pngs = {}
    for name, spec in (('binary', 'builtin:digits-binary'), ('gray', 'builtin:digits')):
        snap = _snapshot(tmp_path / f'{name}.pkl', dict(dataset_kwargs_from_spec(spec)))
        result = CliRunner().invoke(generate.main, ['--network', snap, '--outdir', str(tmp_path / name),
                                                    '--seeds', '0-3', '--steps', '4', '--device', 'cpu'])
        assert result.exit_code == 0, result.output
        pngs[name] = np.stack([np.asarray(PIL.Image.open(tmp_path / name / f'{s:06d}.png')) for s in range(4)])
    # sign(x) of the same samples, through EDM's PNG mapping x * 127.5 + 128 (clipped, truncated): -1 -> 0, +1 -> 255
    assert len(np.unique(pngs['gray'])) > 2 and (pngs['gray'] >= 128).any() and (pngs['gray'] < 128).any()
    np.testing.assert_array_equal(pngs['binary'], np.where(pngs['gray'] >= 128, 255, 0))
