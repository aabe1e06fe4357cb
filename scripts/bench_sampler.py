"""Overhead of the InfoNoise σ-sampler: µs per training step (sample + observe + step) and µs per refresh.

Steady state: the sampler already holds a table; each timed step draws a batch of σ's, observes one loss
per σ and counts the step (no refresh). A refresh is timed separately (reduce, one device→host read,
rebuild, table upload). On CUDA the clock is read after a synchronize at the end of each timed block
only, as in training, where nothing in the sampler's hot path waits for the device.
"""
from __future__ import annotations

import json


import click
import torch

import infonoise
from torch_utils.timing import best_seconds_per_call

EXAMPLES = """\b
Examples:
  python -m scripts.bench_sampler --quick
  python -m scripts.bench_sampler --device cpu --batch 512 --json
  python -m scripts.bench_sampler --device cuda --steps 20000
"""


def bench_device(device: torch.device, batch: int, steps: int, refreshes: int, num_bins: int) -> dict:
    """Timings on one device for a sampler in steady state (table built, no refresh in the timed steps)."""
    grid = infonoise.SigmaGrid(0.002, 80.0, num_bins)
    sampler = infonoise.InfoNoiseSampler(grid, base=infonoise.LogUniformSampler(0.002, 80.0), warmup_steps=0,
                                         refresh_every=steps * 1000 + 1, buffer_size=512, min_count=1,
                                         device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    warm = infonoise.LogUniformSampler(0.002, 80.0).sample(num_bins * 64, device=device, generator=gen)
    sampler.observe(warm, 0.25 * warm ** 2 / (0.25 + warm ** 2))
    sampler.refresh_every = 1                   # one refresh now so that sampling uses the table
    if not sampler.step():
        raise RuntimeError('the benchmark sampler failed to build its table')
    sampler.refresh_every = steps * 1000 + 1
    loss = torch.rand(batch, device=device, generator=gen)

    def train_step():
        sigma = sampler.sample(batch, device=device, generator=gen)
        sampler.observe(sigma, loss)
        sampler.step()

    repeats = 5
    for _ in range(max(10, steps // 20)):       # warm-up (allocator, kernels)
        train_step()
    per_step = best_seconds_per_call(train_step, max(1, steps // repeats), repeats, device)
    per_sample = best_seconds_per_call(lambda: sampler.sample(batch, device=device, generator=gen),
                                       max(1, steps // repeats), repeats, device)
    sampler.refresh_every = 1                   # now every step() refreshes
    per_refresh = best_seconds_per_call(sampler.step, max(1, refreshes // repeats), repeats, device)
    return dict(device=str(device), batch=batch, num_bins=num_bins, threads=torch.get_num_threads(),
                us_per_step=per_step * 1e6, us_per_sample=per_sample * 1e6, us_per_refresh=per_refresh * 1e6)


@click.command(epilog=EXAMPLES, context_settings=dict(show_default=True))
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto',
              help='Where to run: auto = CPU, plus CUDA when available.')
@click.option('--batch', type=click.IntRange(min=1), default=512, help='σ draws and losses per step.')
@click.option('--bins', 'num_bins', type=click.IntRange(min=2), default=64, help='Grid bins K.')
@click.option('--steps', type=click.IntRange(min=10), default=5000, help='Timed training steps.')
@click.option('--refreshes', type=click.IntRange(min=5), default=500, help='Timed refreshes.')
@click.option('--threads', type=click.IntRange(min=1), default=1, help='torch CPU threads.')
@click.option('--quick', is_flag=True, help='Few iterations (a smoke run; figures are rough).')
@click.option('--json', 'as_json', is_flag=True, help='Print one JSON object instead of a table.')
def main(device: str, batch: int, num_bins: int, steps: int, refreshes: int, threads: int, quick: bool,
         as_json: bool) -> None:
    """Time the InfoNoise σ-sampler's per-step and per-refresh overhead."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.UsageError('--device cuda was requested but CUDA is not available on this machine.')
    torch.set_num_threads(threads)
    if quick:
        steps, refreshes = 200, 20
    devices = [torch.device('cpu')] if device in ('auto', 'cpu') else []
    if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()):
        devices.append(torch.device('cuda', torch.cuda.current_device()))
    results = [bench_device(d, batch, steps, refreshes, num_bins) for d in devices]
    if as_json:
        click.echo(json.dumps(dict(torch=torch.__version__, quick=quick, results=results), indent=2))
        return
    click.echo(f'InfoNoise σ-sampler overhead (torch {torch.__version__}{", quick" if quick else ""})')
    click.echo(f'{"device":<8} {"batch":>6} {"bins":>5} {"µs/step":>9} {"µs/sample":>10} {"µs/refresh":>11}')
    for r in results:
        click.echo(f'{r["device"]:<8} {r["batch"]:>6} {r["num_bins"]:>5} {r["us_per_step"]:>9.1f} '
                   f'{r["us_per_sample"]:>10.1f} {r["us_per_refresh"]:>11.1f}')


if __name__ == '__main__':
    main()
