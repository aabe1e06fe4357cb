"""Overhead of the InfoNoise σ-sampler: µs per training step (sample + observe + step) and µs per refresh;
beside it, the rival schedules' µs per step (sample + importance weight + observe + step, their table rebuilt
on the device every step as in their papers) and every sampler's share of a digits-demo training step
(`--step-ms`, default the measured CPU figure in docs/BENCHMARKS.md).

Steady state: the sampler already holds a table; each timed step draws a batch of σ's, observes one loss
per σ and counts the step (no refresh). A refresh is timed separately (reduce, one device→host read,
rebuild, table upload). On CUDA the clock is read after a synchronize at the end of each timed block
only, as in training, where nothing in the sampler's hot path waits for the device.
"""
from __future__ import annotations

import json
import os

import click
import torch

import infonoise
from cli_common import check_device
from dnnlib.util import first_line, write_json
from torch_utils.timing import best_seconds_per_call

EXAMPLES = """\b
Examples:
  python -m scripts.bench_sampler --quick
  python -m scripts.bench_sampler --device cpu --batch 512 --json result.json
  python -m scripts.bench_sampler --device cuda --steps 20000
  python -m scripts.bench_sampler --device cpu --batch 128 --bins 32 --step-ms 68
"""

RIVALS = ('loss-second-moment', 'kingma-gao', 'cdcd', 'laplace')
DIGITS_DEMO_STEP_MS = 68.0   # digits-demo, batch 128, at ≈ 1,880 img/s on a quiet CPU (docs/BENCHMARKS.md)


def bench_device(device: torch.device, batch: int, steps: int, refreshes: int, num_bins: int) -> dict:
    """Timings on one device for a sampler in steady state (table built, no refresh in the timed steps)."""
    grid = infonoise.SigmaGrid(0.002, 80.0, num_bins)
    sampler = infonoise.InfoNoiseSampler(grid, base=infonoise.LogUniformSampler(0.002, 80.0), warmup_steps=0,
                                         refresh_every=1, buffer_size=512, min_count=1, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    warm = infonoise.LogUniformSampler(0.002, 80.0).sample(num_bins * 64, device=device, generator=gen)
    sampler.observe(warm, 0.25 * warm ** 2 / (0.25 + warm ** 2))
    if not sampler.step():                      # one refresh now so that sampling uses the table
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


def bench_rival(name: str, device: torch.device, batch: int, steps: int, num_bins: int,
                refresh_every: int = 1) -> float:
    """µs per training step of a rival in steady state (its table already left the uniform start), its table
    rebuilt every `refresh_every` steps."""
    if name == 'laplace':
        sampler = infonoise.LaplaceSampler()
    else:
        cls = {'loss-second-moment': infonoise.LossSecondMomentSampler, 'kingma-gao': infonoise.KingmaGaoSampler,
               'cdcd': infonoise.CDCDSampler}[name]
        sampler = cls(infonoise.SigmaGrid(0.002, 80.0, num_bins), history=10, uniform=0.001,
                      refresh_every=refresh_every, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    loss = torch.rand(batch, device=device, generator=gen)
    weight = getattr(sampler, 'importance_weight', None)

    def train_step():
        sigma = sampler.sample(batch, device=device, generator=gen)
        if weight is not None:
            weight(sigma)
        sampler.observe(sigma, loss)
        sampler.step()

    warm = infonoise.LogUniformSampler(0.002, 80.0).sample(num_bins * 64, device=device, generator=gen)
    sampler.observe(warm, 0.25 * warm ** 2 / (0.25 + warm ** 2))
    for _ in range(max(10, steps // 20)):
        train_step()
    repeats = 5
    return best_seconds_per_call(train_step, max(1, steps // repeats), repeats, device) * 1e6


@click.command(epilog=EXAMPLES, context_settings=dict(show_default=True))
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto',
              help='Where to run: auto = CPU, plus CUDA when available.')
@click.option('--batch', type=click.IntRange(min=1), default=512, help='σ draws and losses per step.')
@click.option('--bins', 'num_bins', type=click.IntRange(min=2), default=64, help='Grid bins K.')
@click.option('--steps', type=click.IntRange(min=10), default=5000, help='Timed training steps.')
@click.option('--refreshes', type=click.IntRange(min=5), default=500, help='Timed refreshes.')
@click.option('--threads', type=click.IntRange(min=1), default=1, help='torch CPU threads.')
@click.option('--quick', is_flag=True, help='Few iterations (a smoke run; figures are rough).')
@click.option('--rival-refresh', type=click.IntRange(min=1), default=1,
              help="Steps between the adaptive rivals' table rebuilds (train.py --rival-refresh).")
@click.option('--step-ms', type=click.FloatRange(min=0, min_open=True), default=DIGITS_DEMO_STEP_MS,
              help='The training step the overhead is compared with, in ms.')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False, allow_dash=True),
              help='Also write the results as one JSON object to this file (-: print it instead of the table).')
def main(device: str, batch: int, num_bins: int, steps: int, refreshes: int, threads: int, quick: bool,
         rival_refresh: int, step_ms: float, json_path: str | None) -> None:
    """Time the InfoNoise σ-sampler's per-step and per-refresh overhead, and the rival schedules' per step."""
    check_device(device)
    if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise click.BadParameter(f'the folder of {json_path} does not exist.', param_hint='--json')
    torch.set_num_threads(threads)
    if quick:
        steps, refreshes = 200, 20
    devices = [torch.device('cpu')] if device in ('auto', 'cpu') else []
    if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()):
        devices.append(torch.device('cuda', torch.cuda.current_device()))
    results = [bench_device(d, batch, steps, refreshes, num_bins) for d in devices]
    for r, d in zip(results, devices):
        r['per_step_us'] = {'infonoise': r['us_per_step'],
                            **{name: bench_rival(name, d, batch, steps, num_bins, rival_refresh) for name in RIVALS}}
        r['fraction_of_step'] = {name: us / (step_ms * 1e3) for name, us in r['per_step_us'].items()}
    record = dict(torch=torch.__version__, quick=quick, step_ms=step_ms, rival_refresh=rival_refresh, results=results)
    if json_path == '-':
        click.echo(json.dumps(record, indent=2))
        return
    if json_path:
        try:
            write_json(json_path, record, indent=2)
        except OSError as err:
            raise click.ClickException(f'Cannot write {json_path}: {first_line(err)}.') from None
    click.echo(f'InfoNoise σ-sampler overhead (torch {torch.__version__}{", quick" if quick else ""})')
    click.echo(f'{"device":<8} {"batch":>6} {"bins":>5} {"µs/step":>9} {"µs/sample":>10} {"µs/refresh":>11}')
    for r in results:
        click.echo(f'{r["device"]:<8} {r["batch"]:>6} {r["num_bins"]:>5} {r["us_per_step"]:>9.1f} '
                   f'{r["us_per_sample"]:>10.1f} {r["us_per_refresh"]:>11.1f}')
    click.echo(f'\nPer training step, every sampler (rival tables rebuilt every {rival_refresh} step(s)), '
               f'against a {step_ms:g} ms step (target < 0.5 %)')
    click.echo(f'{"device":<8} {"sampler":<20} {"µs/step":>9} {"% of step":>10}')
    for r in results:
        for name, us in r['per_step_us'].items():
            click.echo(f'{r["device"]:<8} {name:<20} {us:>9.1f} {100 * r["fraction_of_step"][name]:>9.3f}%')


if __name__ == '__main__':
    main()
