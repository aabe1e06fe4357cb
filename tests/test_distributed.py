"""torch_utils.distributed / training_stats / misc, with two real gloo processes on CPU."""
import itertools
import os
import random
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from torch_utils import distributed, misc, training_stats

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _values(rank: int, tick: int) -> np.ndarray:
    """Deterministic per-rank data with different counts per rank (independent truth for the pooled stats)."""
    rng = np.random.default_rng(100 * tick + rank)
    return rng.normal(loc=rank + 1.0, scale=0.5 + rank, size=5 + 3 * rank)


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


# ---------------------------------------------------------------------------------------------------
# The two-process worker: every check that needs a real process group, in one spawn.

def _worker(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    device = distributed.init(device='cpu')
    try:
        assert device == torch.device('cpu')
        assert distributed.is_initialized() and torch.distributed.get_backend() == 'gloo'
        assert distributed.get_rank() == rank and distributed.get_world_size() == WORLD
        _check_training_stats(rank)
        _check_sampler(rank)
        _check_collectives(rank)
        _check_ddp_consistency(rank)
        distributed.barrier()
    finally:
        distributed.shutdown()
    assert not distributed.is_initialized()


def _check_training_stats(rank: int) -> None:
    training_stats.reset()
    collector = training_stats.Collector()
    loss_only = training_stats.Collector(regex='Loss/.*')
    for tick in range(2):
        values = _values(rank, tick)
        for chunk in np.array_split(values, 3):  # several reports per tick, as from several steps
            training_stats.report('Loss/loss', torch.from_numpy(chunk))
        training_stats.report0('Timing/sec', [10.0 + tick, 20.0 + tick] if rank == 0 else [99.0])
        training_stats.report('Empty/on_rank1', [] if rank == 1 else [7.0])
        collector.update()
        loss_only.update()

        pooled = np.concatenate([_values(r, tick) for r in range(WORLD)])
        assert collector.num('Loss/loss') == pooled.size
        assert collector.mean('Loss/loss') == pytest.approx(pooled.mean(), rel=1e-12)
        assert collector.std('Loss/loss') == pytest.approx(pooled.std(), rel=1e-10)
        assert collector.num('Timing/sec') == 2  # rank 1's report0 values do not count
        assert collector.mean('Timing/sec') == pytest.approx(15.0 + tick)
        assert collector.num('Empty/on_rank1') == 1 and collector.mean('Empty/on_rank1') == 7.0
        assert loss_only.names() == ['Loss/loss']
        assert loss_only.mean('Loss/loss') == pytest.approx(pooled.mean(), rel=1e-12)
        stats = collector.as_dict()
        assert stats['Loss/loss'].num == pooled.size and set(stats) == {'Loss/loss', 'Timing/sec', 'Empty/on_rank1'}

    # A tick with no new data keeps the previous averages and its count.
    collector.update()
    assert collector.num('Loss/loss') == _values(0, 1).size + _values(1, 1).size

    # Ranks that registered different names are detected instead of mixing statistics silently.
    training_stats.reset()
    mismatched = training_stats.Collector()
    training_stats.report('only_rank0' if rank == 0 else 'only_rank1', 1.0)
    with pytest.raises(RuntimeError, match='different sets of statistic names'):
        mismatched.update()
    training_stats.reset()


def _check_sampler(rank: int) -> None:
    dataset = range(10)
    # Rank streams are the interleaving of one global stream (so positions are disjoint).
    global_stream = _take(misc.InfiniteSampler(dataset, seed=5), 60)
    mine = _take(misc.InfiniteSampler(dataset, rank=rank, num_replicas=WORLD, seed=5), 30)
    assert mine == global_stream[rank::WORLD]
    theirs = distributed.broadcast_object(mine, src=1)
    if rank == 0:
        assert theirs == global_stream[1::WORLD]

    # Without window swaps each pass is a permutation: the ranks' halves are disjoint and cover it.
    half = _take(misc.InfiniteSampler(dataset, rank=rank, num_replicas=WORLD, seed=5, window_size=0), 5)
    halves = [None] * WORLD
    torch.distributed.all_gather_object(halves, half)
    assert sorted(halves[0] + halves[1]) == list(range(10))

    # Exact resume: rank 0's state dict (after 7 consumed items per rank) resumes every rank.
    sampler = misc.InfiniteSampler(dataset, rank=rank, num_replicas=WORLD, seed=5)
    stream = _take(sampler, 30)
    state = distributed.broadcast_object(sampler.state_dict(num_consumed=7) if rank == 0 else None)
    resumed = misc.InfiniteSampler(dataset, rank=rank, num_replicas=WORLD, seed=5)
    resumed.load_state_dict(state)
    assert _take(resumed, 23) == stream[7:]


def _check_collectives(rank: int) -> None:
    t = torch.tensor([float(rank + 1), 10.0 * rank])
    distributed.all_reduce_(t)
    assert t.tolist() == [3.0, 10.0]
    t = torch.tensor([float(rank)])
    distributed.all_reduce_(t, 'max')
    assert t.item() == 1.0
    assert distributed.broadcast_object({'rank': rank}) == {'rank': 0}


def _check_ddp_consistency(rank: int) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    misc.check_ddp_consistency(net)  # identical on both ranks: passes
    with torch.no_grad():
        if rank == 1:
            net[0].bias[2] += 1
    if rank == 1:
        with pytest.raises(RuntimeError, match=r'Sequential\.0\.bias'):
            misc.check_ddp_consistency(net)
    else:
        misc.check_ddp_consistency(net)  # rank 0 compares with itself


def test_two_gloo_processes():
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)


# ---------------------------------------------------------------------------------------------------
# Single process.

def test_init_single_process_makes_no_group(monkeypatch):
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    try:
        assert distributed.init(device='cpu') == torch.device('cpu')
        assert not torch.distributed.is_initialized() and not distributed.is_initialized()
        assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
        assert distributed.device() == torch.device('cpu')
        distributed.barrier()
        assert distributed.broadcast_object([1, 2]) == [1, 2]
        assert distributed.all_reduce_(torch.ones(2)).tolist() == [1.0, 1.0]
    finally:
        distributed.shutdown()
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('RANK', '0')
    try:
        distributed.init(device='cpu')
        assert not torch.distributed.is_initialized()
    finally:
        distributed.shutdown()
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '5')
    with pytest.raises(ValueError, match='RANK=5'):
        distributed.init(device='cpu')


def test_training_stats_single_process():
    training_stats.reset()
    collector = training_stats.Collector()
    assert collector.num('x') == 0 and np.isnan(collector.mean('x')) and np.isnan(collector.std('x'))
    training_stats.report('x', [1.0, 2.0, 4.0])
    training_stats.report('x', torch.tensor(5.0))
    training_stats.report0('y', 3.0)
    collector.update()
    assert collector.num('x') == 4 and collector.mean('x') == 3.0
    assert collector.std('x') == pytest.approx(np.std([1, 2, 4, 5]))
    assert collector.mean('y') == 3.0 and collector.std('y') == 0.0
    # A collector created later only sees what is reported after its creation.
    late = training_stats.Collector()
    training_stats.report('x', 10.0)
    late.update()
    collector.update()
    assert late.num('x') == 1 and late.mean('x') == 10.0 and collector.num('x') == 1
    late.update()   # an interval without new scalars keeps the previous averages
    assert late.num('x') == 1 and late.mean('x') == 10.0
    training_stats.reset()


def test_rng_state_roundtrip_through_weights_only_load(tmp_path):
    misc.seed_all(123)
    random.random(), np.random.rand(), torch.rand(3)
    state = misc.get_rng_state()
    expected = (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist(), np.random.randn())
    torch.save(state, tmp_path / 'rng.pt')
    misc.seed_all(999)  # disturb every generator
    misc.set_rng_state(torch.load(tmp_path / 'rng.pt', weights_only=True))
    assert (random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist(), np.random.randn()) == expected
    assert misc.rank_seed(7, rank=1, world_size=4) == 29 and misc.rank_seed(7) == 7


def test_infinite_sampler_resume_single_process():
    dataset = list(range(7))
    sampler = misc.InfiniteSampler(dataset, seed=1)
    stream = _take(sampler, 100)
    assert sorted(set(stream)) == dataset  # every item keeps being visited
    # Resume at every position (pass boundaries included) continues the stream exactly.
    for consumed in (0, 1, 6, 7, 8, 20, 50):
        resumed = misc.InfiniteSampler(dataset, seed=1)
        resumed.load_state_dict(sampler.state_dict(num_consumed=consumed))
        assert _take(resumed, 100 - consumed) == stream[consumed:]
        # ...and a state taken after resuming (no checkpoint in memory) is exact too.
        again = misc.InfiniteSampler(dataset, seed=1)
        again.load_state_dict(resumed.state_dict(num_consumed=3))
        assert _take(again, 10) == stream[consumed + 3:consumed + 13]
    # The state survives torch.save / weights_only load and is checked against the sampler's settings.
    state = sampler.state_dict(num_consumed=9)
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    resumed = misc.InfiniteSampler(dataset, seed=1)
    resumed.load_state_dict(loaded)
    assert _take(resumed, 5) == stream[9:14]
    with pytest.raises(ValueError, match='seed'):
        misc.InfiniteSampler(dataset, seed=2).load_state_dict(state)
    assert _take(misc.InfiniteSampler(dataset, shuffle=False), 9) == [0, 1, 2, 3, 4, 5, 6, 0, 1]


@pytest.mark.gpu
def test_cuda_single_process(monkeypatch):
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    training_stats.reset()
    try:
        assert distributed.init() == torch.device('cuda', 0) and not distributed.is_initialized()
        collector = training_stats.Collector()
        x = torch.arange(6.0, device='cuda')
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')  # report() must not synchronise with the host
        try:
            for _ in range(3):
                training_stats.report('gpu', x)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        collector.update()
        assert collector.num('gpu') == 18 and collector.mean('gpu') == 2.5
        assert collector.std('gpu') == pytest.approx(np.std(np.arange(6.0)))

        torch.cuda.manual_seed(5)
        state = misc.get_rng_state()
        assert state['cuda'] is not None
        expected = torch.randn(3, device='cuda')
        misc.set_rng_state(state)
        assert torch.equal(torch.randn(3, device='cuda'), expected)
    finally:
        distributed.shutdown()
        training_stats.reset()
