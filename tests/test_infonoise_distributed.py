"""InfoNoiseSampler under real torch.distributed: two gloo processes on CPU build identical tables."""
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from infonoise import InfoNoiseSampler, LogUniformSampler, SigmaGrid

WORLD = 2
KEYS = ('mse', 'rate', 'gated_rate', 'rho', 'pi', 'u')


def make_sampler(buffer_size):
    return InfoNoiseSampler(SigmaGrid(0.002, 80.0, 32), base=LogUniformSampler(0.002, 80.0), warmup_steps=1,
                            refresh_every=2, buffer_size=buffer_size, min_count=1, floor=0.05)


def rank_data(rank):
    """Each rank's own (σ, loss) stream for two steps: different σ's and noise on every rank."""
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(2):
        sigma = LogUniformSampler(0.002, 80.0).sample(1024, generator=g)
        s = sigma.double()
        loss = (0.25 * s ** 2 / (0.25 + s ** 2)) * (0.5 + torch.rand(1024, generator=g, dtype=torch.float64))
        out.append((sigma, loss.float()))
    return out


def worker(rank, store_path, out_dir):
    dist.init_process_group('gloo', init_method=f'file://{store_path}', rank=rank, world_size=WORLD)
    try:
        sampler = make_sampler(buffer_size=256)
        rebuilt = []
        for sigma, loss in rank_data(rank):
            sampler.observe(sigma, loss)
            rebuilt.append(sampler.step())
        draws = sampler.sample(1000, generator=torch.Generator().manual_seed(rank))
        prof = sampler.profile()
        torch.save({'rebuilt': rebuilt, 'pivot': prof['pivot'], 'draws': draws,
                    'cdf': sampler.state_dict()['cdf'],
                    **{k: torch.from_numpy(prof[k]) for k in KEYS}},
                   os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_build_the_table_of_the_union(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / 'store'), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(WORLD))
    assert r0['rebuilt'] == r1['rebuilt'] == [False, True]
    # Bitwise-identical tables on both ranks ...
    assert torch.equal(r0['cdf'], r1['cdf']) and r0['pivot'] == r1['pivot']
    for k in KEYS:
        assert torch.equal(r0[k], r1[k]), k
    # ... each rank drawing its own stream from it ...
    assert not torch.equal(r0['draws'], r1['draws'])
    # ... equal to one process fed the union of both ranks' losses.
    single = make_sampler(buffer_size=512)
    data = [rank_data(r) for r in range(WORLD)]
    for step in range(2):
        for r in range(WORLD):
            single.observe(*data[r][step])
        single.step()
    prof = single.profile()
    assert prof['refreshes'] == 1 and prof['pivot'] == r0['pivot']
    for k in KEYS:
        np.testing.assert_allclose(r0[k].numpy(), prof[k], rtol=1e-6, atol=0, err_msg=k)
    np.testing.assert_allclose(r0['cdf'].numpy(), single.state_dict()['cdf'].numpy(), rtol=1e-6, atol=1e-12)
