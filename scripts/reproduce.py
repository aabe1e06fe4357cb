"""Reproduce the paper's Table 1: print (default) or launch the training and evaluation commands.

Every row trains one preset (configs/NAME.json) three times, varying only the training σ distribution
and, on discrete data, the loss weight (paper Section 6):

    (a) discrete, allocation-controlled (w = 1)   bMNIST, bFashionMNIST, DNA
          loguniform   --sigma-dist loguniform --weighting unit
          edm          --sigma-dist lognormal  --weighting edm    (EDM transfer baseline: the full EDM recipe)
          infonoise    --sigma-dist infonoise  --weighting unit
    (b) continuous, EDM objective (w_EDM)          MNIST, FashionMNIST, CIFAR-10 uncond./cond., FFHQ 64x64
          loguniform   --sigma-dist loguniform
          edm          --sigma-dist lognormal
          infonoise    --sigma-dist infonoise
    (cpu) the same two recipes on scikit-learn's 8x8 digits (rows digits, digits-binary; preset
          digits-demo), scored with the digit-classifier Fréchet distance instead of FID: a CPU-sized
          end-to-end check of the whole kit.
    imagenet64 (EDM's ImageNet 64x64 recipe) is available as an extra row; it is not part of Table 1.

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
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Sequence

import click

from scripts import report
from training import options as opt_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root (train.py's folder)

EDM_REFS = 'https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs'
DISCRETE_METHODS = {'loguniform': ['--sigma-dist', 'loguniform', '--weighting', 'unit'],
                    'edm': ['--sigma-dist', 'lognormal', '--weighting', 'edm'],
                    'infonoise': ['--sigma-dist', 'infonoise', '--weighting', 'unit']}
CONTINUOUS_METHODS = {'loguniform': ['--sigma-dist', 'loguniform'],
                      'edm': ['--sigma-dist', 'lognormal'],
                      'infonoise': ['--sigma-dist', 'infonoise']}
METHODS = ('loguniform', 'edm', 'infonoise')
DIGIT_DETECTOR = 'digit-detector.pt'


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

    @property
    def methods(self) -> dict[str, list[str]]:
        return DISCRETE_METHODS if self.discrete else CONTINUOUS_METHODS


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
          'a': [k for k, r in ROWS.items() if r.section == 'a'],
          'b': [k for k, r in ROWS.items() if r.section == 'b'],
          'cpu': [k for k, r in ROWS.items() if r.section == 'cpu']}
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


def run_dir(plan: Plan, row: Row, method: str, seed: int) -> str:
    return os.path.join(plan.outdir, row.key, f'{method}-seed{seed}')


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
           '--outdir', run_dir(plan, row, method, seed), '--nosubdir', '--seed', str(seed), *row.methods[method]]
    for flag, value in (('--kimg', plan.kimg), ('--tick', plan.tick), ('--snap', plan.snap), ('--device', plan.device)):
        if value is not None:
            cmd += [flag, f'{value:g}' if isinstance(value, float) else str(value)]
    return cmd


def ref_command(plan: Plan, row: Row) -> list[str] | None:
    """`fid.py ref` for rows whose reference statistics are computed from the training data (else None)."""
    if '://' in row.ref:
        return None
    cmd = [*launcher(plan.nproc), 'fid.py', 'ref', '--data', data_spec(plan, row), '--dest', ref_path(plan, row)]
    return cmd + _detector_args(plan, row)


def fid_command(plan: Plan, row: Row, snapshot: str) -> list[str]:
    """`fid.py calc --network SNAPSHOT --ref REF` with the row's image count and sampler steps."""
    num = plan.fid_num or row.num
    cmd = [*launcher(plan.nproc), 'fid.py', 'calc', '--network', snapshot, '--ref', ref_path(plan, row),
           '--num', str(num), '--steps', str(plan.fid_steps or row.steps)]
    if plan.fid_batch is not None:
        cmd += ['--batch', str(plan.fid_batch)]
    if plan.device is not None:
        cmd += ['--device', plan.device]
    return cmd + _detector_args(plan, row)


def _detector_args(plan: Plan, row: Row) -> list[str]:
    det = detector_path(plan, row)
    return ['--detector', det] if det is not None else []


def shell(cmd: Sequence[str]) -> str:
    return ' '.join(shlex.quote(c) for c in cmd)


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
            echo(shell(cmd))
        for method in methods:
            for seed in plan.seeds:
                echo(f'# {report.METHOD_LABELS.get(method, method)}, seed {seed}')
                echo(shell(train_command(plan, row, method, seed)))
                snap = os.path.join(run_dir(plan, row, method, seed), 'network-snapshot-KKKKKK.pkl')
                echo('#   every snapshot: ' + shell(fid_command(plan, row, snap)))


# ----------------------------------------------------------------------------------------------
# Launching and evaluating.

def _executable(cmd: list[str]) -> list[str]:
    if cmd[0] == 'python':
        return [sys.executable, *cmd[1:]]
    if cmd[0] == 'torchrun':
        return [sys.executable, '-m', 'torch.distributed.run', *cmd[1:]]
    return cmd


def execute(cmd: list[str], capture: bool = False) -> str:
    """Run a command from the repository root; a failure becomes one ClickException sentence."""
    click.echo(f'$ {shell(cmd)}', err=True)
    proc = subprocess.run(_executable(cmd), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        tail = [ln for ln in ((proc.stderr or '') + (proc.stdout or '')).splitlines() if ln.strip()] if capture else []
        reason = tail[-1].strip() if tail else f'exit code {proc.returncode}'
        raise click.ClickException(f'Command failed ({reason}): {shell(cmd)}')
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
    records = report.read_jsonl(path) if os.path.isfile(path) else []
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
    cmd = train_command(plan, row, method, seed)
    if os.path.isdir(directory) and any(n.startswith('training-state-') for n in os.listdir(directory)):
        cmd += ['--resume', directory]
    os.makedirs(directory, exist_ok=True)
    execute(cmd)


def _absolute(plan: Plan) -> Plan:
    """Paths made absolute, so the commands run from the repository root mean what the user typed."""
    def fix(p: str | None) -> str | None:
        return None if p is None or '://' in p else os.path.abspath(p)
    return dataclasses.replace(plan, outdir=fix(plan.outdir), data_root=fix(plan.data_root),
                               ref_root=fix(plan.ref_root), dna_table=fix(plan.dna_table),
                               sei_detector=fix(plan.sei_detector))


# ----------------------------------------------------------------------------------------------
# CLI.

def _parse_rows(value: str) -> list[Row]:
    keys: list[str] = []
    for part in (p.strip() for p in value.split(',')):
        if not part:
            continue
        names = GROUPS.get(part, [part])
        for name in names:
            if name not in ROWS:
                raise click.BadParameter(f'unknown row {name!r}; choose from {", ".join([*GROUPS, *ROWS])}.',
                                         param_hint='--rows')
            if name not in keys:
                keys.append(name)
    if not keys:
        raise click.BadParameter('no rows given.', param_hint='--rows')
    return [ROWS[k] for k in keys]


def _parse_methods(value: str) -> list[str]:
    methods = [m.strip() for m in value.split(',') if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if not methods or bad:
        raise click.BadParameter(f'unknown method(s) {", ".join(bad) or "(none)"}; choose from {", ".join(METHODS)}.',
                                 param_hint='--methods')
    return [m for m in METHODS if m in methods]


def _parse_seeds(value: str) -> list[int]:
    from training.generation import parse_seeds
    try:
        return parse_seeds(value)
    except ValueError as err:
        raise click.BadParameter(f'{err}.', param_hint='--seeds') from None


@click.command(context_settings=dict(show_default=True, max_content_width=110), epilog="""\b
Examples:
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
@click.option('--seeds', default='0', help='Training seeds, e.g. 0 or 0-2.')
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
def main(rows: str, methods: str, seeds: str, nproc: int, outdir: str, data_root: str, ref_root: str,
         dna_table: str | None, sei_detector: str | None, kimg: float | None, tick: float | None, snap: int | None,
         device: str | None, fid_num: int | None, fid_steps: int | None, fid_batch: int | None, eval_every: int,
         launch: bool, eval_only: bool) -> None:
    """Print (default) or launch the torchrun commands that reproduce the paper's Table 1."""
    if launch and eval_only:
        raise click.UsageError('--launch and --eval-only are alternatives; give one.')
    chosen_rows = _parse_rows(rows)
    chosen_methods = _parse_methods(methods)
    plan = Plan(outdir=outdir, data_root=data_root, ref_root=ref_root,
                dna_table=dna_table or os.path.join(data_root, 'dna-diffusion.txt'), sei_detector=sei_detector,
                nproc=nproc, seeds=_parse_seeds(seeds), kimg=kimg, tick=tick, snap=snap, device=device,
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


if __name__ == '__main__':
    main()
