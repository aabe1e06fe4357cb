"""Throughput of a preset's network: training loop vs network-only step, each fast path, and generation.

--mode loop (the default). For one preset it measures, in interleaved repetitions (so that machine load
affects both alike):
- the network-only step: forward, backward and the optimizer step of the preset's network, set up by the
  loop's own `training.training_loop.build_run` (fast paths, autocast, optimizer), on data that already sits
  on the device (no data loading, augmentation, σ-sampler, EMA or statistics);
- the full training loop: a real `training.training_loop.training_loop` run (data, augmentation, loss,
  σ-sampler, non-finite gradient handling, optimizer, EMA, statistics), timed through its per-step
  progress callback, with no snapshots, states or sample grids written.
It prints both img/s (wall clock, and on the CPU also per CPU-second of this process), a per-phase
breakdown in ms per step (the network-only step: its own laps, which on CUDA synchronise the device; the loop:
the `torch.profiler` ranges of `training.training_loop.train_step`, read from one extra profiled run, so the
img/s come from runs without the profiler; `other` is the rest of the loop's step), the start-up of the first
loop run (imports, set-up with its profiled parts, first step) and, as its last line, `loop/network ratio: R`.

Configs: `digits-demo` (the CPU demo: SongUNet 32 ch on builtin:digits) and `cifar10` (EDM's CIFAR-10
DDPM++ preset on random 32x32 PNGs in the archive format; meant for a GPU). `--compare-sigma` adds the
loop with the other σ distribution (InfoNoise vs EDM's log-normal) to every repetition; `--sync-check`
(CUDA) counts the host synchronisations per loop step and names where they happen.

--mode paths: the network-only step under each opt-in fast path of FAST_PATHS (exact = reference numerics;
fp16 on CUDA only), one row per path with its img/s relative to exact (median over --reps).

--mode generate: images/s of generate.py's sampling path (`training.generation.sample_batch`: per-seed latents
and noise, deterministic Heun on EDM's grid) with the preset's network, randomly initialised, at --nfe (Heun:
NFE = 2N − 1) after one warm-up batch; also the share of the per-seed random streams (the cost of
batch-size-independent images). Every timing goes through `torch_utils.timing` (device synchronised at both ends
of a timed block); --json PATH writes the result record of any mode.
"""
from __future__ import annotations

import collections
import logging
import os
import statistics
import tempfile
import time
import zipfile
from typing import Any

import click

from cli_common import comma_list
from dnnlib.util import first_line, write_json
from torch_utils.timing import Stopwatch, synchronize


# Display order of the phases (the loop's profiler ranges; the network-only step uses a subset).
PHASES = ('data', 'forward', 'stats', 'sampler', 'backward', 'nonfinite', 'optimizer', 'ema', 'other')
LOOP_ONLY = ('data', 'stats', 'sampler', 'nonfinite', 'ema', 'other')   # work the network-only step does not do
STARTUP = ('startup:data', 'startup:network', 'startup:files')
PRESETS = {'digits-demo': 'digits-demo', 'cifar10': 'cifar10-uncond'}   # --config -> the train.py preset it measures


def _write_png_zip(path: str, images: Any) -> None:
    """An uncompressed zip of PNGs (the EDM archive layout) from uint8 arrays [H, W, C]."""
    from training.image_grid import png_bytes
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        for i, pixels in enumerate(images):
            z.writestr(f'{i // 1000:05d}/img{i:08d}.png', png_bytes(pixels))


def random_image_zip(path: str, count: int, resolution: int = 32, channels: int = 3, seed: int = 0) -> None:
    """`count` random RGB (or grayscale) PNGs in the archive format: speed figures only."""
    import numpy as np
    rnd = np.random.RandomState(seed)
    _write_png_zip(path, (rnd.randint(0, 256, size=(resolution, resolution, channels), dtype=np.uint8)
                          for _ in range(count)))


def digits_image_zip(path: str, resolution: int = 32) -> None:
    """scikit-learn's 1,797 digits, bicubically upscaled to RGB `resolution`² PNGs: small real data whose loss
    curves mean something, for runs of CIFAR-10-shaped networks on a machine without CIFAR-10."""
    import numpy as np
    import PIL.Image

    from training.dataset import load_digits_uint8
    images, _ = load_digits_uint8()
    big = (np.asarray(PIL.Image.fromarray(im).resize((resolution, resolution), PIL.Image.BICUBIC)) for im in images)
    _write_png_zip(path, (np.repeat(b[:, :, None], 3, axis=2) for b in big))


def build_config(name: str, dist: str | None, steps: int, device: str, workdir: str,
                 overrides: dict | None = None, fast: dict | None = None,
                 data_loader: dict | None = None, data_size: int = 2048) -> tuple[dict, dict]:
    """(training_loop config, dataset facts) for `steps` steps of preset `name` (a key of PRESETS).

    dist: σ distribution (None: the preset's); overrides: extra train.py options (batch, cbase, fp16, ...);
    fast: extra fast_paths entries (fused_adam, compile_mode); data_loader: extra data_loader_kwargs;
    data_size: random images for cifar10 (written once into `workdir`).
    """
    from training import options as O
    from training.dataset import open_dataset
    opts_given = dict(seed=0, grid=0, plot=False, device=device, lr_rampup=0.0)
    preset = O.load_preset(PRESETS[name])
    if name == 'cifar10':
        data = os.path.join(workdir, f'random-32x32-{data_size}.zip')
        if not os.path.exists(data):
            random_image_zip(data, data_size)
        opts_given.update(data=data, workers=2)
    if dist is not None:
        opts_given['sigma_dist'] = dist
    opts_given.update(overrides or {})
    opts = O.resolve_options(opts_given, preset)
    if opts['sigma_dist'] == 'infonoise':   # adaptive from the third step on, refreshing every 20 steps
        opts.update(infonoise_warmup=2, infonoise_refresh=20, infonoise_min_count=1)
    opts['kimg'] = steps * opts['batch'] / 1000
    ds = open_dataset(**O.dataset_kwargs(opts))
    facts = O.dataset_facts(ds)
    config = O.build_config(opts, facts)
    config.update(snapshot_ticks=None, state_dump_ticks=None, kimg_per_tick=1e9)
    config['fast_paths'] = dict(config['fast_paths'], **(fast or {}))
    config['data_loader_kwargs'] = dict(config['data_loader_kwargs'], **(data_loader or {}))
    return config, facts


class StepClock:
    """Throughput stamps over the steps after the warm-up ((wall, CPU) seconds between two step counts) and, with
    `laps`, the wall time per phase name between two `lap` calls over those steps (the network-only step's phases).

    On CUDA every lap synchronises the device first (so that a phase is charged with its own kernels);
    that happens only here, in the benchmark, never in normal training.
    """

    def __init__(self, device: str, warmup: int, steps: int, laps: bool = False) -> None:
        self.device, self.warmup, self.steps, self.laps = device, warmup, steps, laps
        self.done = 0
        self.watch = Stopwatch(device)
        self.totals: dict[str, float] = {}
        self.t_ready = self.t_first = None
        self._prev = time.perf_counter()

    def lap(self, name: str) -> None:
        """Charge the time since the previous lap to phase `name` (with `laps` only)."""
        if self.laps:
            synchronize(self.device)
            now = time.perf_counter()
            self.totals[name] = self.totals.get(name, 0.0) + now - self._prev
            self._prev = now

    def tick(self) -> None:
        """Call after every step."""
        self.done += 1
        if self.done == 1:
            synchronize(self.device)
            self.t_first = time.perf_counter()
        if self.done == self.warmup:
            self.watch.start()
            self.totals, self._prev = {}, time.perf_counter()   # the phases count from the steady state on
        elif self.done == self.steps:
            self.lap('other')
            self.watch.stop()

    def rates(self, images_per_step: int) -> tuple[float, float]:
        n = (self.steps - self.warmup) * images_per_step
        return n / self.watch.wall, n / max(self.watch.cpu, 1e-9)

    def per_step_ms(self) -> dict[str, float]:
        return {k: 1e3 * v / (self.steps - self.warmup) for k, v in self.totals.items()}


def build_network_run(config: dict, device: str) -> Any:
    """The loop's own `training_loop.build_run` (network, optimizer, fast paths, autocast; seed 0, the loop's TF32
    and cuDNN settings) with the data loaded in the main process."""
    import torch

    from training.fast_paths import resolve_fast_paths
    from training.training_loop import build_run, configure_backends
    dev = torch.device(device)
    configure_backends(dev, config['cudnn_benchmark'], config['deterministic'])
    torch.manual_seed(0)
    no_workers = dict(config, data_loader_kwargs=dict(config['data_loader_kwargs'], num_workers=0))
    return build_run(no_workers, batch_gpu=int(config['batch_gpu']), fast=resolve_fast_paths(config['fast_paths']),
                     device=dev)


def measure_network(config: dict, steps: int, warmup: int, device: str, timed: bool) -> dict:
    """Network-only steps on resident random data, through the network, optimizer, fast paths and autocast that
    `training_loop.build_run` sets up (seed 0): img/s (wall, CPU) and, when `timed`, ms per step per phase."""
    import torch

    from training.networks import data_shape
    dev = torch.device(device)
    batch, rounds = int(config['batch_gpu']), int(config['accumulation_rounds'])
    run = build_network_run(config, device)
    shape = [batch, *data_shape(run.net)]
    y = torch.rand(shape, device=dev) * 2 - 1
    sigma = (torch.randn([batch] + [1] * (len(shape) - 1), device=dev) * 1.2 - 1.2).exp()
    noisy = y + torch.randn_like(y) * sigma
    weight = (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2
    labels = torch.zeros([batch, run.dataset.label_dim], device=dev)
    augment_dim = int(config['network_kwargs'].get('augment_dim', 0))
    augment_labels = torch.zeros([batch, augment_dim], device=dev) if config['augment_kwargs'] else None
    clock = StepClock(device, warmup, steps, laps=timed)
    t0 = time.perf_counter()
    for _ in range(steps):
        run.optimizer.zero_grad(set_to_none=True)
        clock.lap('optimizer')
        for _ in range(rounds):
            loss = weight * (run.loss_net(noisy, sigma, labels, augment_labels=augment_labels) - y) ** 2
            clock.lap('forward')
            loss.sum().mul(1 / (batch * rounds)).backward()
            clock.lap('backward')
        run.optimizer.step()
        clock.lap('optimizer')
        clock.tick()
    wall, cpu = clock.rates(batch * rounds)
    return dict(img_per_s=wall, cpu_img_per_s=cpu, first_step_s=clock.t_first - t0, phases=clock.per_step_ms())


def _range_seconds(prof: Any, names: tuple[str, ...], cuda: bool) -> dict[str, float]:
    """Seconds spent in each named profiler range (device time on CUDA, where the ranges hold kernels)."""
    totals: dict[str, float] = {}
    for event in prof.events():
        if event.name in names:
            us = event.device_time_total if cuda and event.device_time_total > 0 else event.time_range.elapsed_us()
            totals[event.name] = totals.get(event.name, 0.0) + us / 1e6
    return totals


def measure_loop(config: dict, steps: int, warmup: int, device: str, run_dir: str, timed: bool,
                 startup: bool = False) -> dict:
    """One training_loop run: img/s after the warm-up (wall, CPU), start-up and, when `timed`, the phases of its
    steps after the warm-up (profiled, so those img/s include the profiler); `startup`: profile the set-up's
    parts (startup:data / network / files) until the first step begins."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from training.training_loop import training_loop
    cuda = torch.device(device).type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof_startup = profile(activities=activities) if startup else None
    prof_steps = profile(activities=activities) if timed else None
    clock = StepClock(device, warmup, steps)

    def progress(cur_nimg: int, total_nimg: int) -> None:
        if clock.t_ready is None:   # the first call: the set-up is over
            clock.t_ready = time.perf_counter()
            if prof_startup is not None:
                prof_startup.stop()
        else:
            if prof_steps is not None and clock.done + 1 == warmup:
                prof_steps.start()   # before the clock's start stamp
            clock.tick()
            if prof_steps is not None and clock.done == steps:
                prof_steps.stop()    # after its end stamp

    if prof_startup is not None:
        prof_startup.start()
    t0 = time.perf_counter()
    training_loop(run_dir=run_dir, device=device, progress_fn=progress, **config)
    wall, cpu = clock.rates(int(config['batch_size']))
    phases = {}
    if prof_steps is not None:
        n = steps - warmup
        phases = {k: 1e3 * v / n for k, v in _range_seconds(prof_steps, PHASES, cuda).items()}
        phases['other'] = 1e3 * clock.watch.wall / n - sum(phases.values())
    return dict(img_per_s=wall, cpu_img_per_s=cpu, setup_s=clock.t_ready - t0,
                first_step_s=clock.t_first - clock.t_ready, phases=phases,
                startup=_range_seconds(prof_startup, STARTUP, False) if prof_startup is not None else {})


def run_benchmark(name: str, device: str, reps: int, steps: int, warmup: int, workdir: str,
                  overrides: dict | None = None, fast: dict | None = None, data_loader: dict | None = None,
                  compare_sigma: bool = False, imports_s: float | None = None,
                  breakdown: bool = True, sync_check: bool = False, data_size: int = 2048) -> dict:
    """Interleaved network-only and loop measurements of one preset; see the module docstring.

    imports_s: seconds from process start until torch and the training modules were imported (reported);
    breakdown: one extra profiled loop run for the loop's phases (and on CUDA one extra synchronised network-only
    run; on the CPU the network-only laps are free);
    sync_check: on CUDA, one extra loop run counting host synchronisations per step.
    """
    import torch
    cuda = torch.device(device).type == 'cuda'
    extra = dict(overrides=overrides, fast=fast, data_loader=data_loader, data_size=data_size)
    config, facts = build_config(name, None, steps, device, workdir, **extra)
    sampler = (config['sigma_sampler_kwargs'] or {}).get('class_name', '')
    dist = 'infonoise' if sampler.endswith('InfoNoiseSampler') else 'lognormal'
    other = 'lognormal' if dist == 'infonoise' else 'infonoise'
    configs = {dist: config}
    if compare_sigma:
        configs[other] = build_config(name, other, steps, device, workdir, **extra)[0]
    samples: dict[str, list[dict]] = {'network': [], **{f'loop:{d}': [] for d in configs}}
    for rep in range(reps):
        kinds = ['loop', 'network'] if rep % 2 == 0 else ['network', 'loop']   # rep 0: the loop starts cold
        for kind in kinds:
            if kind == 'network':
                samples['network'].append(measure_network(config, steps, warmup, device, timed=not cuda))
                continue
            for d, cfg in (configs.items() if rep % 2 == 0 else reversed(configs.items())):
                run_dir = os.path.join(workdir, f'{name}-{d}-{rep}')
                samples[f'loop:{d}'].append(measure_loop(cfg, steps, warmup, device, run_dir, timed=False,
                                                         startup=rep == 0 and d == dist))
    breakdown_net, breakdown_loop, profiled = {}, {}, None
    if not cuda:   # the laps of the timed runs themselves, median per phase
        breakdown_net = {k: statistics.median(s['phases'].get(k, 0.0) for s in samples['network'])
                         for k in {k for s in samples['network'] for k in s['phases']}}
    elif breakdown:   # the network-only phases from one extra synchronised run
        breakdown_net = measure_network(config, steps, warmup, device, timed=True)['phases']
    if breakdown:
        profiled = measure_loop(config, steps, warmup, device, os.path.join(workdir, 'timed'), True)
        breakdown_loop = profiled['phases']
    syncs = count_host_syncs(config, steps, warmup, device, os.path.join(workdir, 'syncs')) \
        if cuda and sync_check else None
    first = samples[f'loop:{dist}'][0]
    med = {k: statistics.median(s['img_per_s'] for s in v) for k, v in samples.items()}
    med_cpu = {k: statistics.median(s['cpu_img_per_s'] for s in v) for k, v in samples.items()}
    return dict(
        config=name, device=device, sigma_dist=dist, batch=int(config['batch_size']),
        threads=torch.get_num_threads(), reps=reps, steps=steps, warmup=warmup,
        fast_paths=dict(config['fast_paths']), use_fp16=bool(config['network_kwargs'].get('use_fp16')),
        network_img_per_s=med['network'], loop_img_per_s=med[f'loop:{dist}'],
        ratio=med[f'loop:{dist}'] / med['network'],
        cpu_ratio=med_cpu[f'loop:{dist}'] / med_cpu['network'] if not cuda else None,
        network_cpu_img_per_s=med_cpu['network'], loop_cpu_img_per_s=med_cpu[f'loop:{dist}'],
        other_sigma=({'sigma_dist': other, 'img_per_s': med[f'loop:{other}'],
                      'samples': [s['img_per_s'] for s in samples[f'loop:{other}']]} if compare_sigma else None),
        samples={k: [s['img_per_s'] for s in v] for k, v in samples.items()},
        phases_network_ms=breakdown_net, phases_loop_ms=breakdown_loop,
        profiled_loop_img_per_s=profiled['img_per_s'] if profiled is not None else None,
        loop_only_ms=sum(breakdown_loop.get(k, 0.0) for k in LOOP_ONLY),
        startup=dict(imports_s=imports_s, setup_s=first['setup_s'],
                     first_step_s=first['first_step_s'], parts_s=first['startup'],
                     network_first_step_s=samples['network'][0]['first_step_s'], data_size=facts['size']),
        host_syncs=syncs,
        peak_gpu_gib=torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
    )


def count_host_syncs(config: dict, steps: int, warmup: int, device: str, run_dir: str) -> dict:
    """Host synchronisations in the loop's steps after the warm-up (CUDA; torch's sync debug mode).

    Returns dict(per_step=float, where={'file:line': count}) over the steps after `warmup`.
    """
    import warnings

    import torch

    from training.training_loop import training_loop
    marks: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')

        def progress(cur_nimg: int, total_nimg: int) -> None:
            marks.append(len(caught))
        torch.cuda.set_sync_debug_mode('warn')
        try:
            training_loop(run_dir=run_dir, device=device, progress_fn=progress, **config)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    window = [w for w in caught[marks[warmup]:marks[-1]] if 'synchroniz' in str(w.message)]
    where = collections.Counter(f'{os.path.relpath(w.filename)}:{w.lineno}' for w in window)
    return dict(per_step=len(window) / max(len(marks) - 1 - warmup, 1), where=dict(where.most_common()))


# ---------------------------------------------------------------------------------------------------
# --mode paths: the network-only step under each fast path.

FAST_PATHS = {'exact': {}, 'sdpa': dict(sdpa=True), 'channels_last': dict(channels_last=True), 'bf16': dict(bf16=True),
              'fp16': dict(fp16=True), 'compile': dict(compile=True),
              'combined': dict(sdpa=True, channels_last=True, bf16=True)}


def run_paths(name: str, device: str, reps: int, steps: int, warmup: int, workdir: str, paths: list[str],
              overrides: dict | None = None, fast: dict | None = None, data_size: int = 2048) -> dict:
    """Median img/s of `measure_network` per fast path over `reps` interleaved repetitions; one record per path."""
    import torch
    samples: dict[str, list[dict]] = {p: [] for p in paths}
    notes: dict[str, str] = {} if device == 'cuda' else {'fp16': 'CUDA only'}
    batch = None
    for _ in range(reps):
        for path in paths:
            if path in notes:
                continue
            config, _ = build_config(name, None, steps, device, workdir, dict(overrides or {}, **FAST_PATHS[path]),
                                     fast, data_size=data_size)
            batch = int(config['batch_size'])
            try:
                samples[path].append(measure_network(config, steps, warmup, device, timed=False))
            except Exception as exc:  # e.g. torch.compile without a working C++ toolchain
                notes[path] = f'failed: {type(exc).__name__}: {first_line(exc)[:80]}'
    records = []
    for path in paths:
        rates = [s['img_per_s'] for s in samples[path]]
        rate = statistics.median(rates) if rates and path not in notes else None
        records.append(dict(path=path, img_per_s=rate, samples=rates, note=notes.get(path, ''),
                            ms_per_step=None if rate is None else 1e3 * batch / rate,
                            first_step_s=samples[path][0]['first_step_s'] if rate is not None else None))
    return dict(mode='paths', config=name, device=device, batch=batch, reps=reps, steps=steps, warmup=warmup,
                threads=torch.get_num_threads(), records=records)


def format_paths(r: dict) -> list[str]:
    """A Markdown table: one row per fast path, its img/s relative to exact."""
    exact = next((x['img_per_s'] for x in r['records'] if x['path'] == 'exact'), None)
    lines = [f'{r["config"]} on {r["device"]}: network-only step (forward, backward, optimizer) per fast path, batch '
             f'{r["batch"]}, {r["threads"]} thread(s), {r["reps"]} rep(s) x {r["steps"]} steps ({r["warmup"]} warm-up)',
             '| path | img/s | ms/step | vs exact | note |', '|---|---:|---:|---:|---|']
    for x in r['records']:
        rate = x['img_per_s']
        cells = ['-', '-', '-'] if rate is None else [f'{rate:.1f}', f'{x["ms_per_step"]:.1f}',
                                                      f'{rate / exact:.2f}x' if exact else '-']
        note = x['note'] or (f'first step {x["first_step_s"]:.1f} s (compilation)' if x['path'] == 'compile' else '')
        lines.append(f'| {x["path"]} | {" | ".join(cells)} | {note} |')
    return lines


# ---------------------------------------------------------------------------------------------------
# --mode generate: generate.py's sampling path.

def run_generate(name: str, device: str, reps: int, nfe: int, batch: int, workdir: str,
                 overrides: dict | None = None, data_size: int = 2048) -> dict:
    """Images/s of `generation.sample_batch` at `nfe` (Heun, NFE = 2N − 1) after one warm-up batch."""
    import torch

    from training import generation
    from training.networks import data_shape
    num_steps = (nfe + 1) // 2
    config, _ = build_config(name, None, 1, device, workdir, overrides, data_size=data_size)
    net = build_network_run(config, device).net.eval().requires_grad_(False)
    opts = generation.SamplerOptions(num_steps=num_steps)
    sigma_steps = generation.resolve_sigma_steps(net, opts)
    seeds = list(range(batch))
    generation.sample_batch(net, seeds, opts, sigma_steps, device=device)   # warm-up
    with Stopwatch(device) as sampling:
        for r in range(reps):
            generation.sample_batch(net, [s + (r + 1) * batch for s in seeds], opts, sigma_steps, device=device)
    rnd = generation.SeedRandom(seeds, device)
    x = torch.zeros([batch, *data_shape(net)], dtype=torch.float64, device=device)
    with Stopwatch(device) as streams:
        for _ in range(num_steps + 1):   # the latents and one draw per step
            rnd.randn_like(x)
    per_batch = sampling.wall / reps
    return dict(mode='generate', config=name, device=device, nfe=nfe, num_steps=num_steps, batch=batch, reps=reps,
                threads=torch.get_num_threads(), use_fp16=bool(getattr(net, 'use_fp16', False)),
                params=sum(p.numel() for p in net.parameters()), s_per_batch=per_batch, img_per_s=batch / per_batch,
                rng_s_per_batch=streams.wall, rng_share=streams.wall / per_batch)


def format_generate(r: dict) -> list[str]:
    return [f'{r["config"]} on {r["device"]} ({r["params"]:,} parameters{", fp16" if r["use_fp16"] else ""}, '
            f'{r["threads"]} thread(s)): NFE {r["nfe"]} ({r["num_steps"]} Heun levels), batch {r["batch"]}, '
            f'{r["reps"]} timed batch(es)',
            f'{r["img_per_s"]:.2f} img/s ({r["s_per_batch"]:.3f} s per batch; per-seed random streams '
            f'{100 * r["rng_share"]:.1f}%)']


def _process_start() -> float | None:
    try:
        import psutil
        return psutil.Process(os.getpid()).create_time()
    except Exception:  # psutil missing or restricted: imports are not reported
        return None


def format_report(r: dict) -> list[str]:
    """The human-readable lines of one `run_benchmark` result, ending with the ratio line."""
    cpu = r['cpu_ratio'] is not None
    paths = [k for k, v in r['fast_paths'].items() if v] + (['fp16'] if r['use_fp16'] else [])
    lines = [f'{r["config"]} on {r["device"]}: batch {r["batch"]}, {r["threads"]} thread(s), {r["reps"]} rep(s) x '
             f'{r["steps"]} steps ({r["warmup"]} warm-up), paths: {", ".join(map(str, paths)) or "exact"}',
             f'{"":<28}{"img/s":>10}' + (f'{"img/CPU-s":>11}' if cpu else '') + '   samples (img/s)']

    def row(label: str, wall: float, cpu_rate: float | None, samples: list[float]) -> str:
        rate = '' if not cpu else f'{cpu_rate:>11.1f}' if cpu_rate is not None else f'{"":>11}'
        return f'{label:<28}{wall:>10.1f}{rate}   ' + ' '.join(f'{s:.1f}' for s in samples)
    lines.append(row('network-only step', r['network_img_per_s'], r['network_cpu_img_per_s'],
                     r['samples']['network']))
    lines.append(row(f'training loop ({r["sigma_dist"]})', r['loop_img_per_s'], r['loop_cpu_img_per_s'],
                     r['samples'][f'loop:{r["sigma_dist"]}']))
    o = r['other_sigma']
    if o is not None:
        delta = 100.0 * (o['img_per_s'] / r['loop_img_per_s'] - 1)
        lines.append(row(f'training loop ({o["sigma_dist"]})', o['img_per_s'], None, o['samples'])
                     + f'   ({delta:+.1f}% vs {r["sigma_dist"]})')
    net, loop = r['phases_network_ms'], r['phases_loop_ms']
    sync = ' (loop: one profiled run; network: synchronised laps in a separate run)' if r['device'] != 'cpu' \
        else ' (loop: one profiled run)'
    a, b = sum(net.values()), sum(loop.values())
    if net or loop:
        lines.append(f'per-step phases, ms{sync}:{"network":>10}{"loop":>10}{"loop-net":>10}')
        cells = [(k, net.get(k, 0.0), loop.get(k, 0.0)) for k in PHASES if k in net or k in loop] + [('total', a, b)]
        lines += [f'  {k:<26}{x:>10.2f}{y:>10.2f}{y - x:>+10.2f}' for k, x, y in cells]
    if a > 0 and loop:
        only = r['loop_only_ms']
        lines.append(f'loop-only phases ({", ".join(LOOP_ONLY)}): {only:.2f} ms/step = {100 * only / a:.2f}% of the '
                     f'network step (alone they would give a ratio of {a / (a + only):.3f})')
    s = r['startup']
    parts = ', '.join(f'{k.split(":")[1]} {v:.2f} s' for k, v in s['parts_s'].items())
    imports = s['imports_s'] or 0.0
    lines.append('start-up of the first loop run: '
                 + (f'imports {imports:.2f} s, ' if s['imports_s'] is not None else '')
                 + f'set-up {s["setup_s"]:.2f} s' + (f' ({parts})' if parts else '')
                 + f', first step {s["first_step_s"]:.2f} s -> {imports + s["setup_s"] + s["first_step_s"]:.2f} s '
                 f'to the end of the first step (network-only first step: {s["network_first_step_s"]:.2f} s; '
                 f'{s["data_size"]} dataset items)')
    if r.get('peak_gpu_gib') is not None:
        lines.append(f'peak GPU memory: {r["peak_gpu_gib"]:.2f} GiB')
    if r.get('host_syncs') is not None:
        h = r['host_syncs']
        lines.append(f'host synchronisations per loop step: {h["per_step"]:.2f}'
                     + ''.join(f'; {k} x{v}' for k, v in list(h['where'].items())[:6]))
    if cpu:
        lines.append(f'loop/network ratio per CPU-second: {r["cpu_ratio"]:.3f}')
    lines.append(f'loop/network ratio: {r["ratio"]:.3f}')
    return lines


EXAMPLES = '''\b
Examples:
  python -m scripts.bench_train --quick                              # smoke check (not a figure)
  python -m scripts.bench_train --config digits-demo --reps 3 --json out.json
  python -m scripts.bench_train --config cifar10 --bf16 --compile --fused-adam --json bf16c.json
  python -m scripts.bench_train --mode paths --config cifar10 --batch 128 --json paths.json
  python -m scripts.bench_train --mode generate --config cifar10 --nfe 35 --batch 256 --json generate.json
'''


@click.command(epilog=EXAMPLES)
@click.option('--mode', type=click.Choice(['loop', 'paths', 'generate']), default='loop', show_default=True,
              help='loop: training loop vs network-only step; paths: the network-only step per fast path; '
                   "generate: generate.py's sampling path.")
@click.option('--config', 'name', type=click.Choice(['auto', 'digits-demo', 'cifar10']), default='auto',
              show_default=True, help='Preset to measure (auto: cifar10 with a GPU, else digits-demo).')
@click.option('--quick', is_flag=True,
              help='One short repetition (a smoke check, not a figure; generate: one batch of 8).')
@click.option('--reps', type=click.IntRange(min=1), default=3, show_default=True,
              help='Interleaved repetitions of each measurement.')
@click.option('--steps', type=click.IntRange(min=3), default=30, show_default=True,
              help='Steps per measurement, warm-up included.')
@click.option('--warmup', type=click.IntRange(min=1), default=5, show_default=True,
              help='Untimed steps at the start of each measurement.')
@click.option('--batch', type=click.IntRange(min=1), help="Override the preset's batch size.")
@click.option('--cbase', type=click.IntRange(min=1), help="Override the preset's channel multiplier.")
@click.option('--threads', type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads (0: the preset's, else torch's default).")
@click.option('--bf16', is_flag=True, help='bfloat16 autocast.')
@click.option('--fp16', is_flag=True, help="EDM's fp16 network path.")
@click.option('--compile', 'compile_', is_flag=True, help='torch.compile the network.')
@click.option('--compile-mode', type=click.Choice(['default', 'reduce-overhead', 'max-autotune',
                                                   'max-autotune-no-cudagraphs']),
              help='torch.compile mode (reduce-overhead uses CUDA graphs).')
@click.option('--sdpa', is_flag=True, help='Fused attention.')
@click.option('--channels-last', is_flag=True, help='Channels-last layout.')
@click.option('--fused-adam', is_flag=True, help='The fused Adam kernel.')
@click.option('--loader', type=click.Choice(['auto', 'resident', 'dataloader']), default='auto', show_default=True,
              help="The loop's data path (auto: resident when the cached dataset fits).")
@click.option('--compare-sigma', is_flag=True, help='Also run the loop with the other σ distribution.')
@click.option('--breakdown/--no-breakdown', default=True, show_default=True,
              help='One extra profiled loop run (and on CUDA a synchronised network-only run) for the phases.')
@click.option('--sync-check', is_flag=True, help='On CUDA, count host synchronisations per loop step (one extra run).')
@click.option('--data-size', type=click.IntRange(min=16), default=2048, show_default=True,
              help='Random images of the cifar10 config (50000 = CIFAR-10 for the start-up figure).')
@click.option('--paths', default=','.join(FAST_PATHS), show_default=True, callback=comma_list(FAST_PATHS),
              help='--mode paths: comma-separated fast paths to time.')
@click.option('--nfe', type=click.IntRange(min=1),
              help='--mode generate: network evaluations per sample (Heun: 2N − 1, odd)  [default: 35; --quick: 7]')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False, writable=True),
              help='Also write the results to this JSON file.')
def main(mode: str, name: str, quick: bool, reps: int, steps: int, warmup: int, batch: int | None, cbase: int | None,
         threads: int, bf16: bool, fp16: bool, compile_: bool, compile_mode: str | None, sdpa: bool,
         channels_last: bool, fused_adam: bool, loader: str, compare_sigma: bool, breakdown: bool, sync_check: bool,
         data_size: int, paths: tuple[str, ...], nfe: int | None, json_path: str | None) -> None:
    """Throughput of a preset's network: loop vs network-only step, each fast path, or generation."""
    import importlib

    import torch
    importlib.import_module('training.training_loop')   # counted in the start-up's imports
    started = _process_start()
    imports_s = time.time() - started if started is not None else None
    logging.getLogger('training').setLevel(logging.WARNING)
    if quick:
        reps, steps, warmup = 1, 8, 3
    nfe = nfe or (7 if quick else 35)
    speed_flags = dict(bf16=bf16, fp16=fp16, compile=compile_, sdpa=sdpa, channels_last=channels_last)
    if mode == 'paths' and any(speed_flags.values()):
        raise click.BadParameter('--mode paths times each fast path itself; choose them with --paths instead of '
                                 '--bf16/--fp16/--compile/--sdpa/--channels-last.', param_hint='--mode')
    if mode == 'generate' and any(v for k, v in speed_flags.items() if k != 'fp16'):
        raise click.BadParameter('--mode generate takes --fp16 only among the fast paths.', param_hint='--mode')
    if mode == 'generate' and nfe % 2 == 0:
        raise click.BadParameter(f'Heun sampling has an odd NFE (2N − 1); {nfe} cannot be reached.',
                                 param_hint='--nfe')
    if warmup + 2 > steps:
        raise click.BadParameter('--steps must exceed --warmup by at least 2.', param_hint='--steps')
    if bf16 and fp16:
        raise click.BadParameter('--bf16 and --fp16 are alternatives; choose one.', param_hint='--fp16')
    if compile_mode is not None and not compile_:
        raise click.BadParameter('--compile-mode needs --compile.', param_hint='--compile-mode')
    cuda = torch.cuda.is_available()
    if name == 'auto':
        name = 'cifar10' if cuda else 'digits-demo'
    device = 'cuda' if cuda and name == 'cifar10' else 'cpu'
    if name == 'cifar10' and not cuda:
        raise click.ClickException('--config cifar10 needs a CUDA device.')
    from training.options import load_preset
    torch.set_num_threads(threads or int(load_preset(PRESETS[name])['options'].get('threads', 0))
                          or torch.get_num_threads())
    overrides = {k: v for k, v in dict(batch=batch, cbase=cbase).items() if v is not None}
    overrides.update(speed_flags)
    fast = dict(fused_adam=fused_adam, compile_mode=compile_mode)
    data_loader = dict(resident=None if loader == 'auto' else loader == 'resident')
    with tempfile.TemporaryDirectory() as workdir:
        if mode == 'paths':
            result = run_paths(name, device, reps, steps, warmup, workdir, list(paths), overrides, fast, data_size)
        elif mode == 'generate':
            result = run_generate(name, device, reps, nfe, 8 if quick else batch or 64, workdir,
                                  dict(fp16=fp16, **({'cbase': cbase} if cbase else {})), data_size)
        else:
            result = run_benchmark(name, device, reps, steps, warmup, workdir, overrides, fast, data_loader,
                                   compare_sigma, imports_s, breakdown, sync_check, data_size)
    result.update(date=time.strftime('%Y-%m-%d %H:%M'), torch=torch.__version__, quick=quick, loader=loader,
                  device_name=torch.cuda.get_device_name() if device == 'cuda' else 'cpu')
    if json_path:
        write_json(json_path, result, indent=2)
    lines = {'paths': format_paths, 'generate': format_generate}.get(mode, format_report)(result)
    if quick:   # the loop's report ends with its ratio line
        lines.insert(len(lines) - (mode == 'loop'), '(--quick: one short repetition; not a figure to record)')
    click.echo('\n'.join(lines))


if __name__ == '__main__':
    main()
