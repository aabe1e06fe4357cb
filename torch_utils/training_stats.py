"""Scalar training statistics collected across processes with one all-reduce per tick.

`report(name, value)` adds the count, sum and sum of squares of `value` to a per-name counter on the
value's own device: no host synchronisation, no communication. `Collector.update()` (once per tick)
moves every pending counter into running totals with a single all-reduce over all ranks, after which
`mean(name)`, `std(name)` and `num(name)` describe all scalars reported since the previous update, pooled
over ranks.

Contract (as in EDM): every rank must have reported every name the collector tracks at least once
(`report(name, [])` registers a name without data), because the all-reduce sends one row per name in
sorted-name order. A mismatch is detected (a checksum of the name list travels in the same all-reduce)
whenever the ranks' name lists have the same length.
"""
from __future__ import annotations

import math
import re
import zlib
from typing import Any

import torch

from dnnlib.util import EasyDict
from . import distributed

_COUNTER_DTYPE = torch.float64
_NUM_MOMENTS = 3  # count, sum, sum of squares

_pending: dict[str, dict[torch.device, torch.Tensor]] = {}   # name -> device -> moments since the last sync
_totals: dict[str, torch.Tensor] = {}                         # name -> cumulative moments (CPU, all ranks)


def report(name: str, value: Any) -> Any:
    """Accumulate the scalars in `value` (tensor, array, list or number) under `name`; returns `value`."""
    counters = _pending.setdefault(name, {})
    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().reshape(-1).to(_COUNTER_DTYPE)
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
    counter = counters.get(moments.device)
    if counter is None:
        counters[moments.device] = moments
    else:
        counter.add_(moments)
    return value


def report0(name: str, value: Any) -> Any:
    """Like report(), but only rank 0's scalars count (other ranks register the name with no data)."""
    report(name, value if distributed.get_rank() == 0 else [])
    return value


def _sync(names: list[str]) -> dict[str, torch.Tensor]:
    """Fold pending counters of `names` into the totals (one all-reduce when distributed)."""
    if not names:
        return {}
    device = distributed.comm_device()
    rows = torch.zeros([len(names) + 1, _NUM_MOMENTS], dtype=_COUNTER_DTYPE, device=device)
    for row, name in enumerate(names):
        for counter in _pending.get(name, {}).values():
            rows[row].add_(counter.to(device))
            counter.zero_()
    world_size = distributed.get_world_size()
    if world_size > 1:
        checksum = float(zlib.crc32('\n'.join(names).encode('utf-8')) % (1 << 20))
        rows[-1, 0] = checksum
        rows[-1, 1] = checksum * checksum
        distributed.all_reduce_(rows, 'sum')
    rows = rows.cpu()
    if world_size > 1:
        total, total_sq = float(rows[-1, 0]), float(rows[-1, 1])
        if total * total != world_size * total_sq:  # equality iff every rank sent the same checksum
            raise RuntimeError('training_stats: ranks reported different sets of statistic names; '
                               'call report(name, []) on every rank for every name.')
    for row, name in enumerate(names):
        _totals.setdefault(name, torch.zeros([_NUM_MOMENTS], dtype=_COUNTER_DTYPE)).add_(rows[row])
    return {name: _totals[name] for name in names}


class Collector:
    """Averages of reported statistics over the interval between the last two update() calls.

    regex: only names that fully match are collected (None = all). A statistic that received no scalars
    during an interval keeps its previous averages instead of becoming empty.
    """

    def __init__(self, regex: str | None = None) -> None:
        self._regex = re.compile(regex if regex is not None else '.*')
        self._seen: dict[str, torch.Tensor] = {}    # totals at the last update
        self._moments: dict[str, torch.Tensor] = {}  # moments of the last interval
        for name, total in _totals.items():          # start from "now": earlier reports do not count
            if self._regex.fullmatch(name):
                self._seen[name] = total.clone()

    def names(self) -> list[str]:
        """Sorted names of all reported statistics that match the regex."""
        return sorted(name for name in _pending if self._regex.fullmatch(name))

    def update(self) -> None:
        """Close the current interval: one all-reduce over ranks, then the averages describe it."""
        for name, total in _sync(self.names()).items():
            previous = self._seen.get(name)
            delta = total - previous if previous is not None else total.clone()
            self._seen[name] = total.clone()
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _delta(self, name: str) -> torch.Tensor:
        return self._moments.get(name, torch.zeros([_NUM_MOMENTS], dtype=_COUNTER_DTYPE))

    def num(self, name: str) -> int:
        """Number of scalars reported under `name` in the last interval (all ranks)."""
        return int(self._delta(name)[0])

    def mean(self, name: str) -> float:
        """Mean of the last interval's scalars (NaN when there were none)."""
        count, total, _ = self._delta(name).tolist()
        return total / count if count else float('nan')

    def std(self, name: str) -> float:
        """Population standard deviation of the last interval's scalars (NaN when there were none)."""
        count, total, total_sq = self._delta(name).tolist()
        if count == 0 or not math.isfinite(total):
            return float('nan')
        if count == 1:
            return 0.0
        mean = total / count
        return math.sqrt(max(total_sq / count - mean * mean, 0.0))

    def as_dict(self) -> EasyDict:
        """{name: EasyDict(num, mean, std)} for every collected name."""
        return EasyDict({name: EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                         for name in self.names()})


def reset() -> None:
    """Forget every statistic (for tests and for starting a fresh run in the same process)."""
    _pending.clear()
    _totals.clear()
