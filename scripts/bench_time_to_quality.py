"""Time-to-quality at CPU scale: the analogue of the paper's Table 1 on scikit-learn's 8x8 digits.

Two settings, each trained from the `digits-demo` preset (configs/digits-demo.json) with a --kimg budget,
several seeds per schedule; only the σ distribution (and, for the EDM transfer baseline, the loss weight)
differs between the runs of a setting:

    digits   builtin:digits, EDM objective (w_EDM):
               edm          log-normal σ (EDM's P_mean = -1.2, P_std = 1.2)
               loguniform   log-uniform σ on [0.002, 80]
               infonoise    InfoNoise (the preset's knobs; warm-up on the log-normal)
    binary   builtin:digits-binary (discrete endpoint), allocation-controlled w = 1:
               loguniform   log-uniform σ, w = 1
               infonoise    InfoNoise, w = 1 (discrete pivot rule, log-uniform warm-up)
               edm          the EDM transfer baseline as in the paper: log-normal σ and w_EDM
               lognormal-w1 (optional, --methods) log-normal σ with EDM's P_mean/P_std under w = 1

Each run is `train.py` in a subprocess (the command users run) that evaluates itself every --eval-every
kimg with `--metrics fd-digits` (training.metrics.tracking): N samples from the seeds seed, seed+1, ...
(the same for every evaluation of a run and for every method of one seed), EDM's deterministic Heun sampler
with --steps σ levels (NFE = 2 steps − 1), quantised as PNGs are, scored by the Fréchet distance in the
feature space of the digit classifier of `training/metrics/digit_features.py` against all real digits
(binarised digits for the binary setting; samples are not thresholded, as fid.py does not threshold).
The curves are the runs' own RUN/metrics.jsonl, so `python -m scripts.report WORKDIR` reads them as well.

Reported per setting (the arithmetic is `scripts/report.py`'s `compute_to_target`): final quality
(mean ± std over seeds), kEx@target (target = best score of the best fixed baseline's seed-averaged
curve; first crossing, linearly interpolated) and the speed-up = baseline kEx / InfoNoise kEx with its
per-seed spread. Nothing is tuned here: the recipe is the preset's.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import click
import torch

from dnnlib.util import atomic_write
from scripts import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root (train.py's folder)

PRESET = 'digits-demo'
METRIC = 'digit Fréchet'
DONE_FILE = 'bench-finished.json'   # the train.py arguments of a run that completed
SETTINGS: dict[str, dict[str, Any]] = {
    'digits': dict(
        title='8x8 digits (EDM objective)', data='builtin:digits', reference='digits',
        methods={'edm': ['--sigma-dist', 'lognormal'],
                 'loguniform': ['--sigma-dist', 'loguniform'],
                 'infonoise': ['--sigma-dist', 'infonoise']}),
    'binary': dict(
        title='binarised 8x8 digits (w = 1)', data='builtin:digits-binary', reference='digits-binary',
        methods={'loguniform': ['--sigma-dist', 'loguniform', '--weighting', 'unit'],
                 'edm': ['--sigma-dist', 'lognormal', '--weighting', 'edm'],
                 'lognormal-w1': ['--sigma-dist', 'lognormal', '--weighting', 'unit'],
                 'infonoise': ['--sigma-dist', 'infonoise', '--weighting', 'unit']}),
}
DEFAULT_METHODS = ('edm', 'loguniform', 'infonoise')
FULL = dict(seeds=3, kimg=100.0, eval_every=5.0, num_images=1000)
QUICK = dict(seeds=1, kimg=2.0, eval_every=1.0, num_images=256)


def _log(message: str) -> None:
    click.echo(message, err=True)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(',') if v.strip()]


def train_command(setting: str, method: str, seed: int, run_dir: str, cfg: dict, device: str) -> list[str]:
    """The train.py command line of one run: it evaluates itself (--metrics fd-digits) into RUN/metrics.jsonl."""
    spec = SETTINGS[setting]
    every = f'{cfg["eval_every"]:g}'
    return [sys.executable, os.path.join(ROOT, 'train.py'), '--preset', PRESET, '--outdir', run_dir, '--nosubdir',
            '--data', spec['data'], *spec['methods'][method], '--kimg', f'{cfg["kimg"]:g}', '--tick', every,
            '--snap', '1000000', '--dump', '1000000', '--grid', '0', '--plot', '0', '--seed', str(seed),
            '--device', device, '--metrics', 'fd-digits', '--metrics-every', every,
            '--metrics-num', str(cfg['num_images']), '--metrics-steps', str(cfg['steps'])]


def run_complete(run_dir: str, cmd: list[str]) -> bool:
    """Whether `run_dir` holds a finished run of exactly this train.py command (its last tick reached --kimg)."""
    marker = os.path.join(run_dir, DONE_FILE)
    if not os.path.isfile(marker):
        return False
    try:
        with open(marker, 'r', encoding='utf-8') as f:
            return json.load(f) == cmd[1:]
    except (OSError, ValueError):
        return False


def train(cmd: list[str], run_dir: str, label: str) -> float:
    """Run train.py into a fresh `run_dir`; return its wall time. A failure becomes one ClickException sentence."""
    if os.path.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        raise click.ClickException(f'Training {label} failed: {lines[-1] if lines else f"exit code {proc.returncode}"}')
    with atomic_write(os.path.join(run_dir, DONE_FILE)) as f:
        f.write(json.dumps(cmd[1:]).encode('utf-8'))
    return time.time() - start


def read_curve(run_dir: str) -> list[tuple[float, float]]:
    """(kimg, value) of the run's `train.py --metrics` evaluations (RUN/metrics.jsonl), in order."""
    records = report.read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
    return [(float(r['kimg']), float(r['value'])) for r in records if r.get('metric') == 'fd-digits']


def machine_info(device: torch.device) -> dict:
    info = dict(platform=platform.platform(), python=platform.python_version(), torch=torch.__version__,
                cpu_count=os.cpu_count(), device=str(device))
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


@click.command(context_settings=dict(show_default=True, max_content_width=110), epilog="""\b
Examples:
  # Check that everything works (1 seed, 2 kimg per run; about 2-3 minutes on 2 CPU cores)
  python -m scripts.bench_time_to_quality --quick
\b
  # Full benchmark on a GPU machine, keeping the runs, with a JSON record
  python -m scripts.bench_time_to_quality --device cuda --workdir runs/ttq --json ttq.json
\b
  # Only the binarised setting, with the optional log-normal w = 1 baseline, 5 seeds
  python -m scripts.bench_time_to_quality --settings binary --methods loguniform,edm,lognormal-w1,infonoise \\
      --seeds 5""")
@click.option('--quick', is_flag=True, help='Tiny budget to check the pipeline: 1 seed, 2 kimg per run, '
                                         'evaluation every kimg with 256 images (explicit options still win).')
@click.option('--settings', default='digits,binary', help='Comma-separated settings: digits, binary.')
@click.option('--methods', default=','.join(DEFAULT_METHODS),
              help='Comma-separated schedules: edm, loguniform, infonoise, lognormal-w1 (binary only).')
@click.option('--seeds', type=click.IntRange(min=1), default=None,
              help=f'Training seeds per schedule (0..N-1)  [default: {FULL["seeds"]}; --quick: {QUICK["seeds"]}]')
@click.option('--kimg', type=click.FloatRange(min=1), default=None,
              help=f'Training budget per run in kimg  [default: {FULL["kimg"]:g}; --quick: {QUICK["kimg"]:g}]')
@click.option('--eval-every', type=click.FloatRange(min=1), default=None,
              help=f'kimg between evaluations  [default: {FULL["eval_every"]:g}; --quick: {QUICK["eval_every"]:g}]')
@click.option('--num-images', type=click.IntRange(min=2), default=None,
              help=f'Images per evaluation  [default: {FULL["num_images"]}; --quick: {QUICK["num_images"]}]')
@click.option('--steps', type=click.IntRange(min=1), default=18, help='Heun σ levels per sample (NFE = 2 steps - 1).')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto',
              help='Device for training and evaluation (auto: CUDA when available).')
@click.option('--workdir', type=click.Path(file_okay=False), default=None,
              help='Keep the runs here; finished runs and their evaluations are reused  [default: a temporary folder]')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False), default=None, help='Write all results as JSON.')
def main(quick: bool, settings: str, methods: str, seeds: int | None, kimg: float | None, eval_every: float | None,
         num_images: int | None, steps: int, device: str, workdir: str | None,
         json_path: str | None) -> None:
    """Examples-to-target of InfoNoise vs fixed σ distributions on 8x8 digits (the paper's Table 1, CPU scale)."""
    base = QUICK if quick else FULL
    cfg = dict(seeds=seeds or base['seeds'], kimg=kimg or base['kimg'], eval_every=eval_every or base['eval_every'],
               num_images=num_images or base['num_images'], steps=steps)
    chosen = _csv(settings)
    unknown = [s for s in chosen if s not in SETTINGS]
    if not chosen or unknown:
        raise click.BadParameter(f'unknown setting(s) {", ".join(unknown) or "(none)"}; choose from '
                                 f'{", ".join(SETTINGS)}.', param_hint='--settings')
    wanted = _csv(methods)
    known = {m for s in chosen for m in SETTINGS[s]['methods']}
    bad = [m for m in wanted if m not in known]
    if not wanted or bad:
        raise click.BadParameter(f'unknown schedule(s) {", ".join(bad) or "(none)"}; choose from '
                                 f'{", ".join(sorted(known))}.', param_hint='--methods')
    if cfg['eval_every'] > cfg['kimg']:
        raise click.BadParameter(f'{cfg["eval_every"]:g} kimg is longer than the budget of {cfg["kimg"]:g} kimg.',
                                 param_hint='--eval-every')
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine.', param_hint='--device')
    torch_device = torch.device('cuda' if device == 'cuda' or (device == 'auto' and torch.cuda.is_available())
                                else 'cpu')
    plan = {s: [m for m in wanted if m in SETTINGS[s]['methods']] for s in chosen}
    for s, ms in plan.items():
        if not [m for m in ms if m != report.ADAPTIVE]:
            raise click.BadParameter(f'setting {s} needs a fixed baseline besides infonoise.', param_hint='--methods')

    temp = tempfile.TemporaryDirectory(prefix='ttq-') if workdir is None else None
    root = workdir if workdir is not None else temp.name
    started = time.time()
    try:
        results = run_all(plan, cfg, root, device, torch_device)
    finally:
        if temp is not None:
            temp.cleanup()

    rows = {s: dict(title=SETTINGS[s]['title'], section='digits', metric=METRIC,
                    curves={m: {seed: r['curve'] for seed, r in results[s][m].items()} for m in plan[s]})
            for s in plan}
    summaries = {s: report.compute_to_target(rows[s]['curves']) for s in plan}
    click.echo(f'Time to quality on 8x8 digits: {cfg["seeds"]} seed(s), {cfg["kimg"]:g} kimg per run, evaluation every '
               f'{cfg["eval_every"]:g} kimg with {cfg["num_images"]} images at NFE {2 * steps - 1}; '
               f'device {torch_device}; {time.time() - started:.0f} s in all.\n')
    click.echo(report.markdown_table(rows, summaries))
    if json_path is not None:
        out = dict(config=dict(cfg, preset=PRESET, metric=METRIC, quick=quick, device=str(torch_device),
                               commands={s: {m: train_command(s, m, 0, 'RUN', cfg, device)[1:]
                                                                   for m in plan[s]} for s in plan}),
                   machine=machine_info(torch_device), date=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                   settings={s: dict(title=rows[s]['title'], reference=SETTINGS[s]['reference'],
                                     runs={m: {str(seed): {k: v for k, v in r.items()}
                                               for seed, r in results[s][m].items()} for m in plan[s]},
                                     **summaries[s]) for s in plan})
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with atomic_write(json_path) as f:
            f.write((json.dumps(report.jsonable(out), indent=2, allow_nan=False) + '\n').encode('utf-8'))
        click.echo(f'\nWrote {json_path}')


def run_all(plan: dict[str, list[str]], cfg: dict, root: str, device: str, torch_device: torch.device) -> dict:
    """Train (or reuse) and evaluate every run; setting -> method -> seed -> dict(curve, train_sec, ...)."""
    results: dict[str, dict] = {}
    for setting, methods in plan.items():
        for method in methods:
            for seed in range(cfg['seeds']):
                label = f'{setting}/{method} seed {seed}'
                run_dir = os.path.join(root, setting, f'{method}-seed{seed}')
                train_sec = None
                cmd = train_command(setting, method, seed, run_dir, cfg, device)
                if run_complete(run_dir, cmd):
                    _log(f'{label}: reusing the finished run in {run_dir}')
                else:
                    _log(f'{label}: training {cfg["kimg"]:g} kimg ...')
                    train_sec = train(cmd, run_dir, label)
                curve = read_curve(run_dir)
                speed = report.training_speed(run_dir)
                _log(f'{label}: final {METRIC} {curve[-1][1]:.4g} at {curve[-1][0]:g} kimg '
                     f'(train and evaluation {train_sec or 0:.0f} s)')
                results.setdefault(setting, {}).setdefault(method, {})[seed] = dict(
                    curve=curve, train_sec=train_sec, sec_per_kimg=speed['sec_per_kimg'])
    return results


if __name__ == '__main__':
    main()
