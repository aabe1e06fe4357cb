"""Reproduce the paper's Table 1: print (default) or launch the training and evaluation commands.

Every row trains one preset (configs/NAME.json) once per method and seed; the methods differ only in the
training σ distribution and, on discrete data, the loss weight (paper Section 6; `method_flags`): section (a),
the discrete rows bMNIST, bFashionMNIST and DNA, trains log-uniform and InfoNoise with w = 1 against the EDM
transfer baseline (the full EDM recipe); section (b), MNIST, FashionMNIST, CIFAR-10 uncond./cond. and FFHQ
64x64, keeps the EDM objective for all three. The `cpu` rows (digits, digits-binary; preset digits-demo) run
the two recipes on scikit-learn's 8x8 digits, scored with the digit-classifier Fréchet distance instead of FID:
a CPU-sized end-to-end check of the whole kit. imagenet64 (EDM's ImageNet 64x64 recipe) is an extra row.

Run directories: OUTDIR/ROW/METHOD-seedSEED (train.py --nosubdir). Each snapshot is scored by
`fid.py calc --network SNAPSHOT --ref REF` (torchrun over --nproc ranks) and the result is appended to
RUN/metrics.jsonl (one JSON object per snapshot: row, method, seed, metric, kimg, value, ...), which
`scripts/report.py OUTDIR` turns into the table and metric-vs-kimg plots. Reference statistics: EDM's
published files for CIFAR-10 and FFHQ (downloaded by fid.py), `fid.py ref` on the training data
otherwise (written to --ref-root). DNA's Sei-FID needs a Sei feature extractor in fid.py's detector
format (--sei-detector); the digits rows use the digit classifier exported as such a detector.

With --launch the runs execute one after the other (training, then evaluation of its snapshots);
an interrupted run continues from its newest training state, and finished runs and already scored
snapshots are skipped, so the same command can be repeated. --eval-only scores new snapshots of
existing runs (e.g. while training runs elsewhere) without training.

`python -m scripts.reproduce table1a` runs Table 1(a) at CPU scale under the protocol that `scripts/report.py`
applies (plateau check, 12 evenly spaced evaluations, 3 paired seeds, large decoded final evaluations next to
the real-data floor): rows and methods are plain data (PROTOCOL_ROWS), at most --jobs runs at a time with one
thread each; a relaunch skips finished runs, evaluates trained ones and resumes the others from their newest
training state. A run in use by another process (another driver, or a train.py that a killed driver left
running: it inherits the run's lock) is reported BUSY and left alone. Its `ttq` rows (8x8 digits) are the
former time-to-quality benchmark. `final-eval RUN` is the final evaluation of one run (RUN/final.jsonl,
RUN/../floor.json); it keeps its finished sample batches in RUN/final-samples-*/ until it has written them up,
so a killed final evaluation resumes where it stopped.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Iterator, Mapping, Sequence

import click

from cli_common import check_device, seeds_callback
from dnnlib.util import atomic_write
from scripts import report
from training import options as opt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root (train.py's folder)

EDM_REFS = 'https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs'
SIGMA_DISTS = {'loguniform': 'loguniform', 'edm': 'lognormal', 'infonoise': 'infonoise'}   # method: --sigma-dist
METHODS = tuple(SIGMA_DISTS)
W1 = ['--weighting', 'unit']
DIGIT_DETECTOR = 'digit-detector.pt'


def method_flags(discrete: bool, rivals: Sequence[str] = ()) -> dict[str, list[str]]:
    """Method name -> train.py flags. On discrete data every method trains with w = 1 except the EDM transfer
    baseline, which keeps the full EDM recipe (--weighting edm); continuous rows keep the preset's EDM weighting.
    `rivals` are further σ distributions, named by their --sigma-dist value, at w = 1."""
    methods = {m: ['--sigma-dist', d, *(['--weighting', 'edm' if m == 'edm' else 'unit'] if discrete else [])]
               for m, d in SIGMA_DISTS.items()}
    return {**methods, **{name: ['--sigma-dist', name, *W1] for name in rivals}}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of Table 1 (or of its CPU analogue)."""

    key: str            # Command-line name and run-directory name.
    section: str        # 'a' (discrete), 'b' (continuous) or 'cpu'.
    title: str          # Dataset name as the paper prints it.
    preset: str         # configs/PRESET.json.
    data: str           # Dataset spec; {root} = --data-root, {dna} = --dna-table.
    metric: str         # Metric name in the table.
    ref: str            # Reference statistics: a URL, or a file name under --ref-root made by `fid.py ref`.
    discrete: bool      # Section (a) recipe (w = 1 runs plus the EDM transfer baseline).
    steps: int = 18     # Heun σ levels for evaluation samples.
    num: int = 50000    # Images per evaluation.
    detector: str = ''  # '' = Inception (fid.py's default), 'sei' = --sei-detector, 'digits' = the digit classifier.


ROWS = {r.key: r for r in [
    Row('bmnist', 'a', 'bMNIST', 'bmnist', 'binary:{root}/mnist-32x32.zip', 'FID', 'bmnist-32x32.npz', True),
    Row('bfashionmnist', 'a', 'bFashionMNIST', 'bfashionmnist', 'binary:{root}/fashionmnist-32x32.zip', 'FID',
        'bfashionmnist-32x32.npz', True),
    Row('dna', 'a', 'DNA', 'dna', 'dna:{dna}', 'Sei-FID', 'dna-sei.npz', True, detector='sei'),
    Row('mnist', 'b', 'MNIST', 'mnist', '{root}/mnist-32x32.zip', 'FID', 'mnist-32x32.npz', False),
    Row('fashionmnist', 'b', 'FashionMNIST', 'fashionmnist', '{root}/fashionmnist-32x32.zip', 'FID',
        'fashionmnist-32x32.npz', False),
    Row('cifar10-uncond', 'b', 'CIFAR-10 (uncond.)', 'cifar10-uncond', '{root}/cifar10-32x32.zip', 'FID',
        f'{EDM_REFS}/cifar10-32x32.npz', False),
    Row('cifar10-cond', 'b', 'CIFAR-10 (cond.)', 'cifar10-cond', '{root}/cifar10-32x32.zip', 'FID',
        f'{EDM_REFS}/cifar10-32x32.npz', False),
    Row('ffhq64', 'b', 'FFHQ 64x64', 'ffhq64', '{root}/ffhq-64x64.zip', 'FID', f'{EDM_REFS}/ffhq-64x64.npz', False,
        steps=40),
    Row('imagenet64', 'extra', 'ImageNet 64x64 (cond.)', 'imagenet64', '{root}/imagenet-64x64.zip', 'FID',
        f'{EDM_REFS}/imagenet-64x64.npz', False, steps=40),
    Row('digits', 'cpu', '8x8 digits (EDM objective)', 'digits-demo', 'builtin:digits', 'digit Fréchet',
        'digits.npz', False, num=1000, detector='digits'),
    Row('digits-binary', 'cpu', 'binarised 8x8 digits (w = 1)', 'digits-demo', 'builtin:digits-binary',
        'digit Fréchet', 'digits-binary.npz', True, num=1000, detector='digits'),
]}
GROUPS = {'all': [k for k, r in ROWS.items() if r.section in ('a', 'b')],
          **{s: [k for k, r in ROWS.items() if r.section == s] for s in ('a', 'b', 'cpu')}}
REPORT_SECTION = {'a': 'a', 'b': 'b', 'cpu': 'digits', 'extra': 'extra'}


@dataclasses.dataclass
class Plan:
    """Resolved command-line settings shared by every row."""

    outdir: str                 # Root of the run directories (OUTDIR/ROW/METHOD-seedSEED).
    data_root: str              # Folder with the dataset archives.
    ref_root: str               # Folder for computed reference statistics and the digit detector.
    dna_table: str              # DNA-Diffusion sequence table for the DNA row.
    sei_detector: str | None    # Sei feature extractor for the DNA row's Sei-FID (None: not given).
    nproc: int                  # Processes per command (torchrun when > 1).
    seeds: list[int]            # Training seeds; one run per (row, method, seed).
    kimg: float | None          # Training length override (None: the preset's).
    tick: float | None          # kimg per tick override.
    snap: int | None            # Ticks per snapshot override.
    device: str | None          # --device for train.py and fid.py (None: their defaults).
    fid_num: int | None         # Images per evaluation (None: the row's).
    fid_steps: int | None       # Heun σ levels per evaluation sample (None: the row's).
    fid_batch: int | None       # fid.py --batch (None: fid.py's default).
    eval_every: int             # Score every N-th snapshot (and always the last).


# ----------------------------------------------------------------------------------------------
# Commands.

def launcher(nproc: int) -> list[str]:
    """`torchrun --standalone --nproc_per_node=N` (plain `python` for one process)."""
    return ['python'] if nproc == 1 else ['torchrun', '--standalone', f'--nproc_per_node={nproc}']


def run_dir(plan: Plan | ProtocolPlan, row: Row | ProtocolRow, method: str, seed: int) -> str:
    """OUTDIR/ROW/METHOD-seedSEED, the run directory of both drivers."""
    return os.path.join(plan.outdir, row.key, f'{method}-seed{seed}')


def has_training_state(run: str) -> bool:
    """Whether `run` holds a training state to resume from."""
    return os.path.isdir(run) and any(n.startswith('training-state-') for n in os.listdir(run))


def train(cmd: list[str], run: str, **execute_kwargs: Any) -> None:
    """Run the train.py command `cmd` of the run directory `run`, resuming its newest training state if any."""
    resume = ['--resume', run] if has_training_state(run) else []
    os.makedirs(run, exist_ok=True)
    execute([*cmd, *resume], **execute_kwargs)


def ref_path(plan: Plan, row: Row) -> str:
    return row.ref if '://' in row.ref else os.path.join(plan.ref_root, row.ref)


def detector_path(plan: Plan, row: Row) -> str | None:
    if row.detector == 'digits':
        return os.path.join(plan.ref_root, DIGIT_DETECTOR)
    if row.detector == 'sei':
        return plan.sei_detector or 'SEI_DETECTOR.pt'
    return None


def data_spec(plan: Plan, row: Row) -> str:
    return row.data.format(root=plan.data_root, dna=plan.dna_table)


def train_command(plan: Plan, row: Row, method: str, seed: int) -> list[str]:
    """The train.py command of one run (a row's runs differ only in --sigma-dist / --weighting)."""
    cmd = [*launcher(plan.nproc), 'train.py', '--preset', row.preset, '--data', data_spec(plan, row),
           '--outdir', run_dir(plan, row, method, seed), '--nosubdir', '--seed', str(seed),
           *method_flags(row.discrete)[method]]
    for flag, value in (('--kimg', plan.kimg), ('--tick', plan.tick), ('--snap', plan.snap), ('--device', plan.device)):
        if value is not None:
            cmd += [flag, f'{value:g}' if isinstance(value, float) else str(value)]
    return cmd


def fid_py(plan: Plan, row: Row, *args: str) -> list[str]:
    """The fid.py command with arguments `args` and the row's detector (none: fid.py's Inception)."""
    det = detector_path(plan, row)
    return [*launcher(plan.nproc), 'fid.py', *args, *(['--detector', det] if det is not None else [])]


def ref_command(plan: Plan, row: Row) -> list[str] | None:
    """`fid.py ref` for rows whose reference statistics are computed from the training data (else None)."""
    if '://' in row.ref:
        return None
    return fid_py(plan, row, 'ref', '--data', data_spec(plan, row), '--dest', ref_path(plan, row))


def fid_command(plan: Plan, row: Row, snapshot: str) -> list[str]:
    """`fid.py calc --network SNAPSHOT --ref REF` with the row's image count and sampler steps."""
    args = ['--network', snapshot, '--ref', ref_path(plan, row), '--num', str(plan.fid_num or row.num),
            '--steps', str(plan.fid_steps or row.steps)]
    if plan.fid_batch is not None:
        args += ['--batch', str(plan.fid_batch)]
    if plan.device is not None:
        args += ['--device', plan.device]
    return fid_py(plan, row, 'calc', *args)


def total_kimg(plan: Plan, row: Row) -> float:
    """Training length of a row's runs in kimg (--kimg, else the preset's)."""
    opts = dict(opt_lib.DEFAULTS, **opt_lib.load_preset(row.preset)['options'])
    if plan.kimg is not None:
        opts['kimg'] = plan.kimg
    return opt_lib.total_kimg(opts)


# ----------------------------------------------------------------------------------------------
# Printing the plan.

def print_plan(plan: Plan, rows: list[Row], methods: list[str], echo: Any = click.echo) -> None:
    runs = len(rows) * len(methods) * len(plan.seeds)
    echo(f'# Table 1 reproduction: {len(rows)} row(s) x {len(methods)} method(s) x {len(plan.seeds)} seed(s) = '
         f'{runs} training run(s). Run from the repository root.')
    echo('# Score snapshots as they appear (repeatable; writes RUN/metrics.jsonl): this command with --eval-only;')
    echo('# or run everything: this command with --launch. Then the table and plots:')
    plots = os.path.join(plan.outdir, 'plots')
    echo(f'#   python -m scripts.report {shlex.quote(plan.outdir)} --plots {shlex.quote(plots)}')
    digit_detector = next((detector_path(plan, r) for r in rows if r.detector == 'digits'), None)
    if digit_detector is not None:
        echo(f'# The digit-classifier detector {digit_detector} is written by --launch / --eval-only '
             f'(training/metrics/digit_features.py).')
    for row in rows:
        section = {'a': 'Table 1(a)', 'b': 'Table 1(b)', 'cpu': 'CPU check', 'extra': 'extra row'}[row.section]
        echo('')
        echo(f'## {row.title} [{section}], {row.metric} against {ref_path(plan, row)}')
        if row.detector == 'sei' and plan.sei_detector is None:
            echo('# Sei-FID needs a Sei feature extractor in fid.py detector format: pass --sei-detector PATH.')
        cmd = ref_command(plan, row)
        if cmd is not None:
            echo('# reference statistics (once per dataset)')
            echo(shlex.join(cmd))
        for method in methods:
            for seed in plan.seeds:
                echo(f'# {report.METHOD_LABELS.get(method, method)}, seed {seed}')
                echo(shlex.join(train_command(plan, row, method, seed)))
                snap = os.path.join(run_dir(plan, row, method, seed), 'network-snapshot-KKKKKK.pkl')
                echo('#   every snapshot: ' + shlex.join(fid_command(plan, row, snap)))


# ----------------------------------------------------------------------------------------------
# Launching and evaluating.

def execute(cmd: list[str], capture: bool = False, env: Mapping[str, str] | None = None,
            pass_fds: Sequence[int] = ()) -> str:
    """Run a command from the repository root (`python` and `torchrun` as this interpreter's); a failure becomes
    one ClickException sentence. `pass_fds`: open descriptors the command inherits (a run's lock)."""
    click.echo(f'$ {shlex.join(cmd)}', err=True)
    interpreter = {'python': [sys.executable], 'torchrun': [sys.executable, '-m', 'torch.distributed.run']}
    proc = subprocess.run([*interpreter.get(cmd[0], cmd[:1]), *cmd[1:]], cwd=ROOT, text=True, env=env,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
                          pass_fds=tuple(pass_fds))
    if proc.returncode != 0:
        tail = [ln for ln in ((proc.stderr or '') + (proc.stdout or '')).splitlines() if ln.strip()] if capture else []
        reason = tail[-1].strip() if tail else f'exit code {proc.returncode}'
        raise click.ClickException(f'Command failed ({reason}): {shlex.join(cmd)}')
    return proc.stdout or ''


def parse_metric(stdout: str) -> float:
    """The value `fid.py calc` prints as its last line."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            return float(line.strip())
        except ValueError:
            continue
    raise click.ClickException('fid.py calc printed no metric value.')


def ensure_references(plan: Plan, rows: list[Row]) -> None:
    """Write the digit detector and the missing reference statistics the rows need."""
    for row in rows:
        det = detector_path(plan, row)
        if row.detector == 'digits' and not os.path.isfile(det):
            from training.metrics.digit_features import export_detector
            os.makedirs(os.path.dirname(os.path.abspath(det)), exist_ok=True)
            export_detector(det)
            click.echo(f'Wrote the digit-classifier detector {det}', err=True)
        if row.detector == 'sei' and plan.sei_detector is None:
            raise click.UsageError('The DNA row needs --sei-detector PATH (a Sei feature extractor in fid.py '
                                   'detector format) for Sei-FID.')
        cmd = ref_command(plan, row)
        if cmd is not None and not os.path.isfile(ref_path(plan, row)):
            os.makedirs(os.path.dirname(os.path.abspath(ref_path(plan, row))), exist_ok=True)
            execute(cmd)


def evaluate_run(plan: Plan, row: Row, method: str, seed: int) -> int:
    """Score the run's new snapshots (every --eval-every-th, always the last); returns how many were scored."""
    directory = run_dir(plan, row, method, seed)
    snapshots = sorted(report.snapshot_kimgs(directory).items(), key=lambda item: item[1])
    chosen = [s for i, s in enumerate(snapshots) if i % plan.eval_every == 0 or i == len(snapshots) - 1]
    path = os.path.join(directory, 'metrics.jsonl')
    records = report.read_jsonl(path)
    key = dict(num=plan.fid_num or row.num, steps=plan.fid_steps or row.steps, ref=ref_path(plan, row),
               detector=detector_path(plan, row))
    done = {r.get('snapshot') for r in records if all(r.get(k) == v for k, v in key.items())}
    scored = 0
    for name, kimg in chosen:
        if name in done:
            continue
        value = parse_metric(execute(fid_command(plan, row, os.path.join(directory, name)), capture=True))
        records.append(dict(row=row.key, title=row.title, section=REPORT_SECTION[row.section], method=method,
                            seed=seed, metric=row.metric, kimg=kimg, value=value, snapshot=name,
                            timestamp=time.time(), **key))
        report.write_jsonl(path, records)
        click.echo(f'{row.key}/{method} seed {seed}: {row.metric} {value:g} at {kimg:g} kimg', err=True)
        scored += 1
    return scored


def launch_run(plan: Plan, row: Row, method: str, seed: int) -> None:
    """Train one run (continuing its newest training state, skipping it when finished)."""
    directory = run_dir(plan, row, method, seed)
    done = report.training_speed(directory)['kimg']
    if done is not None and done >= total_kimg(plan, row) - 1e-6:
        click.echo(f'{row.key}/{method} seed {seed}: finished ({done:g} kimg); not training.', err=True)
        return
    train(train_command(plan, row, method, seed), directory)


def _absolute(plan: Plan) -> Plan:
    """Paths made absolute, so the commands run from the repository root mean what the user typed."""
    def fix(p: str | None) -> str | None:
        return None if p is None or '://' in p else os.path.abspath(p)
    return dataclasses.replace(plan, outdir=fix(plan.outdir), data_root=fix(plan.data_root),
                               ref_root=fix(plan.ref_root), dna_table=fix(plan.dna_table),
                               sei_detector=fix(plan.sei_detector))


# ----------------------------------------------------------------------------------------------
# Table 1(a) under the protocol of scripts/report.py (CPU scale): `python -m scripts.reproduce table1a`.
#
# Each run trains with train.py --metrics every EVERY kEx (>= 12 evaluations, a training state at every
# evaluation, so a killed run resumes from its last evaluation), then `final-eval` scores its final snapshot
# on FINAL_NUM samples (decoded; raw too for binarised images), and the row's real-data floor at the curve and
# final sizes. The small text results are copied to RESULTS/ROW/METHOD-seedS/ (and RESULTS/ROW/floor.json).

RIVALS = ('loss-second-moment', 'kingma-gao', 'ddpm')
# The variants of the early-lead investigation (docs/BENCHMARKS.md §16), each InfoNoise with one setting changed:
# infonoise-freeze stops refreshing the table after step 125 (8 kEx at the rows' batch of 64), so the pivot cannot
# follow the network's error floor down; infonoise-onset places the pivot by the continuous-data (onset) rule, which
# the replay of the recorded bMNIST and DNA errors holds at 0.09-0.18 where the discrete rule fell to 0.009-0.017.
VARIANT_METHODS = {'infonoise-freeze': ['--sigma-dist', 'infonoise', *W1, '--infonoise-freeze', '125'],
                   'infonoise-onset': ['--sigma-dist', 'infonoise', *W1, '--infonoise-endpoint', 'continuous']}
# Tuning-grid method names: lognormal-PMEAN-PSTD (e.g. lognormal--1.2-0.8, lognormal-0.4-1.8); the grid and its
# rule (h) are the report's.
GRID_METHODS = {f'lognormal-{m:g}-{s:g}': ['--sigma-dist', 'lognormal', '--p-mean', f'{m:g}', '--p-std', f'{s:g}', *W1]
                for m, s in report.LOGNORMAL_GRID}


@dataclasses.dataclass(frozen=True)
class ProtocolRow:
    """One Table 1(a)-protocol row: plain data the driver turns into commands."""

    key: str                          # Command-line name and results folder.
    title: str                        # Dataset name in the report.
    preset: str                       # configs/PRESET.json (network, optimiser, InfoNoise knobs).
    data: str                         # --data ({dna4} = --dna4).
    metrics: tuple[str, ...]          # train.py --metrics (the first one is the row's headline).
    kimg: float                       # Budget per run (kEx), a multiple of `every`.
    every: float                      # kEx between evaluations (budget / 12).
    curve_num: int                    # Samples per evaluation during training.
    final_num: int                    # Samples of the final evaluation (all classes together).
    classes: int                      # Classes the samples are balanced over (1 = unconditional).
    methods: dict                     # Method name -> train.py flags.
    guidance: float = 1.0             # Guidance W of the evaluations (DNA-Diffusion samples with W = 2).
    extra: tuple[str, ...] = ()       # train.py flags every run of the row gets.


PROTOCOL_ROWS = {r.key: r for r in [
    # bMNIST: 384 kEx (24 evaluations) since log-uniform still improved 9.5% over the last quarter of 192 kEx.
    ProtocolRow('bmnist', 'bMNIST (w = 1)', 'bmnist5k-cpu', 'builtin:mnist5k-binary', ('fd-mnist',),
                kimg=384, every=16, curve_num=512, final_num=2000, classes=1,
                methods={**method_flags(True, RIVALS), **VARIANT_METHODS, **GRID_METHODS}),
    ProtocolRow('dna', 'DNA, four cell types (w = 1, guidance 2)', 'dna-cpu', 'dna:{dna4}', ('fd-dna', 'kmer-dna'),
                kimg=48, every=4, curve_num=256, final_num=4000, classes=4, guidance=2.0,
                methods={**method_flags(True, RIVALS), **VARIANT_METHODS}, extra=('--metrics-guidance', '2')),
    ProtocolRow('mnist', 'MNIST (EDM objective)', 'mnist5k-cpu', 'builtin:mnist5k', ('fd-mnist',),
                kimg=192, every=16, curve_num=512, final_num=2000, classes=1, methods=method_flags(False)),
    # The DNA row at DNA-Diffusion's width (preset dna: dim 200, 94.6 M parameters, batch 120, its Adam 1e-4), for
    # a GPU (`--device cuda`): the paper's 100 kEx rounded to 12 evaluations, the other settings as the dna row's.
    ProtocolRow('dna200', 'DNA at DNA-Diffusion\'s width (dim 200; w = 1, guidance 2)', 'dna', 'dna:{dna4}',
                ('fd-dna', 'kmer-dna'), kimg=96, every=8, curve_num=256, final_num=4000, classes=4, guidance=2.0,
                methods={**method_flags(True, RIVALS), **VARIANT_METHODS}, extra=('--metrics-guidance', '2')),
    # The former time-to-quality benchmark on scikit-learn's 8x8 digits (CPU minutes, not part of Table 1).
    ProtocolRow('digits', '8x8 digits (EDM objective)', 'digits-demo', 'builtin:digits', ('fd-digits',),
                kimg=60, every=5, curve_num=1000, final_num=1797, classes=1, methods=method_flags(False)),
    ProtocolRow('digits-binary', 'binarised 8x8 digits (w = 1)', 'digits-demo', 'builtin:digits-binary',
                ('fd-digits',), kimg=60, every=5, curve_num=1000, final_num=1797, classes=1,
                methods=method_flags(True)),
]}
PROTOCOL_GROUPS = {'table1a': ['bmnist', 'dna', 'mnist'], 'ttq': ['digits', 'digits-binary'], 'gpu': ['dna200']}
GRID_GROUP = 'lognormal-grid'       # --methods name: the 9 tuning settings, at the first seed only
GRID_BEST = 'lognormal-best'        # --methods name: the best tuning setting (by final metric), at every seed
QUICK = dict(kimg=2.0, every=1.0, curve_num=64, final_num=128)
FINAL_FILE = 'final.jsonl'
RUN_LOCK = '.reproduce.lock'      # RUN/.reproduce.lock: see run_lock
FINAL_CACHE = 'final-samples'     # RUN/final-samples-SNAPSHOT-nN-stepsS-gW/: finished batches of a final evaluation
RESULT_FILES = ('metrics.jsonl', 'final.jsonl', 'infonoise.jsonl', 'training_options.json', 'stats.jsonl')
PROFILE_LINES_KEPT = 100   # infonoise.jsonl is copied thinned to this many evenly spaced refreshes


def copy_thinned(src: str, dest: str, keep: int = PROFILE_LINES_KEPT) -> None:
    """Copy a JSON-lines file keeping at most `keep` evenly spaced lines, always its first and last (a profile
    line per σ-sampler refresh is ~6 KB; a 192 kEx run refreshes 300 times)."""
    with open(src, encoding='utf-8') as f:
        lines = [line for line in f if line.strip()]
    if len(lines) > keep:
        picks = sorted({round(i * (len(lines) - 1) / (keep - 1)) for i in range(keep)})
        lines = [lines[i] for i in picks]
    with atomic_write(dest) as f:
        f.write(''.join(lines).encode('utf-8'))


@dataclasses.dataclass(frozen=True)
class ProtocolPlan:
    """Resolved settings of one `table1a` invocation."""

    outdir: str                 # Run directories OUTDIR/ROW/METHOD-seedS.
    results: str | None         # Where the small text results are copied (None: nowhere).
    dna4: str                   # The four-cell-type DNA table (folder or file).
    seeds: tuple[int, ...]      # Seeds of every (row, method); the tuning grid uses the first only.
    overrides: dict             # kimg / every / curve_num / final_num replacing the rows' values.
    steps: int                  # Heun σ levels of every evaluation.
    device: str = 'cpu'         # 'cpu' (one thread per run) or 'cuda' (training and sampling on the GPU).

    def resolve(self, row: ProtocolRow) -> ProtocolRow:
        """`row` with this invocation's overrides of its budget, evaluation interval and sample counts."""
        return dataclasses.replace(row, **self.overrides)


def protocol_train_command(plan: ProtocolPlan, row: ProtocolRow, method: str, seed: int) -> list[str]:
    """The train.py command of one protocol run: --metrics every `every` kEx, a state at every evaluation."""
    row = plan.resolve(row)
    return ['python', 'train.py', '--preset', row.preset, '--data', row.data.format(dna4=plan.dna4),
            '--outdir', run_dir(plan, row, method, seed), '--nosubdir', '--seed', str(seed), *row.methods[method],
            '--kimg', f'{row.kimg:g}', '--tick', f'{row.every:g}', '--dump', '1', '--snap', '1000000',
            '--metrics', ','.join(row.metrics), '--metrics-every', f'{row.every:g}', '--metrics-num',
            str(row.curve_num), '--metrics-steps', str(plan.steps), '--grid', '0', '--plot', '0',
            *(['--threads', '1'] if plan.device == 'cpu' else []), '--device', plan.device, *row.extra]


def protocol_final_command(plan: ProtocolPlan, row: ProtocolRow, method: str, seed: int) -> list[str]:
    """The final evaluation of one run (this module's `final-eval` mode) and the row's floors."""
    row = plan.resolve(row)
    return ['python', '-m', 'scripts.reproduce', 'final-eval', run_dir(plan, row, method, seed),
            '--metrics', ','.join(row.metrics), '--num', str(row.final_num),
            '--floor-sizes', f'{row.curve_num},{row.final_num}', '--guidance', f'{row.guidance:g}',
            '--steps', str(plan.steps), *(['--device', plan.device] if plan.device != 'cpu' else [])]


def run_state(plan: ProtocolPlan, row: ProtocolRow, method: str, seed: int) -> str:
    """'done' (RUN/final.jsonl holds a decoded value of every metric at the final sample count, of a snapshot at
    the budget), 'trained' (a snapshot at the budget, to be evaluated), 'partial' (to resume) or 'new'."""
    row, run = plan.resolve(row), run_dir(plan, row, method, seed)
    path = os.path.join(run, FINAL_FILE)
    have = {r.get('metric') for r in report.read_jsonl(path)
            if r.get('num') == row.final_num and r.get('decoded', True) and float(r.get('kimg', 0)) >= row.kimg - 1e-6}
    if set(row.metrics) <= have:
        return 'done'
    if any(k >= row.kimg - 1e-6 for k in report.snapshot_kimgs(run).values()):
        return 'trained'
    return 'partial' if has_training_state(run) else 'new'


def copy_results(plan: ProtocolPlan, row: ProtocolRow, method: str, seed: int) -> None:
    """Copy the run's small text files (and the row's floor.json) to RESULTS/ROW/METHOD-seedS/."""
    if plan.results is None:
        return
    run = run_dir(plan, row, method, seed)
    dest = os.path.join(plan.results, row.key, f'{method}-seed{seed}')
    os.makedirs(dest, exist_ok=True)
    for name in RESULT_FILES:
        if os.path.isfile(os.path.join(run, name)):
            copy = copy_thinned if name == 'infonoise.jsonl' else shutil.copyfile
            copy(os.path.join(run, name), os.path.join(dest, name))
    floor = os.path.join(plan.outdir, row.key, 'floor.json')
    if os.path.isfile(floor):
        shutil.copyfile(floor, os.path.join(plan.results, row.key, 'floor.json'))
    with atomic_write(os.path.join(plan.results, row.key, 'row.json')) as f:
        f.write((json.dumps(dict(title=row.title), indent=1) + '\n').encode('utf-8'))


class RunBusy(click.ClickException):
    """Another process holds the run's lock (`run_lock`)."""


@contextlib.contextmanager
def run_lock(run: str) -> Iterator[int | None]:
    """Hold RUN/RUN_LOCK (an exclusive `flock`) while this driver trains or evaluates RUN; yields its descriptor,
    which the driver's train.py and final-eval inherit, so that a child outliving a killed driver keeps the run
    locked. The operating system releases the lock when the last holder ends, however it ends. RunBusy when
    another process holds it; without fcntl (Windows) nothing is locked and None is yielded."""
    try:
        import fcntl
    except ImportError:
        yield None
        return
    os.makedirs(run, exist_ok=True)
    fd = os.open(os.path.join(run, RUN_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f'{run} is in use by another process (another driver, or a train.py or final-eval that a '
                          f'killed driver left running); relaunch once it has ended.') from None
        yield fd
    finally:
        os.close(fd)


def run_in_use(run: str) -> bool:
    """Whether another process holds RUN's lock now (`run_lock`); creates nothing."""
    path = os.path.join(run, RUN_LOCK)
    if not os.path.isfile(path):
        return False
    try:
        with run_lock(run):
            return False
    except RunBusy:
        return True


def protocol_job(plan: ProtocolPlan, row: ProtocolRow, method: str, seed: int, env: Mapping[str, str]) -> str:
    """Bring one run to 'done' from whatever state it is in, holding its lock; returns what was done."""
    label = f'{row.key}/{method}-seed{seed}'
    with run_lock(run_dir(plan, row, method, seed)) as fd:
        held = () if fd is None else (fd,)
        state = run_state(plan, row, method, seed)
        if state == 'done':
            copy_results(plan, row, method, seed)
            return f'{label}: finished earlier; skipped'
        if state in ('new', 'partial'):
            train(protocol_train_command(plan, row, method, seed), run_dir(plan, row, method, seed), capture=True,
                  env=env, pass_fds=held)
        execute(protocol_final_command(plan, row, method, seed), capture=True, env=env, pass_fds=held)
        copy_results(plan, row, method, seed)
    trained = ('resumed, ' if state == 'partial' else '') + ('trained and ' if state != 'trained' else '')
    return f'{label}: {trained}evaluated'


def best_grid_method(plan: ProtocolPlan, row: ProtocolRow) -> str | None:
    """The tuning-grid setting with the lowest final headline metric at the first seed (None until all ran)."""
    finals = {}
    for name in GRID_METHODS:
        path = os.path.join(run_dir(plan, row, name, plan.seeds[0]), FINAL_FILE)
        recs = [r for r in report.read_jsonl(path) if r.get('metric') == row.metrics[0] and r.get('decoded', True)]
        if not recs:
            return None
        finals[name] = float(recs[-1]['value'])
    return min(finals, key=finals.get)


def protocol_runs(plan: ProtocolPlan, rows: Sequence[ProtocolRow], methods: Sequence[str] | None) -> list[tuple]:
    """(row, method, seed) of every run asked for, the tuning grid at the first seed only."""
    out = []
    for row in rows:
        names = list(methods) if methods else [m for m in row.methods if m not in GRID_METHODS]
        for name in names:
            if name == GRID_GROUP:
                if not set(GRID_METHODS) <= set(row.methods):
                    raise click.BadParameter(f'row {row.key} has no log-normal tuning grid.', param_hint='--methods')
                out += [(row, m, plan.seeds[0]) for m in GRID_METHODS]
            elif name == GRID_BEST:
                best = best_grid_method(plan, row)
                if best is None:
                    raise click.UsageError(f'{GRID_BEST}: run --methods {GRID_GROUP} on {row.key} first (every '
                                           f'setting needs its final evaluation).')
                out += [(row, best, s) for s in plan.seeds]
            elif name in row.methods:
                out += [(row, name, s) for s in plan.seeds]
            else:
                raise click.BadParameter(f'unknown method {name!r} for row {row.key}; choose from '
                                         f'{", ".join([*row.methods, GRID_GROUP, GRID_BEST])}.', param_hint='--methods')
    return list({(row.key, m, s): (row, m, s) for row, m, s in out}.values())


def run_protocol(plan: ProtocolPlan, runs: Sequence[tuple], jobs: int) -> None:
    """Run `runs` (at most `jobs` at a time, one thread each), one line per run on stderr; a ClickException
    after all have ended when any failed."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(protocol_job, plan, *run, env) for run in runs]
        failed = []
        for (row, method, seed), future in zip(runs, futures):
            try:
                line = future.result()
            except click.ClickException as err:
                outcome = 'BUSY' if isinstance(err, RunBusy) else 'FAILED'
                line = f'{row.key}/{method}-seed{seed}: {outcome}: {err.message}'
                failed.append(line)
            click.echo(line, err=True)
    if failed:
        raise click.ClickException(f'{len(failed)} of {len(runs)} run(s) failed or were busy; the first: {failed[0]}')


def source_commit() -> str | None:
    """The commit this code comes from: the checkout's HEAD, or, in a `git archive` copy (no .git), the hash git
    wrote into scripts/archive_commit.txt (export-subst, see .gitattributes); None when neither is known."""
    proc = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 0:
        return proc.stdout.strip()
    try:
        with open(os.path.join(ROOT, 'scripts', 'archive_commit.txt'), encoding='utf-8') as f:
            text = f.read().strip()
    except OSError:
        return None
    return text if re.fullmatch(r'[0-9a-f]{40}', text) else None


def final_evaluation(run: str, metrics: Sequence[str], num: int, floor_sizes: Sequence[int], guidance: float,
                     steps: int, commit: str | None, device: str = 'cpu') -> list[dict]:
    """Score RUN's final snapshot on `num` samples (decoded; also raw for binarised images), append the records
    to RUN/final.jsonl, and write the missing real-data floors of the row to RUN/../floor.json."""
    import torch
    from training.metrics import registry
    from training.network_io import load_network
    snaps = report.snapshot_kimgs(run)
    if not snaps:
        raise click.ClickException(f'{run} has no network snapshot to evaluate.')
    name, snap_kimg = max(snaps.items(), key=lambda item: item[1])
    data = load_network(os.path.join(run, name), device)
    net, dataset_kwargs = data['ema'], data.get('dataset_kwargs')
    if dataset_kwargs is None:
        raise click.ClickException(f'{name} carries no dataset_kwargs; the metrics need the run\'s data.')
    torch.set_num_threads(1)
    discrete = registry.is_discrete(dataset_kwargs)
    images = not any(m in registry.SEQUENCE_METRICS for m in metrics)
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    records = []
    start = time.time()
    for m in metrics:
        registry.check_metric_applicable(m, net)
    # Sampled once (scored raw and decoded), through a cache of finished batches so that a killed evaluation
    # resumes where it stopped; the cache is removed once final.jsonl holds the records.
    cache = os.path.join(run, f'{FINAL_CACHE}-{os.path.splitext(name)[0]}-n{num}-steps{steps}-g{guidance:g}')
    samples, classes = registry.sample(net, num, seed=0, device=device, num_steps=steps, guidance=guidance,
                                       cache=cache)
    for decoded in ([True, False] if discrete and images else [discrete]):
        values = registry.evaluate_samples(metrics, registry.decode(samples) if decoded else samples, classes,
                                           dataset_kwargs)
        records += [dict(kimg=snap_kimg, kex=snap_kimg, metric=m, value=v, num=num, classes=max(label_dim, 1),
                         decoded=decoded, guidance=guidance, steps=steps, snapshot=name, commit=commit,
                         seconds=time.time() - start) for m, v in values.items()]
    path = os.path.join(run, FINAL_FILE)
    old = report.read_jsonl(path)
    report.write_jsonl(path, [r for r in old if r.get('num') != num] + records)
    shutil.rmtree(cache, ignore_errors=True)
    floor_path = os.path.join(os.path.dirname(os.path.abspath(run)), 'floor.json')
    floors = report._read_json(floor_path) or {}
    missing = [n for n in floor_sizes if any(str(n) not in floors.get(m, {}) for m in metrics)]
    for n in missing:
        values = registry.real_floor(metrics, dataset_kwargs, n, seed=0, label_dim=label_dim)
        for m, v in values.items():
            floors.setdefault(m, {})[str(n)] = v
    if missing:
        with atomic_write(floor_path) as f:
            f.write((json.dumps(floors, indent=1, sort_keys=True) + '\n').encode('utf-8'))
    return records


# ----------------------------------------------------------------------------------------------
# CLI.

def _parse_rows(value: str, rows: Mapping[str, Any], groups: Mapping[str, list[str]]) -> list:
    """The rows (of `rows`) that --rows names, rows and groups alike, in order and each once."""
    keys = [name for part in value.split(',') if part.strip() for name in groups.get(part.strip(), [part.strip()])]
    unknown = [k for k in keys if k not in rows]
    if unknown:
        raise click.BadParameter(f'unknown row {unknown[0]!r}; choose from {", ".join([*groups, *rows])}.',
                                 param_hint='--rows')
    if not keys:
        raise click.BadParameter('no rows given.', param_hint='--rows')
    return [rows[k] for k in dict.fromkeys(keys)]


def _parse_methods(value: str) -> list[str]:
    methods = [m.strip() for m in value.split(',') if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise click.BadParameter(f'unknown method(s) {", ".join(bad) or "(none)"}; choose from {", ".join(METHODS)}.',
                                 param_hint='--methods')
    return [m for m in METHODS if m in methods]


@click.group(invoke_without_command=True, context_settings=dict(show_default=True, max_content_width=110),
             epilog="""\b
Examples:
  # Table 1(a) under the protocol of scripts/report.py, two runs at a time, then the report
  nice -n 19 python -m scripts.reproduce table1a --outdir runs/table1a --jobs 2 --seeds 0,1,2
  python -m scripts.report docs/results/table1a --benchmarks docs/BENCHMARKS.md
\b
  # Time-to-quality on 8x8 digits in a few minutes (1 seed, 2 kEx per run)
  python -m scripts.reproduce table1a --rows ttq --quick --seeds 0 --outdir runs/ttq --results runs/ttq-results
\b
  # Print every Table 1 command for 8 GPUs (nothing runs)
  python -m scripts.reproduce --nproc 8 --data-root datasets --outdir runs/table1
\b
  # Run the discrete rows, then build the table and the FID-vs-kimg plots
  python -m scripts.reproduce --rows a --nproc 8 --sei-detector sei.pt --dna-table data/dna.txt --launch
  python -m scripts.report runs/table1 --plots runs/table1/plots
\b
  # Score new snapshots of runs that train elsewhere (repeatable)
  python -m scripts.reproduce --rows cifar10-uncond --nproc 8 --eval-only
\b
  # CPU end-to-end check on 8x8 digits (digit-classifier Fréchet distance instead of FID)
  python -m scripts.reproduce --rows cpu --nproc 1 --kimg 2 --fid-num 256 --outdir runs/cpu \\
      --ref-root runs/cpu/refs --launch""")
@click.option('--rows', default='all', help='Comma-separated rows or groups: all (Table 1), a, b, cpu, or names: '
              + ', '.join(ROWS) + '.')
@click.option('--methods', default=','.join(METHODS), help='Comma-separated methods: loguniform, edm, infonoise.')
@click.option('--seeds', default='0', callback=seeds_callback, help='Training seeds, e.g. 0 or 0-2.')
@click.option('--nproc', type=click.IntRange(min=1), default=8, help='Processes (GPUs) per command.')
@click.option('--outdir', default='runs/table1', type=click.Path(file_okay=False), help='Root of the run directories.')
@click.option('--data-root', default='datasets', type=click.Path(file_okay=False),
              help='Folder with the dataset_tool.py archives (mnist-32x32.zip, cifar10-32x32.zip, ...).')
@click.option('--ref-root', default='refs', type=click.Path(file_okay=False),
              help='Folder for computed reference statistics (and the digit detector).')
@click.option('--dna-table', default=None, help='DNA-Diffusion sequence table  [default: DATA_ROOT/dna-diffusion.txt]')
@click.option('--sei-detector', default=None, help='Sei feature extractor (fid.py detector format) for the DNA row.')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help='Training length per run  [default: the preset\'s]')
@click.option('--tick', type=click.FloatRange(min=0, min_open=True), default=None,
              help='kimg per tick  [default: the preset\'s]')
@click.option('--snap', type=click.IntRange(min=1), default=None, help='Ticks per snapshot  [default: the preset\'s]')
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default=None,
              help='Device for train.py and fid.py  [default: theirs]')
@click.option('--fid-num', type=click.IntRange(min=2), default=None,
              help='Images per evaluation  [default: 50000; digits rows 1000]')
@click.option('--fid-steps', type=click.IntRange(min=1), default=None,
              help='Heun σ levels per sample  [default: 18; 64x64 rows 40]')
@click.option('--fid-batch', type=click.IntRange(min=1), default=None, help="fid.py's --batch  [default: fid.py's]")
@click.option('--eval-every', type=click.IntRange(min=1), default=1,
              help='Score every N-th snapshot (the last one always).')
@click.option('--launch', is_flag=True, help='Run the commands (training, then evaluation) instead of printing them.')
@click.option('--eval-only', is_flag=True, help='Only score new snapshots of existing runs.')
@click.pass_context
def main(ctx: click.Context, rows: str, methods: str, seeds: list[int], nproc: int, outdir: str, data_root: str,
         ref_root: str, dna_table: str | None, sei_detector: str | None, kimg: float | None, tick: float | None,
         snap: int | None, device: str | None, fid_num: int | None, fid_steps: int | None, fid_batch: int | None,
         eval_every: int, launch: bool, eval_only: bool) -> None:
    """Print (default) or launch the torchrun commands that reproduce the paper's Table 1; or a mode (below)."""
    if ctx.invoked_subcommand is not None:
        return
    if launch and eval_only:
        raise click.UsageError('--launch and --eval-only are alternatives; give one.')
    chosen_rows = _parse_rows(rows, ROWS, GROUPS)
    chosen_methods = _parse_methods(methods)
    plan = Plan(outdir=outdir, data_root=data_root, ref_root=ref_root,
                dna_table=dna_table or os.path.join(data_root, 'dna-diffusion.txt'), sei_detector=sei_detector,
                nproc=nproc, seeds=seeds, kimg=kimg, tick=tick, snap=snap, device=device,
                fid_num=fid_num, fid_steps=fid_steps, fid_batch=fid_batch, eval_every=eval_every)
    if not (launch or eval_only):
        print_plan(plan, chosen_rows, chosen_methods)
        return
    plan = _absolute(plan)
    ensure_references(plan, chosen_rows)
    scored = 0
    for row in chosen_rows:
        for method in chosen_methods:
            for seed in plan.seeds:
                if launch:
                    launch_run(plan, row, method, seed)
                elif not os.path.isdir(run_dir(plan, row, method, seed)):
                    continue
                scored += evaluate_run(plan, row, method, seed)
    click.echo(f'Scored {scored} snapshot(s). Table: python -m scripts.report {shlex.quote(plan.outdir)}')


@main.command('table1a', epilog="""\b
Rows (plain data in PROTOCOL_ROWS): bmnist, dna, mnist (group table1a); digits, digits-binary (group ttq);
dna200 (group gpu: the dna row at DNA-Diffusion's width, with --device cuda).
Methods: a row's names (loguniform, edm, infonoise, and on bmnist / dna loss-second-moment, kingma-gao,
ddpm and the InfoNoise variants infonoise-freeze, infonoise-onset), lognormal-grid (bmnist: the 9 log-normal
settings at the first seed), lognormal-best (the best grid setting at every seed, once the grid has run). Run with `nice -n 19`; each run uses one thread.
A relaunch skips finished runs, evaluates trained ones and resumes the others from their last state (a final
evaluation from its finished sample batches); a run another process still holds is reported BUSY and left alone.""")
@click.option('--rows', default='table1a', show_default=True, help='Comma-separated rows or groups.')
@click.option('--methods', default=None, help='Comma-separated methods  [default: every method of the row but the '
                                              'tuning grid]')
@click.option('--seeds', default='0-2', show_default=True, callback=seeds_callback,
              help='Seeds of every (row, method), e.g. 0-2 or 0,1,2.')
@click.option('--outdir', default='runs/table1a', show_default=True, type=click.Path(file_okay=False),
              help='Root of the run directories (OUTDIR/ROW/METHOD-seedS).')
@click.option('--results', default=os.path.join('docs', 'results', 'table1a'), show_default=True,
              type=click.Path(file_okay=False), help='Copy the small text results here ("" = nowhere).')
@click.option('--dna4', default=os.path.join('..', 'shared', 'data', 'dna4'), show_default=True,
              help='The four-cell-type DNA-Diffusion table (folder or file) of the dna rows.')
@click.option('--jobs', type=click.IntRange(min=1), default=2, show_default=True, help='Runs at a time.')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=None,
              help="Budget per run  [default: the row's]")
@click.option('--every', type=click.FloatRange(min=0, min_open=True), default=None,
              help="kEx between evaluations  [default: the row's]")
@click.option('--curve-num', type=click.IntRange(min=2), default=None,
              help="Samples per evaluation  [default: the row's]")
@click.option('--final-num', type=click.IntRange(min=2), default=None,
              help="Samples of the final evaluation  [default: the row's]")
@click.option('--steps', type=click.IntRange(min=1), default=18, show_default=True,
              help='Heun σ levels of every evaluation (NFE = 2 steps - 1).')
@click.option('--quick', is_flag=True, help=f'Pipeline check: {QUICK["kimg"]:g} kEx, evaluation every '
              f'{QUICK["every"]:g} kEx on {QUICK["curve_num"]} samples, final {QUICK["final_num"]} '
              '(explicit options win).')
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True,
              help='Where every run trains and samples (cpu: one thread per run; the dna200 row needs cuda).')
@click.option('--dry-run', is_flag=True, help='Print the runs, their state and their commands; run nothing.')
def table1a(rows: str, methods: str | None, seeds: list[int], outdir: str, results: str, dna4: str, jobs: int,
            kimg: float | None, every: float | None, curve_num: int | None, final_num: int | None, steps: int,
            quick: bool, device: str, dry_run: bool) -> None:
    """Train and evaluate the Table 1(a) protocol runs (resumable); copy their text results for scripts.report."""
    chosen = _parse_rows(rows, PROTOCOL_ROWS, PROTOCOL_GROUPS)
    given = dict(kimg=kimg, every=every, curve_num=curve_num, final_num=final_num)
    overrides = {**(QUICK if quick else {}), **{k: v for k, v in given.items() if v is not None}}
    plan = ProtocolPlan(outdir=os.path.abspath(outdir), results=os.path.abspath(results) if results else None,
                        dna4=os.path.abspath(dna4), seeds=tuple(seeds), overrides=overrides, steps=steps,
                        device=device)
    for row in map(plan.resolve, chosen):
        if abs(row.kimg / row.every - round(row.kimg / row.every)) > 1e-9:
            raise click.BadParameter(f'the budget {row.kimg:g} kEx of row {row.key} is not a multiple of the '
                                     f'evaluation interval {row.every:g} kEx.', param_hint='--kimg/--every')
    runs = protocol_runs(plan, chosen, [m.strip() for m in methods.split(',') if m.strip()] if methods else None)
    if dry_run:
        for row, method, seed in runs:
            busy = ' (BUSY: another process holds it)' if run_in_use(run_dir(plan, row, method, seed)) else ''
            click.echo(f'# {row.key}/{method}-seed{seed}: {run_state(plan, row, method, seed)}{busy}')
            click.echo(shlex.join(protocol_train_command(plan, row, method, seed)))
            click.echo(shlex.join(protocol_final_command(plan, row, method, seed)))
        return
    check_device(device)
    run_protocol(plan, runs, jobs)
    where = plan.results or plan.outdir
    click.echo(f'{len(runs)} run(s) complete. Report: python -m scripts.report {shlex.quote(where)}')


@main.command('final-eval')
@click.argument('run', type=click.Path(file_okay=False, exists=True))
@click.option('--metrics', required=True, help='Comma-separated metric names (training.metrics.registry).')
@click.option('--num', type=click.IntRange(min=2), required=True, help='Samples (all classes together).')
@click.option('--floor-sizes', default='', help='Comma-separated sizes of the real-data floor (RUN/../floor.json).')
@click.option('--guidance', type=click.FloatRange(min=0), default=1.0, show_default=True, help='Guidance W.')
@click.option('--steps', type=click.IntRange(min=1), default=18, show_default=True, help='Heun σ levels.')
@click.option('--commit', default=None, help='Commit the run was made from  [default: the checkout\'s HEAD, or the '
                                             'commit a `git archive` copy was made from]')
@click.option('--device', type=click.Choice(['cpu', 'cuda']), default='cpu', show_default=True,
              help='Where the network samples.')
def final_eval(run: str, metrics: str, num: int, floor_sizes: str, guidance: float, steps: int,
               commit: str | None, device: str) -> None:
    """The final evaluation of one training run: RUN/final.jsonl and the row's real-data floors."""
    from training.metrics import registry
    check_device(device)
    try:
        names = registry.parse_metrics(metrics)
        sizes = [int(x) for x in floor_sizes.split(',') if x.strip()]
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--metrics/--floor-sizes') from None
    if commit is None:
        commit = source_commit()
    try:
        records = final_evaluation(run, names, num, sizes, guidance, steps, commit, device)
    except (OSError, ValueError) as err:
        raise click.ClickException(f'Final evaluation of {run} failed: {err}') from None
    for r in records:
        click.echo(f'{r["metric"]} {"decoded" if r["decoded"] else "raw"} {r["value"]:.6g} ({r["num"]} samples)')


if __name__ == '__main__':
    main()
