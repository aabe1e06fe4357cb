"""Training-step throughput (img/s) with InfoNoise vs EDM's log-normal σ distribution, side by side.

Each measurement is a real `training.training_loop.training_loop` run (data loading, loss, backward,
Adam, EMA, σ-sampler) on the same network and data; the two σ distributions alternate within every
repetition so that machine load affects both alike. Throughput counts the steps after a warm-up,
timed through the loop's per-step progress callback; no snapshots or states are written.

Configs: `digits-demo` (the CPU demo's SongUNet, builtin:digits) and, with a GPU, `cifar10` (EDM's
CIFAR-10 DDPM++ preset on random 32x32 images of the archive format).

Examples:
  python -m scripts.bench_train --quick            # one short repetition per config (smoke check)
  python -m scripts.bench_train --reps 5 --json    # the figures for docs/BENCHMARKS.md
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
import zipfile

import click


DISTS = ('lognormal', 'infonoise')


def _random_image_zip(path: str, count: int, resolution: int, channels: int, seed: int = 0) -> None:
    """An uncompressed zip of random PNGs (the EDM archive layout)."""
    import io

    import numpy as np
    import PIL.Image
    rnd = np.random.RandomState(seed)
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        for i in range(count):
            pixels = rnd.randint(0, 256, size=(resolution, resolution, channels), dtype=np.uint8)
            buf = io.BytesIO()
            PIL.Image.fromarray(pixels if channels == 3 else pixels[:, :, 0]).save(buf, format='PNG')
            z.writestr(f'{i // 1000:05d}/img{i:08d}.png', buf.getvalue())


def _config(name: str, dist: str, batch: int | None, steps: int, device: str, workdir: str) -> dict:
    from training import options as O
    from training.dataset import open_dataset
    overrides = dict(sigma_dist=dist, seed=0, grid=0, plot=False, device=device, lr_rampup=0.0)
    if name == 'digits-demo':
        preset = O.load_preset('digits-demo')
    else:
        preset = O.load_preset('cifar10-uncond')
        data = os.path.join(workdir, 'random-32x32.zip')
        if not os.path.exists(data):
            _random_image_zip(data, 2048, 32, 3)
        overrides.update(data=data, workers=2)
    if batch is not None:
        overrides['batch'] = batch
    opts = O.resolve_options(overrides, preset)
    if dist == 'infonoise':  # adaptive from the third step on, refreshing every 20 steps as in the demo
        opts.update(infonoise_warmup=2, infonoise_refresh=20, infonoise_min_count=1)
    opts['kimg'] = steps * opts['batch'] / 1000
    ds = open_dataset(opts['data'], use_labels=False, xflip=False, cache=True)
    facts = dict(name=ds.name, resolution=ds.resolution, num_channels=ds.num_channels, label_dim=ds.label_dim,
                 has_labels=ds.has_labels, endpoint=ds.endpoint, size=len(ds), dataset_kwargs=dict(ds.dataset_kwargs))
    config = O.build_config(opts, facts)
    config.update(snapshot_ticks=None, state_dump_ticks=None, kimg_per_tick=1e9)
    return config, int(opts['threads'])


def _measure(config: dict, warmup_steps: int, device: str, run_dir: str) -> float:
    """img/s over the steps after `warmup_steps` of one training run."""
    import torch

    from training.training_loop import training_loop
    stamps: list[tuple[int, float]] = []

    def progress(cur_nimg: int, total_nimg: int) -> None:
        if device == 'cuda':
            torch.cuda.synchronize()
        stamps.append((cur_nimg, time.perf_counter()))

    training_loop(run_dir=run_dir, device=device, progress_fn=progress, **config)
    (n0, t0), (n1, t1) = stamps[1 + warmup_steps], stamps[-1]   # stamps[0] is the call before step 1
    return (n1 - n0) / (t1 - t0)


EXAMPLES = '''\b
Examples:
  python -m scripts.bench_train --quick            # one short repetition per config (smoke check)
  python -m scripts.bench_train --reps 5 --json    # the figures for docs/BENCHMARKS.md
'''


@click.command(epilog=EXAMPLES)
@click.option('--quick', is_flag=True, help='One short repetition per config (a smoke check, not a figure).')
@click.option('--reps', type=click.IntRange(min=1), default=3, show_default=True,
              help='Repetitions per σ distribution.')
@click.option('--steps', type=click.IntRange(min=3), default=40, show_default=True,
              help='Steps per run (incl. warm-up).')
@click.option('--warmup', type=click.IntRange(min=1), default=5, show_default=True, help='Untimed steps per run.')
@click.option('--config', 'configs', type=click.Choice(['auto', 'digits-demo', 'cifar10']), multiple=True,
              default=['auto'], show_default=True, help='auto: digits-demo on CPU, plus cifar10 with a GPU.')
@click.option('--batch', type=click.IntRange(min=1), help='Override the preset batch size.')
@click.option('--threads', type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads (0: the preset's, else torch's default).")
@click.option('--json', 'as_json', is_flag=True, help='Print the results as JSON.')
def main(quick: bool, reps: int, steps: int, warmup: int, configs: tuple, batch: int | None, threads: int,
         as_json: bool) -> None:
    """Measure training img/s for InfoNoise and log-normal σ sampling in one run."""
    import torch
    default_threads = torch.get_num_threads()
    logging.getLogger('training').setLevel(logging.WARNING)
    if quick:
        reps, steps, warmup = 1, 8, 3
    if warmup + 2 > steps:
        raise click.BadParameter('--steps must exceed --warmup by at least 2.')
    has_cuda = torch.cuda.is_available()
    names = [c for c in configs if c != 'auto']
    if 'auto' in configs:
        names += ['digits-demo'] + (['cifar10'] if has_cuda else [])
    if 'cifar10' in names and not has_cuda:
        raise click.ClickException('--config cifar10 needs a CUDA device.')
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in dict.fromkeys(names):
            device = 'cpu' if name == 'digits-demo' else 'cuda'
            samples: dict[str, list[float]] = {d: [] for d in DISTS}
            for rep in range(reps):
                order = DISTS if rep % 2 == 0 else DISTS[::-1]
                for dist in order:
                    config, preset_threads = _config(name, dist, batch, steps, device, workdir)
                    torch.set_num_threads(threads or preset_threads or default_threads)
                    run_dir = os.path.join(workdir, f'{name}-{dist}-{rep}')
                    samples[dist].append(_measure(config, warmup, device, run_dir))
            base = statistics.median(samples['lognormal'])
            for dist in DISTS:
                med = statistics.median(samples[dist])
                results.append(dict(config=name, device=device, batch=config['batch_size'], sigma_dist=dist,
                                    img_per_s=med, samples=samples[dist], threads=torch.get_num_threads(),
                                    overhead_pct=100.0 * (base / med - 1.0)))
    if as_json:
        click.echo(json.dumps(dict(date=time.strftime('%Y-%m-%d'), quick=quick, reps=reps, steps=steps,
                                   warmup=warmup, torch=torch.__version__, results=results), indent=2))
        return
    click.echo(f'{"config":<12} {"device":<6} {"batch":>5} {"σ-dist":<10} {"img/s":>9} {"vs lognormal":>13}')
    for r in results:
        delta = '' if r['sigma_dist'] == 'lognormal' else f'{-r["overhead_pct"]:+.1f}%'
        click.echo(f'{r["config"]:<12} {r["device"]:<6} {r["batch"]:>5} {r["sigma_dist"]:<10} {r["img_per_s"]:>9.1f} '
                   f'{delta:>13}')
    if quick:
        click.echo('(--quick: one short repetition; not a figure to record)')


if __name__ == '__main__':
    main()
