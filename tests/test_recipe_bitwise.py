"""Refactoring guard: a short digits-demo run (CPU, one thread, fixed seed) ends in exactly the recorded
snapshot EMA tensors and training-state tensors.

The hashes were recorded before the loop/options redesign; any change to what training computes (data
order, σ draws, InfoNoise refreshes, Adam, EMA, RNG consumption) changes them. Tensors are hashed (name,
dtype, shape, bytes), never pickle bytes, so file-format details and stored options do not matter.

Print the hashes of the current code:  python tests/test_recipe_bitwise.py
"""
import hashlib
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import ROOT  # noqa: E402

# The recipe: digits-demo shortened to 20 optimizer steps, with InfoNoise refreshing from step 5 on.
ARGS = ['--preset', 'digits-demo', '--kimg', '2.56', '--infonoise-warmup', '5', '--infonoise-refresh', '5',
        '--tick', '1.28', '--snap', '1', '--dump', '1', '--grid', '0', '--plot', 'False', '--threads', '1',
        '--seed', '0', '--device', 'cpu', '--workers', '0']
RECORDED_TORCH = '2.13.0+cpu'
RECORDED = {   # recorded at commit 89c9f98 (before the redesign) with RECORDED_TORCH
    'snapshot_ema': '59485af7feb1f4027b78ff496036e413a44a686c3a2a2bd996654c8c22998594',
    'state': '881e6a38a462fc028ab5a298fc966f441275a514a5dc8a5576f02c3fe1f13607',
}


def _walk(obj, path=''):
    """(path, array) for every tensor / ndarray in a nested structure, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield path, obj.detach().cpu().contiguous()
    elif isinstance(obj, np.ndarray):
        yield path, torch.from_numpy(np.ascontiguousarray(obj))
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _walk(obj[key], f'{path}/{key}')
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _walk(value, f'{path}/{i}')


def tensor_hash(obj) -> str:
    h = hashlib.sha256()
    for path, t in _walk(obj):
        h.update(f'{path}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def run_hashes(outdir: str) -> dict:
    """Train the recipe into `outdir` and return the hashes of its last snapshot's EMA and last state."""
    from click.testing import CliRunner

    import train
    from torch_utils import persistence
    from training import checkpoint
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(train.main, ['--outdir', outdir, '--nosubdir', *ARGS])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    snapshot = sorted(f for f in os.listdir(outdir) if checkpoint.SNAPSHOT_RE.match(f))[-1]
    with open(os.path.join(outdir, snapshot), 'rb') as f:
        ema = persistence.load_network_pickle(f)['ema']
    state_path = checkpoint.list_states(outdir)[-1][1]
    state = checkpoint.load_training_state(state_path)
    tensors = {k: state[k] for k in ('net', 'ema', 'optimizer', 'ranks', 'data', 'cur_nimg', 'cur_tick')}
    return dict(snapshot_ema=tensor_hash(ema.state_dict()), state=tensor_hash(tensors),
                files=(snapshot, os.path.basename(state_path)), cur_nimg=int(state['cur_nimg']))


def test_digits_demo_run_is_bitwise_as_recorded(tmp_path):
    if torch.__version__ != RECORDED_TORCH:
        pytest.skip(f'hashes were recorded with torch {RECORDED_TORCH}; this is torch {torch.__version__}, '
                    f'whose kernels may round differently')
    got = run_hashes(str(tmp_path))
    assert got['cur_nimg'] == 2560
    assert {k: got[k] for k in RECORDED} == RECORDED


if __name__ == '__main__':
    import tempfile
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        print(torch.__version__, run_hashes(tmp))
