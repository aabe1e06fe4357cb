"""The benchmarks' one timer: wall and CPU seconds of a block, with the device synchronised at both ends.

CUDA kernels run asynchronously: without a synchronisation the clock would charge a block with the launches
only, and the next block with the work. Only benchmarks call this; training never synchronises for timing.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device is not None and torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


class Stopwatch:
    """`with Stopwatch(device) as sw: ...` (or `start()` / `stop()`), then `sw.wall` and `sw.cpu` in seconds.

    `cpu` is this process's CPU time (all threads), `wall` the elapsed time; both are read after
    synchronising `device`, at the start and at the end.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.wall = self.cpu = math.nan
        self._start: tuple[float, float] | None = None

    def start(self) -> 'Stopwatch':
        synchronize(self.device)
        self._start = (time.perf_counter(), time.process_time())
        return self

    def stop(self) -> 'Stopwatch':
        if self._start is None:
            raise RuntimeError('Stopwatch.stop() before start()')
        synchronize(self.device)
        self.wall = time.perf_counter() - self._start[0]
        self.cpu = time.process_time() - self._start[1]
        return self

    def __enter__(self) -> 'Stopwatch':
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def best_seconds_per_call(fn: Callable[[], Any], calls: int, repeats: int,
                          device: torch.device | str | None = None) -> float:
    """Best, over `repeats` blocks of `calls` calls of `fn`, of the mean wall seconds per call."""
    best = math.inf
    for _ in range(repeats):
        with Stopwatch(device) as sw:
            for _ in range(calls):
                fn()
        best = min(best, sw.wall / calls)
    return best
