"""Benchmark forward+backward throughput (images/s) of the network under each opt-in fast path.

Workload: one training-style step of EDMPrecond with EDM's CIFAR-10 DDPM++ network (32x32, 55.7M
parameters, augment_dim 9, dropout 0.13) in train mode -- D(x + n; sigma) on a batch with log-normal
sigma, mean-squared error against the clean batch, backward -- without the optimizer update. Each path
gets a freshly built network (same seed), warm-up steps, then timed steps with device synchronisation.

Paths: exact (reference numerics), sdpa (fused attention), channels_last, bf16 (autocast), fp16
(EDM's use_fp16; CUDA only), compile (torch.compile of the exact path; its compile time is reported
separately), combined (sdpa + channels_last + bf16).
"""
from __future__ import annotations

import contextlib
import json
import platform
import time


import click
import torch

from dnnlib.util import atomic_write
from training.fast_paths import apply_fast_paths, autocast, maybe_compile
from training.networks import EDMPrecond

CONFIGS = {
    'cifar10-ddpmpp': dict(img_resolution=32, img_channels=3, model_type='SongUNet', embedding_type='positional',
                           encoder_type='standard', decoder_type='standard', channel_mult_noise=1,
                           resample_filter=[1, 1], model_channels=128, channel_mult=[2, 2, 2], augment_dim=9,
                           dropout=0.13),
    'tiny': dict(img_resolution=16, img_channels=3, model_type='SongUNet', model_channels=16, channel_mult=[1, 2],
                 num_blocks=1, attn_resolutions=[8], augment_dim=9, dropout=0.13),
}
PATHS = ('exact', 'sdpa', 'channels_last', 'bf16', 'fp16', 'compile', 'combined')

EXAMPLES = """\b
Examples:
  python -m scripts.bench_network --quick
  python -m scripts.bench_network --device cuda --batch 128 --iters 20 --json bench_network.json
  python -m scripts.bench_network --device cpu --batch 16 --iters 3 --paths exact,sdpa,channels_last
"""


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _setup(path: str, config: str, device: torch.device):
    """Network (or compiled wrapper) and autocast context for one path."""
    torch.manual_seed(0)
    net = EDMPrecond(**CONFIGS[config]).to(device).train()
    ctx = contextlib.nullcontext
    if path == 'sdpa':
        apply_fast_paths(net, sdpa=True)
    elif path == 'channels_last':
        apply_fast_paths(net, channels_last=True)
    elif path == 'bf16':
        ctx = lambda: autocast(device, torch.bfloat16)  # noqa: E731
    elif path == 'fp16':
        net.use_fp16 = True
    elif path == 'combined':
        apply_fast_paths(net, sdpa=True, channels_last=True)
        ctx = lambda: autocast(device, torch.bfloat16)  # noqa: E731
    model = maybe_compile(net, path == 'compile')
    return net, model, ctx


def bench_path(path: str, config: str, device: torch.device, batch: int, iters: int, warmup: int) -> dict:
    """Time `iters` forward+backward steps of one path after `warmup` untimed ones."""
    record = dict(path=path, device=str(device), config=config, batch=batch, iters=iters)
    if path == 'fp16' and device.type != 'cuda':
        return dict(record, img_per_s=None, note='CUDA only')
    net, model, ctx = _setup(path, config, device)
    res, ch = net.img_resolution, net.img_channels
    gen = torch.Generator(device=device).manual_seed(1)
    y = torch.randn([batch, ch, res, res], device=device, generator=gen)
    n = torch.randn([batch, ch, res, res], device=device, generator=gen)
    sigma = (torch.randn([batch], device=device, generator=gen) * 1.2 - 1.2).exp()
    aug = torch.zeros([batch, 9], device=device)
    if path in ('channels_last', 'combined'):
        y, n = y.contiguous(memory_format=torch.channels_last), n.contiguous(memory_format=torch.channels_last)

    def step():
        with ctx():
            D = model(y + n * sigma[:, None, None, None], sigma, augment_labels=aug)
            loss = (D.float() - y).square().mean()
        loss.backward()
        for p in net.parameters():
            p.grad = None

    start = time.perf_counter()
    try:
        for _ in range(warmup):
            step()
        _sync(device)
    except Exception as exc:  # e.g. torch.compile without a working backend
        return dict(record, img_per_s=None, note=f'failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}')
    warmup_s = time.perf_counter() - start
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    elapsed = (time.perf_counter() - start) / iters
    record.update(img_per_s=batch / elapsed, ms_per_iter=1e3 * elapsed, warmup_s=warmup_s, note='')
    if device.type == 'cuda':
        record['peak_mem_gib'] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    if path == 'compile':
        record['note'] = f'incl. {warmup_s:.1f} s compile+warm-up'
    return record


def _parse_paths(ctx, param, value: str) -> list[str]:
    paths = [p.strip() for p in value.split(',') if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise click.BadParameter(f"unknown path(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(PATHS)}.")
    return paths


def _table(records: list[dict]) -> str:
    lines = ['| device | path | img/s | ms/iter | vs exact | note |', '|---|---|---:|---:|---:|---|']
    exact = {r['device']: r['img_per_s'] for r in records if r['path'] == 'exact' and r['img_per_s']}
    for r in records:
        ips, base = r['img_per_s'], exact.get(r['device'])
        cells = ['-', '-', '-'] if ips is None else [f'{ips:.1f}', f"{r['ms_per_iter']:.1f}",
                                                     f'{ips / base:.2f}x' if base else '-']
        lines.append(f"| {r['device']} | {r['path']} | {' | '.join(cells)} | {r['note']} |")
    return '\n'.join(lines)


@click.command(epilog=EXAMPLES, context_settings=dict(max_content_width=110))
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Images per step.')
@click.option('--iters', type=click.IntRange(min=1), default=10, show_default=True, help='Timed steps per path.')
@click.option('--warmup', type=click.IntRange(min=0), default=2, show_default=True, help='Untimed steps per path.')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='auto = CPU, plus CUDA when available.')
@click.option('--paths', default=','.join(PATHS), show_default=True, callback=_parse_paths,
              help='Comma-separated paths to time.')
@click.option('--quick', is_flag=True, help='Smoke run: tiny 16x16 network, batch 4, 2 timed steps, 1 warm-up.')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False, writable=True), default=None,
              help='Also write all records to this JSON file.')
def main(batch: int, iters: int, warmup: int, device: str, paths: list[str], quick: bool, json_path: str | None) -> None:
    """Forward+backward images/s of the CIFAR-10 DDPM++ network for each opt-in fast path."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine.', param_hint='--device')
    config = 'cifar10-ddpmpp'
    if quick:
        config, batch, iters, warmup = 'tiny', 4, 2, 1
    devices = [torch.device('cpu')] if device in ('auto', 'cpu') else []
    if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()):
        devices.append(torch.device('cuda'))
    records = []
    for dev in devices:
        for path in paths:
            records.append(bench_path(path, config, dev, batch, iters, warmup))
    click.echo(f'config {config}, batch {batch}, {iters} timed steps, torch {torch.__version__}, '
               f'{torch.get_num_threads()} CPU threads'
               + ''.join(f', {torch.cuda.get_device_name(d)}' for d in devices if d.type == 'cuda'))
    click.echo(_table(records))
    if json_path is not None:
        meta = dict(torch=torch.__version__, machine=platform.machine(), threads=torch.get_num_threads(),
                    gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
        with atomic_write(json_path) as f:
            f.write(json.dumps(dict(meta=meta, records=records), indent=2).encode())


if __name__ == '__main__':
    main()
