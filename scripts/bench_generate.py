"""Benchmark generation throughput (images/s) at a given NFE, on CPU and, when available, CUDA.

Times the exact path generate.py runs per batch (`training.generation.sample_batch`: per-seed latents
and noise, deterministic Heun on the EDM grid, NFE = 2·steps − 1) on a randomly initialised network of
a chosen size, after one warm-up batch, with device synchronisation around the timed region. Also
reports the time the per-seed random streams take on their own, i.e. the cost of batch-size-independent
images.
"""
from __future__ import annotations

import json
import platform
import time


import click
import torch

from training import generation
from training.networks import EDMPrecond, data_shape

# Network sizes: EDM's CIFAR-10 DDPM++ (55.7M parameters) and a tiny one for smoke runs.
ARCHS = {
    'cifar10-ddpmpp': dict(img_resolution=32, img_channels=3, model_type='SongUNet', model_channels=128,
                           channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16], augment_dim=9, dropout=0.13),
    'tiny': dict(img_resolution=8, img_channels=3, model_type='SongUNet', model_channels=16, channel_mult=[1, 2],
                 num_blocks=1, attn_resolutions=[], dropout=0),
}

EXAMPLES = """\b
Examples:
  python -m scripts.bench_generate --quick
  python -m scripts.bench_generate --arch cifar10-ddpmpp --steps 18 --batch 256 --device cuda --json
"""


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def bench_device(arch: str, device: torch.device, steps: int, batch: int, reps: int, fp16: bool) -> dict:
    """Throughput of `sample_batch` on one device; returns a result record."""
    torch.manual_seed(0)
    net = EDMPrecond(**ARCHS[arch], use_fp16=fp16 and device.type == 'cuda').eval().requires_grad_(False).to(device)
    opts = generation.SamplerOptions(num_steps=steps)
    sigma_steps = generation.resolve_sigma_steps(net, opts)
    seeds = list(range(batch))
    generation.sample_batch(net, seeds, opts, sigma_steps, device=device)   # warm-up
    _sync(device)
    start = time.perf_counter()
    for r in range(reps):
        generation.sample_batch(net, [s + (r + 1) * batch for s in seeds], opts, sigma_steps, device=device)
    _sync(device)
    elapsed = (time.perf_counter() - start) / reps

    rnd = generation.SeedRandom(seeds, device)
    shape = [batch, *data_shape(net)]
    x = torch.zeros(shape, dtype=torch.float64, device=device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps + 1):            # latents + one draw per step
        rnd.randn_like(x)
    _sync(device)
    rng_s = time.perf_counter() - start
    return dict(arch=arch, device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == 'cuda'
                else platform.processor() or platform.machine(), threads=torch.get_num_threads(), steps=steps,
                nfe=2 * steps - 1, batch=batch, reps=reps, fp16=bool(fp16 and device.type == 'cuda'),
                s_per_batch=elapsed, img_per_s=batch / elapsed, rng_s_per_batch=rng_s,
                rng_share=rng_s / elapsed, params=sum(p.numel() for p in net.parameters()))


@click.command(epilog=EXAMPLES, context_settings=dict(max_content_width=110))
@click.option('--arch', type=click.Choice(sorted(ARCHS)), default='cifar10-ddpmpp', show_default=True)
@click.option('--steps', type=click.IntRange(min=1), default=18, show_default=True,
              help='σ steps (NFE = 2·steps − 1).')
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True)
@click.option('--reps', type=click.IntRange(min=1), default=3, show_default=True, help='Timed batches.')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='auto = CPU, plus CUDA when available.')
@click.option('--fp16', is_flag=True, help='Run the network in float16 on CUDA.')
@click.option('--quick', is_flag=True, help='Smoke run: tiny network, 4 steps, batch 8, 2 timed batches.')
@click.option('--json', 'as_json', is_flag=True, help='Print one JSON record per device instead of a table.')
def main(arch: str, steps: int, batch: int, reps: int, device: str, fp16: bool, quick: bool, as_json: bool) -> None:
    """Images per second of generate.py's sampling path at a given NFE."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine.', param_hint='--device')
    if quick:
        arch, steps, batch, reps = 'tiny', 4, 8, 2
    devices = [torch.device('cpu')] if device in ('auto', 'cpu') else []
    if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()):
        devices.append(torch.device('cuda'))
    for dev in devices:
        record = bench_device(arch, dev, steps, batch, reps, fp16)
        if as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(f"{record['arch']:>15} {record['device']:>5} NFE {record['nfe']:>3} batch {record['batch']:>4}: "
                       f"{record['img_per_s']:9.2f} img/s ({record['s_per_batch']:.3f} s/batch; per-seed RNG "
                       f"{100 * record['rng_share']:.1f}%)")


if __name__ == '__main__':
    main()
