"""The adaptive rivals under real torch.distributed (two gloo processes on CPU): identical tables on both ranks,
equal to the paper's formula on the union of the ranks' losses."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from infonoise import CDCDSampler, KingmaGaoSampler, LossSecondMomentSampler, SigmaGrid

WORLD = 2
K = 6
HISTORY = 3
CLASSES = {'lsm': LossSecondMomentSampler, 'kg': KingmaGaoSampler, 'cdcd': CDCDSampler}


def grid():
    return SigmaGrid(0.01, 50.0, K)


def rank_losses(rank):
    """HISTORY losses per bin, different on each rank (float32 values)."""
    rng = np.random.default_rng(10 + rank)
    return (np.arange(1, K + 1)[:, None] ** 2 * rng.uniform(0.5, 1.5, (K, HISTORY))).astype(np.float32)


def worker(rank, store_path, out_dir):
    dist.init_process_group('gloo', init_method=f'file://{store_path}', rank=rank, world_size=WORLD)
    try:
        out = {}
        g = grid()
        losses = torch.from_numpy(rank_losses(rank))
        sigma = g.sigma.float()[:, None].expand(K, HISTORY).reshape(-1)
        for name, cls in CLASSES.items():
            sampler = cls(g, weight_fn='unit', history=HISTORY, uniform=0.0)
            sampler.observe(sigma, losses.reshape(-1))
            sampler.step()
            out[name] = sampler.state_dict()['mass']
            out[name + '_draws'] = sampler.sample(500, generator=torch.Generator().manual_seed(rank))
        torch.save(out, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_hold_identical_tables_of_the_union(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / 'store'), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(WORLD))
    union = np.concatenate([rank_losses(0), rank_losses(1)], axis=1).astype(np.float64)   # [K, 2·HISTORY]
    expected = {
        'lsm': np.sqrt((union ** 2).mean(1)),     # improved-diffusion: √E[L²] over the synchronised history
        'kg': union.mean(1),                      # Kingma & Gao: the mean loss per bin
    }
    for name in CLASSES:
        assert torch.equal(r0[name], r1[name]), name                    # bitwise-identical tables
        assert not torch.equal(r0[name + '_draws'], r1[name + '_draws'])  # each rank its own stream
        if name in expected:
            np.testing.assert_allclose(r0[name].numpy(), expected[name] / expected[name].sum(), rtol=1e-6)
    # CDCD: the union's bin means increase here, so the fit is the means; masses = ΔF of the edge knots.
    means = union.mean(1)
    knots = np.concatenate([[means[0]], (means[1:] + means[:-1]) / 2, [means[-1]]])
    np.testing.assert_allclose(r0['cdcd'].numpy(), np.diff(knots) / (knots[-1] - knots[0]), rtol=1e-6)


@pytest.mark.slow
def test_train_py_under_torchrun_with_a_rival_and_the_uncertainty_weighting(tmp_path):
    """2 gloo ranks through train.py: one table on both ranks, u(σ) trained (its gradients are averaged over
    ranks by the loop, outside DDP)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           os.path.join(root, 'train.py'), '--outdir', str(tmp_path), '--nosubdir', '--preset', 'digits-demo',
           '--cbase', '8', '--cres', '1', '--batch', '64', '--workers', '0', '--grid', '0', '--plot', '0',
           '--seed', '5', '--tick', '1', '--dump', '1', '--snap', '1', '--device', 'cpu', '--kimg', '1',
           '--infonoise-bins', '8', '--infonoise-refresh', '4', '--rival-history', '2',
           '--sigma-dist', 'kingma-gao', '--weighting', 'uncertainty']
    proc = subprocess.run(cmd, cwd=root, env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from training import checkpoint
    state = checkpoint.load_training_state(str(tmp_path / 'training-state-000001.pt'))
    s0, s1 = (r['sigma_sampler'] for r in state['ranks'])
    assert torch.equal(s0['mass'], s1['mass']) and not torch.equal(s0['buf'], s1['buf'])
    assert s0['refreshes'] == 16
    assert state['loss_params'][0].abs().sum() > 0
    with open(tmp_path / 'infonoise.jsonl') as f:
        assert len(f.readlines()) == 4           # steps 4, 8, 12, 16
