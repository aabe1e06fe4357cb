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
