"""train.py under torchrun with 2 gloo CPU ranks: DDP training, per-rank states, bitwise-equal σ tables
across ranks, and an exact 2-rank resume."""
import os
import subprocess
import sys

import torch

from torch_utils import persistence
from training import checkpoint, network_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 64 images per step = 2 ranks x 32; ticks end at 64 images, then every >= 1 kimg: states at 1088 and 2048.
TINY = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 64, '--workers', 0, '--grid', 0,
        '--plot', 0, '--seed', 5, '--tick', 1, '--dump', 1, '--snap', 1, '--device', 'cpu', '--deterministic',
        '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 64,
        '--infonoise-min-count', 2, '--infonoise-warmup', 5, '--infonoise-refresh', 5]


def torchrun(*args):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           os.path.join(ROOT, 'train.py'), *[str(a) for a in args]]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_gloo_ranks_train_consistently_and_resume_exactly(tmp_path):
    straight = tmp_path / 'straight'
    proc = torchrun('--outdir', straight, '--nosubdir', *TINY, '--kimg', 2)
    assert proc.stdout.count('Training for 2 kimg') == 1           # rank 0 alone reports
    assert '2 rank(s) x 32 x 1 round(s)' in proc.stdout

    final = checkpoint.load_training_state(str(straight / 'training-state-000002.pt'))
    assert final['world_size'] == 2 and final['cur_nimg'] == 2048
    r0, r1 = final['ranks']
    assert not torch.equal(r0['rng']['torch'], r1['rng']['torch'])   # ranks draw different σ and noise
    s0, s1 = r0['sigma_sampler'], r1['sigma_sampler']
    assert s0['refreshes'] == s1['refreshes'] == 5                  # steps 10, 15, 20, 25, 30 of 32
    assert torch.equal(s0['cdf'], s1['cdf'])                         # one table, built from all-reduced sums
    assert not torch.equal(s0['buf'], s1['buf'])                     # each rank buffers its own losses
    with open(straight / 'network-snapshot-000002.pkl', 'rb') as f:
        snap = persistence.load_network_pickle(f, class_map=network_io.class_map())
    assert snap['infonoise']['refreshes'] == 5

    # Resume both ranks from the 1-kimg state (1088 images) and train to the same end.
    resumed = tmp_path / 'resumed'
    torchrun('--outdir', resumed, '--nosubdir', '--resume', straight / 'training-state-000001.pt', '--kimg', 2)
    other = checkpoint.load_training_state(str(resumed / 'training-state-000002.pt'))
    for key in ('net', 'ema'):
        for name, value in final[key].items():
            assert torch.equal(value, other[key][name]), f'{key}.{name}'
    for rank in range(2):
        a, b = final['ranks'][rank], other['ranks'][rank]
        assert torch.equal(a['rng']['torch'], b['rng']['torch'])
        for name, value in a['sigma_sampler'].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value.nan_to_num(), b['sigma_sampler'][name].nan_to_num()), name
