"""Torch helpers for the training loop: seeding and RNG capture, an infinite resumable sampler,
gradient-accumulation DDP sync and a DDP consistency check."""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch

from . import distributed


# ---------------------------------------------------------------------------------------------------
# Seeding and RNG state.

def rank_seed(seed: int, rank: int = 0, world_size: int = 1) -> int:
    """Distinct, reproducible 31-bit seed per rank derived from one run seed."""
    return int((int(seed) * int(world_size) + int(rank)) % (1 << 31))


def seed_all(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)  # also seeds all CUDA devices


_NUMPY_STATE_KEYS = ('kind', 'keys', 'pos', 'has_gauss', 'cached_gaussian')   # np.random.get_state()'s tuple


def get_rng_state() -> dict:
    """Capture the Python, NumPy, torch CPU and CUDA generator states.

    The result holds only tensors, ints, floats, tuples and None, so it round-trips through
    `torch.save` / `torch.load(weights_only=True)`.
    """
    state = dict(
        python=random.getstate(),   # (version, tuple of ints, gauss or None)
        numpy=dict(zip(_NUMPY_STATE_KEYS, _rng_state_to_plain(np.random.get_state()))),
        torch=torch.get_rng_state(),
        cuda=None,
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    """Restore generator states captured by get_rng_state().

    CUDA states are restored when CUDA is available with at least as many devices as were captured;
    otherwise (e.g. resuming a GPU run on CPU) they are skipped.
    """
    version, internal, gauss = state['python']
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    np.random.set_state(_rng_state_from_plain(tuple(state['numpy'][key] for key in _NUMPY_STATE_KEYS)))
    torch.set_rng_state(torch.as_tensor(state['torch'], dtype=torch.uint8).cpu())
    cuda_states = state.get('cuda')
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda_states):
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(torch.as_tensor(cuda_state, dtype=torch.uint8).cpu(), index)


# ---------------------------------------------------------------------------------------------------
# Infinite, rank-aware, resumable sampler.

class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices with EDM's windowed shuffle, split across ranks, resumable.

    The global stream is built as EDM's sampler builds it: start from a permutation drawn with
    NumPy's RandomState(seed); at global position g visit slot i = g mod N, then swap that slot with
    one of the `window_size`*N slots before it (so the order keeps changing from pass to pass). Rank r
    yields the items at positions g = r, r + R, r + 2R, ... (R = num_replicas), so ranks see disjoint
    positions of one common stream.

    Exact resume: every rank walks the same global stream, so "how far" is the single global position
    g = num_consumed * R, where num_consumed is the number of indices this rank has *consumed* (the
    DataLoader may have drawn more). `state_dict(num_consumed)` stores the stream state at the start of
    the pass containing g (permutation + RNG state) plus g; `load_state_dict` restores it and the next
    iteration replays at most one pass (N swaps) to land exactly on g. A state dict is rank-independent,
    so rank 0's copy resumes every rank.
    """

    def __init__(self,
        dataset: Any,                   # Anything with len(); only its length is used.
        rank: int = 0,                  # This process's rank.
        num_replicas: int = 1,          # Number of ranks sharing the stream.
        shuffle: bool = True,           # False: plain cyclic order 0, 1, ..., N-1, 0, ...
        seed: int = 0,                  # Seed of the permutation and of the window swaps.
        window_size: float = 0.5,       # Swap window as a fraction of N (0 disables the swaps).
    ) -> None:
        size = len(dataset)
        if size <= 0:
            raise ValueError('InfiniteSampler needs a non-empty dataset.')
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'Invalid rank {rank} for num_replicas={num_replicas}.')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size must lie in [0, 1], got {window_size}.')
        super().__init__()
        self.size = size
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window = int(np.rint(size * window_size)) if shuffle else 0
        self._start: dict | None = None     # pass checkpoint + position to resume from (load_state_dict)
        self._checkpoints: dict[int, tuple[np.ndarray, tuple]] = {}  # pass start position -> (order, rng state)
        self._yielded = 0                   # indices yielded by the live iterator (this rank)
        self._max_checkpoints = 16

    # -- stream ---------------------------------------------------------------------------------
    def _initial_state(self) -> tuple[np.ndarray, np.random.RandomState | None]:
        order = np.arange(self.size)
        if not self.shuffle:
            return order, None
        rnd = np.random.RandomState(self.seed)
        rnd.shuffle(order)
        return order, rnd

    def _advance(self, order: np.ndarray, rnd: np.random.RandomState | None, pos: int) -> None:
        """Apply the window swap that follows visiting global position `pos`."""
        if self.window >= 2:
            i = pos % self.size
            j = (i - rnd.randint(self.window)) % self.size
            order[i], order[j] = order[j], order[i]

    def __iter__(self) -> Iterator[int]:
        self._checkpoints = {}
        self._yielded = 0
        if self._start is None:
            order, rnd = self._initial_state()
            pos, target = 0, 0
        else:
            pos = int(self._start['pass_start'])
            target = int(self._start['position'])
            order = self._start['order'].copy()
            rnd = _random_state(self._start['rng'])
        while True:
            if pos % self.size == 0:   # remember the start of each pass (the latest few)
                self._checkpoints[pos] = (order.copy(), rnd.get_state() if rnd is not None else None)
                if len(self._checkpoints) > self._max_checkpoints:
                    del self._checkpoints[min(self._checkpoints)]
            if pos >= target and pos % self.num_replicas == self.rank:
                self._yielded += 1
                yield int(order[pos % self.size])
            self._advance(order, rnd, pos)
            pos += 1

    # -- resume ---------------------------------------------------------------------------------
    def _replay_to(self, position: int) -> tuple[int, np.ndarray, tuple | None]:
        """Stream state at the start of the pass containing `position`: replayed from the nearest
        earlier pass checkpoint (the live iterator's, the loaded state's, or the very beginning)."""
        pass_start = position - position % self.size
        sources = [(p, o, r) for p, (o, r) in self._checkpoints.items() if p <= pass_start]
        if self._start is not None and self._start['pass_start'] <= pass_start:
            sources.append((self._start['pass_start'], self._start['order'], self._start['rng']))
        if sources:
            pos, order, rng = max(sources, key=lambda src: src[0])
            order, rnd = order.copy(), _random_state(rng)
        else:
            pos = 0
            order, rnd = self._initial_state()
        for p in range(pos, pass_start):
            self._advance(order, rnd, p)
        return pass_start, order, rnd.get_state() if rnd is not None else None

    def state_dict(self, num_consumed: int | None = None) -> dict:
        """Stream position after this rank consumed `num_consumed` indices (default: all it yielded).

        With a prefetching DataLoader pass the count the training loop actually used, e.g.
        cur_nimg // world_size.
        """
        consumed = self._yielded if num_consumed is None else int(num_consumed)
        if consumed < 0:
            raise ValueError(f'num_consumed must be >= 0, got {consumed}.')
        base = 0 if self._start is None else int(self._start['position'])
        position = base + consumed * self.num_replicas
        pass_start, order, rng = self._replay_to(position)
        return dict(version=1, size=self.size, shuffle=self.shuffle, seed=self.seed, window=self.window,
                    position=position, pass_start=pass_start, order=torch.from_numpy(order.astype(np.int64)),
                    rng=_rng_state_to_plain(rng))

    def load_state_dict(self, state: dict) -> None:
        """Make the next iteration continue the stream exactly where `state` left it."""
        for key, mine in (('size', self.size), ('shuffle', self.shuffle), ('seed', self.seed), ('window', self.window)):
            if state.get(key) != mine:
                raise ValueError(f'Sampler state does not match this sampler: '
                                 f'{key}={state.get(key)!r}, expected {mine!r}.')
        self._start = dict(position=int(state['position']), pass_start=int(state['pass_start']),
                           order=torch.as_tensor(state['order']).numpy().astype(np.int64),
                           rng=_rng_state_from_plain(state['rng']))


def _random_state(rng: tuple | None) -> np.random.RandomState | None:
    """A RandomState at `rng` (a get_state() tuple); None stays None (no shuffle)."""
    if rng is None:
        return None
    rnd = np.random.RandomState()
    rnd.set_state(rng)
    return rnd


def _rng_state_to_plain(rng: tuple | None) -> tuple | None:
    """RandomState.get_state() with the key array as a tensor (weights_only-loadable)."""
    if rng is None:
        return None
    kind, keys, pos, has_gauss, cached = rng
    return (str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached))


def _rng_state_from_plain(rng: tuple | None) -> tuple | None:
    if rng is None:
        return None
    kind, keys, pos, has_gauss, cached = rng
    return (kind, np.asarray(torch.as_tensor(keys).numpy(), dtype=np.uint32), int(pos), int(has_gauss), float(cached))


# ---------------------------------------------------------------------------------------------------
# DDP helpers.

@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce inside the block unless `sync` (gradient accumulation)."""
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


@torch.no_grad()
def check_ddp_consistency(module: torch.nn.Module) -> None:
    """Raise RuntimeError naming the first parameter/buffer that differs from rank 0's copy.

    All checked tensors travel as raw bytes in a single broadcast (NaN/Inf are first replaced by
    finite values, so they compare equal), then every rank compares bitwise. Every rank performs
    the same collective whatever the outcome. No-op without a process group.
    """
    if not distributed.is_initialized():
        return
    comm = distributed.comm_device()
    names, chunks = [], []
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = torch.nan_to_num(tensor)
        names.append(f'{type(module).__name__}.{name}')
        chunks.append(tensor.to(comm).contiguous().reshape(-1).view(torch.uint8))
    if not chunks:
        return
    mine = torch.cat(chunks)
    reference = mine.clone()
    torch.distributed.broadcast(reference, src=0)
    if torch.equal(mine, reference):
        return
    offset = 0
    for full_name, chunk in zip(names, chunks):
        n = chunk.numel()
        if not torch.equal(mine[offset:offset + n], reference[offset:offset + n]):
            raise RuntimeError(f'DDP inconsistency: {full_name} on rank {distributed.get_rank()} differs from rank 0.')
        offset += n
