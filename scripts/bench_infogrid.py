"""σ grids at equal NFE on trained snapshots: the evaluation harness behind generate.py's grid defaults.

For every snapshot, solver, NFE and grid, the same latents go through training.sampler.heun_sampler on
that grid. Two measures:

    metric  the snapshot's domain metric on each of --sets latent sets of --num latents (lower is better):
            fd-digits(-binary) and fd-mnist(-binary) (Fréchet distance in the classifiers' features,
            training/metrics/digit_features.py and mnist_features.py), or any training.metrics.registry name
            (fd-dna, kmer-dna, motif-dna, ...) evaluated on the harness's own samples through
            registry.evaluate_samples. --metric auto picks it from the snapshot's dataset.
    traj    trajectory error: root-mean-square distance per element between the end points and a fine
            reference run from the same latents (deterministic Heun on EDM's ρ = 7 grid, --ref-steps
            levels), on the first --traj-num latents of each set. Cheap and low-noise; not defined for
            the stochastic sampler.

Grids (N nonzero levels from σ_max = 80 to σ_min = 0.002, clamped to the network's range, then 0): edm (EDM's
ρ = 7 grid, generate.py's default), loguniform, the constructions of infonoise.infogrid.VARIANTS on the snapshot's
profile (infogrid-blend is generate.py --infogrid's default), and infogrid-calibrated: the tempered grid with
(γ, ρ) chosen per NFE and solver by trajectory error on --calibrate separate latents (training.grid_calibration;
generate.py --infogrid-calibrate N); the sde solver uses Heun's calibration.

Solvers: heun (NFE = 2N − 1), euler (NFE = N), sde (EDM's stochastic Heun with the settings SDE below,
NFE = 2N − 1; metric only). An NFE that a solver cannot reach exactly (an even NFE for Heun) is skipped for
that solver, and the run says so in one line.

Outputs in --outdir: bench_infogrid.json (every value, per set), bench_infogrid.md (tables: metric mean
over the sets and trajectory error, one row per grid, one column per NFE; the best value of each column
in bold; the grids that are best or tied at every NFE; the decision over every snapshot, per solver:
the grids best or tied at every NFE on every snapshot, and how many cells each grid is best or tied in),
bench_infogrid.png (metric and trajectory error vs NFE, one line per grid, one column per solver).
--merge JSON adds the snapshots of earlier runs (other machines, other models) to the report and the
decision; for a snapshot in several, a later file's (solver, grid, NFE) cells replace an earlier file's.
With --merge alone nothing is sampled. --converged-steps N adds the metric of a fine run (EDM's grid,
N levels, Heun) on the same latent sets: the metric without discretization error. A grid that scores
better than that is helped by its discretization bias, not by its accuracy; the table and plot show it.

--quick: the digits demo (QUICK below) in about 5 minutes of 2 CPU cores. Without --network it reuses the newest
snapshot under OUTDIR/train or trains one first (`python train.py --preset digits-demo`, ~5 CPU minutes).
"""
from __future__ import annotations

import copy
import functools
import glob
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable, Optional

import click
import numpy as np
import torch

import infonoise
from cli_common import comma_list
from dnnlib.util import atomic_write, write_json
from infonoise.infogrid import TEMPERED_GAMMA
from training import network_io, sampler
from training.grid_calibration import CalibrationResult, NamedGrids, reference_samples, trajectory_error
from training.networks import data_shape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID_NAMES = ('edm', 'infogrid-literal', 'infogrid-entropic', 'infogrid-blend', 'loguniform',
              'infogrid-tempered', 'infogrid-solver', 'infogrid-calibrated')
SOLVER_NAMES = ('heun', 'euler', 'sde')
NFE_LIST = (5, 7, 9, 11, 13, 17, 25, 35)
SDE = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)   # EDM's ImageNet-64 stochastic settings
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
QUICK = dict(nfe=(5, 7, 11, 17, 35), solvers=('heun',), sets=2, num=100, traj_num=16, calibrate=8,
             calib_ref_steps=128)
FULL = dict(nfe=NFE_LIST, solvers=('heun', 'euler'), sets=2, num=500, traj_num=64, calibrate=16,
            calib_ref_steps=256)
TIE_FRACTION = 0.02     # a grid ties with the best when the means differ by <= max(either's set spread, 2 %)

EXAMPLES = """\b
Examples:
  python -m scripts.bench_infogrid --quick --outdir out/bench-infogrid
  python -m scripts.bench_infogrid --network runs/00000-digits-*/network-snapshot-000100.pkl --outdir out/bi
  python -m scripts.bench_infogrid --network NET.pkl --metric fd-mnist --solvers heun,euler,sde \\
      --nfe 5,7,9,11,13,17,25,35 --num 1000 --outdir out/bi-mnist
  python -m scripts.bench_infogrid --merge out/bi-digits --merge out/bi-mnist --outdir out/bi-all
"""


# ---------------------------------------------------------------------------------------------------
# Metrics by name.

Metric = Callable[[torch.Tensor, Optional[torch.Tensor]], float]     # (samples, class indices or None) -> value


# Metric name -> the builtin dataset whose classifier features are the Fréchet distance's reference.
BUILTIN_METRICS = {'fd-digits': 'digits', 'fd-digits-binary': 'digits-binary', 'fd-mnist': 'mnist5k',
                   'fd-mnist-binary': 'mnist5k-binary'}


def _builtin_frechet(reference: str) -> Metric:
    if reference.startswith('digits'):
        from training.metrics.digit_features import digit_frechet as frechet
    else:
        from training.metrics.mnist_features import mnist_frechet as frechet
    return lambda samples, classes: frechet(samples, reference=reference)


def auto_metric(dataset_kwargs: Optional[dict]) -> str:
    """The domain metric of a snapshot's dataset (its dataset_kwargs name or class)."""
    kw = dataset_kwargs or {}
    label = f'{kw.get("name", "")} {kw.get("class_name", "")} {kw.get("path", "")}'.lower()
    binary = 'binar' in label
    if 'digits' in label:
        return 'fd-digits-binary' if binary else 'fd-digits'
    if 'mnist' in label:
        return 'fd-mnist-binary' if binary else 'fd-mnist'
    if 'dna' in label:
        return 'fd-dna'
    raise ValueError(f'no domain metric known for the dataset {kw.get("name") or kw.get("class_name")!r}; '
                     'pass --metric NAME')


def resolve_metric(name: str, snapshot: dict) -> tuple[str, Metric]:
    """(metric name, (samples, classes) -> value); 'auto' reads the snapshot's dataset."""
    if name == 'auto':
        name = auto_metric(snapshot.get('dataset_kwargs'))
    if name in BUILTIN_METRICS:
        return name, _builtin_frechet(BUILTIN_METRICS[name])
    from training.metrics import registry
    if name not in registry.METRICS:
        known = ', '.join(sorted(set(BUILTIN_METRICS) | set(registry.METRICS)))
        raise ValueError(f'unknown metric {name!r}; choose from {known}')
    dataset_kwargs = snapshot.get('dataset_kwargs')

    def value(samples: torch.Tensor, classes: Optional[torch.Tensor]) -> float:
        classes_np = None if classes is None else classes.numpy()
        return float(registry.evaluate_samples([name], samples, classes_np, dataset_kwargs)[name])
    return name, value


# ---------------------------------------------------------------------------------------------------
# Grids and sampling.

def steps_for(solver: str, nfe: int) -> Optional[int]:
    """N nonzero levels that give exactly `nfe` network evaluations (None when impossible)."""
    if solver == 'euler':
        return nfe if nfe >= 2 else None
    return (nfe + 1) // 2 if nfe % 2 == 1 and nfe >= 3 else None


def unreachable_note(solvers, nfe_list) -> Optional[str]:
    """One line naming the NFEs a solver cannot reach exactly (they are skipped for it), or None."""
    parts = []
    for solver in solvers:
        missing = [str(n) for n in nfe_list if steps_for(solver, n) is None]
        if missing:
            rule = 'N' if solver == 'euler' else '2N − 1'
            parts.append(f'{solver} cannot reach NFE {", ".join(missing)} (its NFE is {rule})')
    return f'Skipped: {"; ".join(parts)}.' if parts else None


def make_latents(net: Any, num: int, seed: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """num standard-normal latents (and random one-hot labels for a conditional net) from one seed."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn([num, *data_shape(net)], generator=gen)
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    labels = torch.eye(label_dim)[torch.randint(label_dim, (num,), generator=gen)] if label_dim else None
    return latents, labels


def run_sampler(net: Any, latents: torch.Tensor, labels: Optional[torch.Tensor], grid: torch.Tensor, solver: str,
                seed: int, batch: int) -> torch.Tensor:
    """Samples (float64, CPU) of one solver on one grid, in batches; sde draws from a seeded generator."""
    device = next(net.parameters()).device if hasattr(net, 'parameters') else torch.device('cpu')
    out = []
    for b0 in range(0, latents.shape[0], batch):
        lat = latents[b0:b0 + batch].to(device)
        lab = None if labels is None else labels[b0:b0 + batch].to(device)
        kwargs: dict[str, Any] = {}
        if solver == 'sde':
            gen = torch.Generator(device).manual_seed(seed * 7919 + b0)
            kwargs = dict(SDE, randn_like=lambda x: torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=gen))
        with torch.no_grad():
            x = sampler.heun_sampler(net, lat, grid.to(device), lab, solver='euler' if solver == 'euler' else 'heun',
                                     **kwargs)
        out.append(x.cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------
# The benchmark.

def bench_snapshot(path: str, snapshot: dict, metric_name: str, grids, solvers, nfe_list, sets: int, num: int,
                   traj_num: int, ref_steps: int, calibrate: int, calib_ref_steps: int, seed: int, batch: int,
                   log: Callable[[str], None], converged_steps: int = 0) -> dict:
    """Every (solver, grid, NFE) on `sets` latent sets; returns the JSON-ready record of one snapshot."""
    began = time.time()
    net = snapshot['ema']
    if not snapshot.get('infonoise'):
        raise ValueError(f'{path} has no InfoNoise profile (train with --sigma-dist infonoise)')
    profile = infonoise.profile_from_json(dict(snapshot['infonoise']))
    metric_name, metric = resolve_metric(metric_name, snapshot)
    lo = max(SIGMA_MIN, float(getattr(net, 'sigma_min', 0.0)))
    hi = min(SIGMA_MAX, float(getattr(net, 'sigma_max', math.inf)))
    calib_latents = calib_labels = None
    if 'infogrid-calibrated' in grids:
        if calibrate == 0:
            raise ValueError('infogrid-calibrated needs calibration latents (--calibrate N > 0)')
        calib_latents, calib_labels = make_latents(net, calibrate, seed + 10_007)

    def calibrated(solver: str, n: int, r: CalibrationResult) -> None:
        log(f'  calibrated {solver} N={n}: gamma={r.gamma:g} rho={r.rho:g} (error {r.error:.4g} vs EDM '
            f'{r.edm_error:.4g}, {r.seconds:.1f} s)')
    maker = NamedGrids(net, profile, lo, hi, calib_latents, calib_labels, calib_ref_steps, calibrated)
    latent_sets = [make_latents(net, num, seed + s) for s in range(sets)]
    references = []
    if any(s != 'sde' for s in solvers):
        for s, (lat, lab) in enumerate(latent_sets):
            log(f'{os.path.basename(path)}: reference run, set {s} ({traj_num} latents, {ref_steps} levels)')
            references.append(reference_samples(net, lat[:traj_num], None if lab is None else lab[:traj_num],
                                                lo, hi, ref_steps).cpu())
    converged = None
    if converged_steps:
        # The metric without discretization error (to a good approximation): a grid that beats it at
        # some NFE is helped by its discretization bias, not by accuracy.
        grid = maker('edm', converged_steps)
        values = [float(metric(run_sampler(net, lat, lab, grid, 'heun', seed + 100 * s + converged_steps, batch),
                               None if lab is None else lab.argmax(1)))
                  for s, (lat, lab) in enumerate(latent_sets)]
        converged = dict(num_steps=converged_steps, metric=values, metric_mean=float(np.mean(values)))
        log(f'{os.path.basename(path)}: converged ({converged_steps}-level EDM Heun) {metric_name} '
            f'{converged["metric_mean"]:.3f}')
    results: dict[str, dict] = {}
    for solver in solvers:
        for nfe in nfe_list:
            n = steps_for(solver, nfe)
            if n is None:
                continue
            for name in grids:
                grid = maker(name, n, 'euler' if solver == 'euler' else 'heun')   # sde: Heun's grids
                cell = {'num_steps': n, 'sigma_steps': [float(v) for v in grid], 'metric': [], 'traj': []}
                for s, (lat, lab) in enumerate(latent_sets):
                    x = run_sampler(net, lat, lab, grid, solver, seed + 100 * s + n, batch)
                    cell['metric'].append(float(metric(x, None if lab is None else lab.argmax(1))))
                    if solver != 'sde':
                        cell['traj'].append(trajectory_error(x[:traj_num], references[s]))
                cell['metric_mean'] = float(np.mean(cell['metric']))
                cell['traj_mean'] = float(np.mean(cell['traj'])) if cell['traj'] else None
                results.setdefault(solver, {}).setdefault(name, {})[str(nfe)] = cell
                log(f'  {solver} NFE {nfe:>3} {name:<20} {metric_name} {cell["metric_mean"]:8.3f}'
                    + (f'  traj {cell["traj_mean"]:.4g}' if cell['traj'] else ''))
    calibration = {kind: {n: r.summary() for n, r in done.items()} for kind, done in maker.calibrations.items()}
    return {'metric': metric_name, 'dataset_kwargs': snapshot.get('dataset_kwargs'), 'results': results,
            'converged': converged, 'calibration': calibration, 'sigma_range': [lo, hi],
            'seconds': round(time.time() - began, 1)}


def best_or_tied(per_grid: dict, nfe_keys, key: str, spread_key: Optional[str]) -> dict[str, list[str]]:
    """Per NFE column, the grids whose mean is within the tie band of the best mean."""
    out = {}
    for nfe in nfe_keys:
        cells = {g: row[nfe] for g, row in per_grid.items() if nfe in row and row[nfe].get(key) is not None}
        if not cells:
            continue
        best_cell = min(cells.values(), key=lambda c: c[key])
        best = best_cell[key]

        def spread(c):
            values = c.get(spread_key) or []
            return (max(values) - min(values)) if len(values) > 1 else 0.0
        out[nfe] = [g for g, c in cells.items()
                    if c[key] - best <= max(spread(c), spread(best_cell), TIE_FRACTION * abs(best))]
    return out


def merge_records(sources: list[dict]) -> dict:
    """Snapshot records of several runs as one: a later source's (solver, grid, NFE) cells and converged
    metric replace an earlier one's for the same snapshot, and its calibrations join the earlier ones."""
    out: dict = {}
    for records in sources:
        for path, rec in records.items():
            if path not in out:
                out[path] = copy.deepcopy(rec)
                continue
            mine = out[path]
            if mine['metric'] != rec['metric']:
                raise ValueError(f'{path} was measured with {mine["metric"]} and with {rec["metric"]}; '
                                 'merge runs of one metric')
            for solver, per_grid in rec['results'].items():
                for grid, cells in per_grid.items():
                    mine['results'].setdefault(solver, {}).setdefault(grid, {}).update(copy.deepcopy(cells))
            if rec.get('converged'):
                mine['converged'] = rec['converged']
            for solver, calib in (rec.get('calibration') or {}).items():
                mine.setdefault('calibration', {}).setdefault(solver, {}).update(calib)
            mine['seconds'] = round(mine.get('seconds', 0) + rec.get('seconds', 0), 1)
    return out


def decision(records: dict, candidates: Optional[Callable[[str], bool]] = None,
             key: str = 'metric_mean', spread_key: str = 'metric') -> dict[str, dict]:
    """The rule behind generate.py's grid defaults, per solver, over every snapshot that ran it.

    Only the grids for which `candidates(name)` is true compete (default: all). Returns {solver:
    {'everywhere': the grids best or tied at every NFE of every snapshot, 'cells': {grid: [cells where it
    is best or tied, cells where it was measured]}, 'snapshots': how many}}; a grid missing from a cell
    cannot be best everywhere. key/spread_key choose the measure ('traj_mean'/'traj': trajectory error).
    """
    out: dict[str, dict] = {}
    for solver in sorted({s for rec in records.values() for s in rec['results']}):
        runs = [{g: row for g, row in rec['results'][solver].items() if candidates is None or candidates(g)}
                for rec in records.values() if solver in rec['results']]
        grids = sorted(set.union(*(set(per_grid) for per_grid in runs)))
        cells = {g: [0, 0] for g in grids}
        everywhere = set(grids)
        for per_grid in runs:
            nfe_keys = sorted({k for row in per_grid.values() for k in row if row[k].get(key) is not None}, key=int)
            ties = best_or_tied(per_grid, nfe_keys, key, spread_key)
            for g in grids:
                for k in nfe_keys:
                    if per_grid.get(g, {}).get(k, {}).get(key) is None:     # not measured there
                        everywhere.discard(g)
                        continue
                    cells[g][1] += 1
                    if g in ties.get(k, []):
                        cells[g][0] += 1
                    else:
                        everywhere.discard(g)
        if any(total for _, total in cells.values()):
            out[solver] = dict(everywhere=[g for g in grids if g in everywhere and cells[g][1]], cells=cells,
                               snapshots=len(runs))
    return out


def versus(records: dict, baseline: str = 'edm', key: str = 'metric_mean',
           spread_key: str = 'metric') -> dict[str, dict[str, list]]:
    """Head to head with one grid: {solver: {grid: [cells it beats the baseline in, ties, loses]}}, with the
    tie band of `best_or_tied`, over every snapshot and NFE where both were measured."""
    out: dict[str, dict[str, list]] = {}
    for rec in records.values():
        for solver, per_grid in rec['results'].items():
            base = per_grid.get(baseline)
            if base is None:
                continue
            for g, row in per_grid.items():
                if g == baseline:
                    continue
                for k, cell in row.items():
                    if cell.get(key) is None or base.get(k, {}).get(key) is None:
                        continue
                    tied = best_or_tied({baseline: base, g: row}, [k], key, spread_key)[k]
                    counts = out.setdefault(solver, {}).setdefault(g, [0, 0, 0])
                    counts[0 if tied == [g] else 2 if tied == [baseline] else 1] += 1
    return out


def is_infogrid(name: str) -> bool:
    """The constructions `generate.py --infogrid` can use (EDM's and the log-uniform grid are not)."""
    return name.startswith('infogrid-')


def decision_markdown(records: dict) -> list[str]:
    metrics = '/'.join(sorted({r['metric'] for r in records.values()}))
    lines = [f'## Decision over {len(records)} snapshot(s)', '',
             f'Rule: a grid earns a default when its {metrics} is best or tied (within the set-to-set spread or '
             f'{TIE_FRACTION:.0%}) at every NFE on every snapshot. `--infogrid` takes the InfoGrid construction that '
             'does so among the InfoGrid constructions; EDM\'s grid stays the plain default unless an InfoGrid '
             'construction does so among all grids.', '']
    views = ((f'{metrics}, all grids', None, 'metric_mean', 'metric'),
             (f'{metrics}, InfoGrid constructions only', is_infogrid, 'metric_mean', 'metric'),
             ('trajectory error, all grids', None, 'traj_mean', 'traj'))
    for title, candidates, key, spread_key in views:
        for solver, d in decision(records, candidates, key, spread_key).items():
            counts = ', '.join(f'{g} {a}/{b}' for g, (a, b) in sorted(d['cells'].items(), key=lambda kv: -kv[1][0]))
            lines += [f'- {title}, {solver} ({d["snapshots"]} snapshot(s)): best or tied everywhere: '
                      f'{", ".join(d["everywhere"]) or "none"}. Cells best or tied: {counts}.']
    lines += ['', "Against EDM's grid (cells won / tied / lost, same tie band):", '']
    for title, key, spread_key in ((metrics, 'metric_mean', 'metric'), ('trajectory error', 'traj_mean', 'traj')):
        for solver, per_grid in versus(records, 'edm', key, spread_key).items():
            lines += [f'- {title}, {solver}: ' + ', '.join(f'{g} {w}/{t}/{lo}' for g, (w, t, lo) in per_grid.items())
                      + '.']
    return lines + ['']


def markdown(records: dict) -> str:
    lines = []
    for path, rec in records.items():
        lines += [f'## {path}', '', f'Metric: {rec["metric"]} (lower is better); trajectory error = RMS distance per '
                  'element to the fine reference from the same latents. Bold: best in the column.', '']
        if rec.get('converged'):
            c = rec['converged']
            lines += [f'Converged {rec["metric"]} ({c["num_steps"]}-level EDM Heun, same latent sets): '
                      f'{c["metric_mean"]:.3f} (sets: {", ".join(f"{v:.3f}" for v in c["metric"])}).', '']
        for solver, per_grid in rec['results'].items():
            nfe_keys = sorted({k for row in per_grid.values() for k in row}, key=int)
            measures = (('metric_mean', 'metric', rec['metric']), ('traj_mean', 'traj', 'trajectory error'))
            for key, spread, title in measures:
                if all(per_grid[g][k].get(key) is None for g in per_grid for k in per_grid[g]):
                    continue
                lines += [f'### {solver}: {title}', '', '| grid | ' + ' | '.join(f'NFE {k}' for k in nfe_keys) + ' |',
                          '|---|' + '---:|' * len(nfe_keys)]
                for g, row in per_grid.items():
                    cells = []
                    for k in nfe_keys:
                        v = row.get(k, {}).get(key)
                        best = min((per_grid[h][k][key] for h in per_grid
                                    if per_grid[h].get(k, {}).get(key) is not None), default=None)
                        text = '' if v is None else (f'{v:.3f}' if key == 'metric_mean' else f'{v:.4f}')
                        cells.append(f'**{text}**' if v is not None and v == best else text)
                    lines.append(f'| {g} | ' + ' | '.join(cells) + ' |')
                chosen = decision({path: rec}, None, key, spread)[solver]['everywhere']
                everywhere = [g for g in per_grid if g in chosen]
                lines += ['', f'Best or tied ({title}, tie = within the set-to-set spread or {TIE_FRACTION:.0%}) at '
                          f'every NFE: {", ".join(everywhere) or "none"}.', '']
    return '\n'.join(lines + decision_markdown(records)) + '\n'


def plot(records: dict, path: str) -> None:
    from training.metrics.plotting import pyplot, save_figure
    plt = pyplot()
    panels = [(p, solver) for p, rec in records.items() for solver in rec['results']]
    fig, axes = plt.subplots(2, len(panels), figsize=(5.2 * len(panels), 8), squeeze=False)
    for col, (p, solver) in enumerate(panels):
        rec = records[p]
        for row, (key, label) in enumerate((('metric_mean', rec['metric']), ('traj_mean', 'trajectory error'))):
            ax = axes[row][col]
            ticks = set()
            for i, (g, cells) in enumerate(rec['results'][solver].items()):
                pts = sorted((int(k), c[key]) for k, c in cells.items() if c.get(key) is not None)
                if pts:
                    colour = GRID_NAMES.index(g) if g in GRID_NAMES else i     # one colour per grid in every panel
                    ax.plot(*zip(*pts), marker='o', markersize=3, label=g, color=f'C{colour % 10}')
                    ticks.update(n for n, _ in pts)
            if not ticks:
                ax.set_axis_off()
                continue
            if row == 0 and rec.get('converged'):
                ax.axhline(rec['converged']['metric_mean'], color='k', linestyle='--', linewidth=0.8,
                           label=f'converged ({rec["converged"]["num_steps"]} levels)')
            ax.set_xscale('log')
            ax.set_yscale('log')
            ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
            ax.minorticks_off()
            ax.set_xlabel('NFE')
            ax.set_ylabel(label)
            folder_and_file = os.path.join(*os.path.normpath(p).split(os.sep)[-2:])   # snapshots share file names
            ax.set_title(f'{folder_and_file} · {solver}', fontsize=9)
            ax.grid(True, which='both', alpha=0.3)
            if row == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, bbox_inches=None)


# ---------------------------------------------------------------------------------------------------
# CLI.

def _merged(ctx, param, value) -> tuple[tuple[str, dict], ...]:
    """Each --merge as (file, its parsed bench_infogrid.json)."""
    out = []
    for path in value:
        if os.path.isdir(path):
            path = os.path.join(path, 'bench_infogrid.json')
        try:
            with open(path, encoding='utf-8') as f:
                runs = json.load(f)
        except OSError as exc:
            raise click.BadParameter(f'cannot read {path}: {exc.strerror or exc}') from None
        except ValueError:
            raise click.BadParameter(f'{path} is not JSON') from None
        if not isinstance(runs, dict) or not isinstance(runs.get('snapshots'), dict):
            raise click.BadParameter(f'{path} is not a bench_infogrid.json (no "snapshots")')
        out.append((path, runs))
    return tuple(out)


def demo_snapshot(outdir: str, log: Callable[[str], None]) -> str:
    """The newest digits-demo snapshot under OUTDIR/train, training one first if there is none."""
    train_dir = os.path.join(outdir, 'train')

    def newest():
        found = sorted(glob.glob(os.path.join(train_dir, '*', 'network-snapshot-*.pkl')))
        return found[-1] if found else None
    if newest() is None:
        log(f'No snapshot under {train_dir}: training the digits demo (python train.py --preset digits-demo) ...')
        done = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--preset', 'digits-demo',
                               '--outdir', train_dir], cwd=ROOT)
        if done.returncode != 0 or newest() is None:
            raise click.ClickException('training the digits demo failed; pass --network SNAPSHOT instead.')
    return newest()


@click.command(epilog=EXAMPLES, context_settings={'show_default': True, 'max_content_width': 110})
@click.option('--network', 'networks', multiple=True, metavar='PATH', help='Snapshot(s) with an InfoNoise profile.')
@click.option('--outdir', required=True, type=click.Path(file_okay=False), help='Where the table, JSON and PNG go.')
@click.option('--quick', is_flag=True, help='Small settings for the digits demo (about 5 minutes on 2 CPU cores).')
@click.option('--grids', default=','.join(GRID_NAMES), callback=comma_list(GRID_NAMES), help='Grids to compare.')
@click.option('--solvers', default=None, callback=comma_list(SOLVER_NAMES),
              help='Solvers  [default: heun,euler; quick: heun]')
@click.option('--nfe', default=None, callback=comma_list(minimum=2),
              help='NFEs  [default: 5,7,9,11,13,17,25,35; quick: 5,7,11,17,35]')
@click.option('--metric', default='auto', help='Domain metric name (auto: from the snapshot dataset).')
@click.option('--sets', type=click.IntRange(min=1), default=None, help='Latent sets  [default: 2]')
@click.option('--num', type=click.IntRange(min=2), default=None, help='Latents per set  [default: 500; quick: 100]')
@click.option('--traj-num', type=click.IntRange(min=1), default=None,
              help='Latents per set for the trajectory error  [default: 64; quick: 16]')
@click.option('--ref-steps', type=click.IntRange(min=2), default=256, help='Levels of the reference run.')
@click.option('--calibrate', type=click.IntRange(min=0), default=None,
              help='Calibration latents for infogrid-calibrated (0: leave that grid out)  [default: 16; quick: 8]')
@click.option('--calib-ref-steps', type=click.IntRange(min=2), default=None,
              help='Levels of the calibration reference  [default: 256; quick: 128]')
@click.option('--seed', type=click.IntRange(min=0), default=0, help='Seed of the first latent set.')
@click.option('--batch', type=click.IntRange(min=1), default=500, help='Latents per sampler call.')
@click.option('--threads', type=click.IntRange(min=1), default=None, help='torch CPU threads  [default: torch\'s]')
@click.option('--converged-steps', type=click.IntRange(min=0), default=0,
              help='Also score a fine EDM-grid Heun run of this many levels on the same sets (0: skip).')
@click.option('--merge', 'merged', multiple=True, metavar='JSON', callback=_merged,
              help='Earlier bench_infogrid.json files (or their folders) whose snapshots join this report and its '
                   'decision; without --network nothing is sampled.')
def main(networks, outdir, quick, grids, solvers, nfe, metric, sets, num, traj_num, ref_steps, calibrate,
         calib_ref_steps, seed, batch, threads, converged_steps, merged):
    """Domain metric and trajectory error of every σ grid at equal NFE (EDM's grid, InfoGrid variants)."""
    preset = QUICK if quick else FULL
    solvers = solvers or preset['solvers']
    nfe = nfe or preset['nfe']
    sets = sets or preset['sets']
    num = num or preset['num']
    traj_num = min(traj_num or preset['traj_num'], num)
    calibrate = preset['calibrate'] if calibrate is None else calibrate
    calib_ref_steps = calib_ref_steps or preset['calib_ref_steps']
    if threads:
        torch.set_num_threads(threads)
    log = functools.partial(click.echo, err=True)
    if calibrate == 0 and 'infogrid-calibrated' in grids:
        grids = [g for g in grids if g != 'infogrid-calibrated']
        if not grids:
            raise click.BadParameter('--calibrate 0 skips infogrid-calibrated, the only grid named; give --calibrate '
                                     'N > 0 or more grids.', param_hint='--grids')
        log('--calibrate 0: infogrid-calibrated is skipped.')
    note = unreachable_note(solvers, nfe)
    if note is not None:
        log(note)

    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f'cannot create {outdir}: {exc.strerror or exc}', param_hint='--outdir')
    if not networks and not merged:
        if not quick:
            raise click.UsageError('give --network SNAPSHOT (or --quick, which trains or reuses the digits demo).')
        networks = (demo_snapshot(outdir, log),)
    try:
        records = merge_records([runs['snapshots'] for _, runs in merged])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint='--merge') from None
    began = time.time()
    for path in networks:
        try:
            snapshot = network_io.load_network(path)
            fresh = bench_snapshot(path, snapshot, metric, grids, solvers, nfe, sets, num, traj_num,
                                   ref_steps, calibrate, calib_ref_steps, seed, batch, log, converged_steps)
        except ValueError as exc:          # NetworkLoadError, no profile, unknown metric
            raise click.ClickException(str(exc).rstrip('.') + '.') from None
        try:
            records = merge_records([records, {path: fresh}])
        except ValueError:                 # merged with another metric: this run's values win
            log(f'{path}: the merged rows used another metric; this run replaces them.')
            records[path] = fresh
    settings = dict(grids=list(grids), solvers=list(solvers), nfe=list(nfe), sets=sets, num=num, traj_num=traj_num,
                    ref_steps=ref_steps, calibrate=calibrate, calib_ref_steps=calib_ref_steps, seed=seed,
                    converged_steps=converged_steps, quick=quick, threads=torch.get_num_threads(),
                    tempered_gamma=TEMPERED_GAMMA, sde=SDE, seconds=round(time.time() - began, 1),
                    merged={source: runs.get('settings') for source, runs in merged})
    table = markdown(records)
    write_json(os.path.join(outdir, 'bench_infogrid.json'), dict(settings=settings, snapshots=records))
    with atomic_write(os.path.join(outdir, 'bench_infogrid.md')) as f:
        f.write(table.encode())
    try:
        plot(records, os.path.join(outdir, 'bench_infogrid.png'))
    except ImportError:
        log('matplotlib is not installed (pip install .[plot]): no PNG written.')
    click.echo(table)
    click.echo(f'Wrote {outdir}/bench_infogrid.{{md,json,png}} in {settings["seconds"]:.0f} s.')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
