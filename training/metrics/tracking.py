"""Quality vs compute during training: when to evaluate `--metrics`, and the metrics.jsonl rows.

`MetricsTracker` decides at which processed-example counts the EMA network is evaluated (every
`every_kimg` thousand examples, counted from zero so that resumed runs keep the same points, and once
at the end) and evaluates it with `training.metrics.registry.evaluate_metrics` (one deterministic
sample set per evaluation, the global random state untouched, so training stays bitwise identical
with or without metrics). Each evaluation yields one row per metric, one JSON line of metrics.jsonl:

    {"kimg": float, "kex": float, "metric": NAME, "value": float, "seconds": float}

kimg and kex coincide here (one training example is one image or one sequence); `seconds` is the
wall time of the evaluation that produced the row (sampling included; its rows share it). On discrete data
(binarised images, DNA) the samples are scored decoded (`registry.decode`: sign / argmax), as a user of a
discrete model would use them.
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import torch

from training.metrics import registry


class MetricsTracker:
    """Evaluation schedule and evaluation of `--metrics` during training."""

    def __init__(self,
        names: Sequence[str],                       # Metric names (training.metrics.registry.METRICS).
        every_kimg: float,                          # Evaluate every this many thousand examples (> 0).
        num_samples: int,                           # Samples per evaluation (>= 2).
        dataset_kwargs: Mapping[str, Any] | None,   # The run's dataset (the metrics' reference data).
        seed: int = 0,                              # First sample seed (the same latents every evaluation).
        num_steps: int = 18,                        # Heun steps on EDM's grid (NFE = 2 * num_steps - 1).
        device: torch.device | str = 'cpu',         # Where the network samples.
        decoded: bool | None = None,                # Score decoded samples (None: when the data are discrete).
        guidance: float = 1.0,                      # Classifier-free guidance weight W (1 = plain conditional).
    ) -> None:
        self.names = registry.parse_metrics(list(names))
        if not every_kimg > 0:
            raise ValueError(f'The metrics interval must be positive, got {every_kimg} kimg.')
        self.every_nimg = float(every_kimg) * 1000
        self.num_samples, self.seed, self.num_steps = int(num_samples), int(seed), int(num_steps)
        self.dataset_kwargs = None if dataset_kwargs is None else dict(dataset_kwargs)
        self.device = device
        self.decoded = registry.is_discrete(self.dataset_kwargs) if decoded is None else bool(decoded)
        self.guidance = float(guidance)
        for name in self.names:
            if self.dataset_kwargs is not None:
                registry.check_metric_applicable(name, self.dataset_kwargs)
        self._next_nimg = self.every_nimg

    def start(self, cur_nimg: int) -> None:
        """Set the next evaluation point after `cur_nimg` (a fresh run: the first multiple of the interval)."""
        self._next_nimg = (math.floor(cur_nimg / self.every_nimg + 1e-9) + 1) * self.every_nimg

    def due(self, cur_nimg: int, done: bool) -> bool:
        """Whether to evaluate now: the count passed the next point, or training ends."""
        return bool(self.names) and (done or cur_nimg >= self._next_nimg - 1e-6)

    def evaluate(self, net: torch.nn.Module, cur_nimg: int) -> list[dict]:
        """Evaluate every metric of `net` at `cur_nimg` examples; returns the metrics.jsonl rows."""
        start = time.time()
        values = registry.evaluate_metrics(self.names, net, self.dataset_kwargs, self.num_samples, seed=self.seed,
                                           device=self.device, num_steps=self.num_steps, decoded=self.decoded,
                                           guidance=self.guidance)
        seconds = time.time() - start
        self.start(cur_nimg)
        kimg = cur_nimg / 1000
        return [dict(kimg=kimg, kex=kimg, metric=name, value=float(values[name]), seconds=seconds)
                for name in self.names]
