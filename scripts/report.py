"""Build the Table 1 report (final metric, kEx@target, speed-up) and metric-vs-kimg plots from run directories.

A run directory (what `scripts/reproduce.py` lays out: RUNS/ROW/METHOD-seedSEED/) holds train.py's
`stats.jsonl` (one line per tick) and the driver's `metrics.jsonl`, one JSON object per evaluated
snapshot:

    {"row": "bmnist", "title": "bMNIST", "section": "a", "method": "infonoise", "seed": 0,
     "metric": "FID", "kimg": 50.176, "value": 0.41, "snapshot": "network-snapshot-000050.pkl", ...}

Records without row / method / seed take them from the directory names. Every (row, method) pools its
seeds; `compute_to_target` then applies the paper's compute-to-target rule (Section 6):

    target m*          the best (lowest) score of any fixed baseline's seed-averaged curve;
    kEx@target         the first kimg at which a method's seed-averaged curve reaches m <= m*, linearly
                       interpolated between the two evaluations that bracket the crossing; a curve that
                       never reaches m* is reported at its budget (its last evaluation) and marked '>';
    speed-up           kEx@target of the best baseline / kEx@target of InfoNoise, on the averaged curves;
                       its spread is the mean ± std of the same ratio per seed (curves of equal seeds paired).

"Fixed baselines" are all methods except the adaptive one ('infonoise'). Standard deviations are the
sample std (ddof = 1) over seeds; with one seed they are 0. The same functions serve
`scripts/bench_time_to_quality.py`.

Examples:
    python -m scripts.report runs/table1
    python -m scripts.report runs/table1 --json table1.json --plots plots/
"""
from __future__ import annotations

import collections
import io
import json
import math
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import click
import numpy as np


from dnnlib.util import atomic_write

ADAPTIVE = 'infonoise'
METHOD_ORDER = ('loguniform', 'edm', 'lognormal-w1', 'infonoise')
METHOD_LABELS = {'loguniform': 'log-uniform', 'edm': 'EDM', 'lognormal-w1': 'log-normal (w=1)',
                 'infonoise': 'InfoNoise'}
SECTION_TITLES = {'a': 'Table 1(a): discrete domains', 'b': 'Table 1(b): continuous images',
                  'digits': 'CPU-scale digits (digit-classifier Fréchet distance)'}
SNAPSHOT_RE = re.compile(r'^network-snapshot-(\d+)\.pkl$')
RUN_DIR_RE = re.compile(r'^(?P<method>.+)-seed(?P<seed>\d+)$')

Curve = Sequence[tuple[float, float]]   # [(kimg, value), ...] in increasing kimg


# ----------------------------------------------------------------------------------------------
# Compute-to-target arithmetic (pure functions).

def first_reach(kimg: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """First kimg at which the piecewise-linear curve through (kimg_i, value_i) reaches value <= target.

    The crossing is interpolated linearly between the last evaluation above the target and the first one
    at or below it; if the first evaluation already meets the target, its kimg is returned. Non-finite
    values never meet the target (and a crossing right after one is placed at the meeting evaluation).
    None when no evaluation meets the target.
    """
    k = np.asarray(kimg, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if k.shape != v.shape or k.ndim != 1:
        raise ValueError(f'kimg and values must be 1-D and equally long, got {k.shape} and {v.shape}.')
    for i in range(len(v)):
        if not (np.isfinite(v[i]) and v[i] <= target):
            continue
        if i == 0 or not np.isfinite(v[i - 1]):
            return float(k[i])
        frac = (v[i - 1] - target) / (v[i - 1] - v[i])
        return float(k[i - 1] + frac * (k[i] - k[i - 1]))
    return None


def mean_curve(curves: Iterable[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kimg, mean, std) over seeds at the kimg values every curve has (matched to 1e-3 kimg).

    std is the sample standard deviation (ddof = 1), 0 for a single curve.
    """
    curves = [sorted((float(k), float(v)) for k, v in c) for c in curves]
    if not curves or any(not c for c in curves):
        raise ValueError('mean_curve needs at least one non-empty curve.')
    keyed = [{round(k, 3): v for k, v in c} for c in curves]
    common = sorted(set.intersection(*(set(d) for d in keyed)))
    values = np.array([[d[k] for k in common] for d in keyed], dtype=np.float64).reshape(len(keyed), len(common))
    std = values.std(axis=0, ddof=1) if len(keyed) > 1 else np.zeros(len(common))
    return np.array(common, dtype=np.float64), values.mean(axis=0), std


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def compute_to_target(curves: Mapping[str, Mapping[Any, Curve]], adaptive: str = ADAPTIVE,
                      baselines: Sequence[str] | None = None) -> dict:
    """The compute-to-target summary of one table row (see the module docstring).

    curves:    method -> seed -> [(kimg, value), ...] (lower value = better).
    adaptive:  the method whose speed-up is reported (absent: no speed-up).
    baselines: the fixed baselines defining the target (default: every method but `adaptive`).
    Returns a JSON-ready dict: target, best_baseline, budget_kimg, methods{...}, speedup{...}.
    """
    methods = list(curves)
    baselines = [m for m in (baselines if baselines is not None else methods) if m != adaptive and m in curves]
    if not baselines:
        raise ValueError('compute_to_target needs at least one fixed baseline with a curve.')
    summary: dict[str, Any] = dict(methods={})
    means = {m: mean_curve(curves[m].values()) for m in methods}

    best_scores = {m: float(np.nanmin(means[m][1])) if np.isfinite(means[m][1]).any() else math.inf
                   for m in baselines}
    best_baseline = min(baselines, key=lambda m: best_scores[m])
    target = best_scores[best_baseline]
    summary.update(target=target if math.isfinite(target) else None, best_baseline=best_baseline)

    for m in methods:
        kimg, mean, std = means[m]
        budget = float(kimg[-1])
        kex = first_reach(kimg, mean, target) if math.isfinite(target) else None
        finals = [float(sorted(c)[-1][1]) for c in curves[m].values()]
        seeds = {}
        for seed, c in curves[m].items():
            c = sorted(c)
            k = first_reach([p[0] for p in c], [p[1] for p in c], target) if math.isfinite(target) else None
            seeds[str(seed)] = dict(kex=k if k is not None else float(c[-1][0]), reached=k is not None,
                                    final=float(c[-1][1]), budget_kimg=float(c[-1][0]))
        final_mean, final_std = _mean_std(finals)
        best = float(np.nanmin(mean)) if np.isfinite(mean).any() else None
        summary['methods'][m] = dict(
            final_mean=final_mean, final_std=final_std, best=best,
            kex=kex if kex is not None else budget, reached=kex is not None, budget_kimg=budget,
            num_seeds=len(finals), seeds=seeds,
            curve=dict(kimg=kimg.tolist(), mean=mean.tolist(), std=std.tolist()))

    if adaptive in curves:
        base, ada = summary['methods'][best_baseline], summary['methods'][adaptive]
        ratio = base['kex'] / ada['kex'] if ada['kex'] > 0 else None
        paired = sorted(set(base['seeds']) & set(ada['seeds']))
        per_seed = [base['seeds'][s]['kex'] / ada['seeds'][s]['kex'] for s in paired if ada['seeds'][s]['kex'] > 0]
        censored = [s for s in paired if not ada['seeds'][s]['reached'] or not base['seeds'][s]['reached']]
        seed_mean, seed_std = _mean_std(per_seed)
        summary['speedup'] = dict(
            value=ratio, reached=ada['reached'], baseline=best_baseline,
            seed_mean=seed_mean if per_seed else None, seed_std=seed_std if per_seed else None,
            per_seed=dict(zip(paired, per_seed)), censored_seeds=censored)
    return summary


# ----------------------------------------------------------------------------------------------
# Run directories.

def read_jsonl(path: str) -> list[dict]:
    """The JSON objects of a .jsonl file; a truncated or malformed line (a run still writing) is skipped."""
    rows = []
    with open(path, 'r', encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    return rows


def jsonable(obj: Any) -> Any:
    """A copy of `obj` fit for strict JSON: numpy scalars -> Python numbers, NaN/Inf -> None, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_jsonl(path: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write JSON lines atomically (the whole file is replaced)."""
    text = ''.join(json.dumps(dict(r), sort_keys=True) + '\n' for r in rows)
    with atomic_write(path) as f:
        f.write(text.encode('utf-8'))


def _stat_mean(row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    if isinstance(value, Mapping):
        value = value.get('mean')
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def snapshot_kimgs(run_dir: str) -> dict[str, float]:
    """Snapshot file name -> kimg for every network snapshot in a run directory.

    The name carries the kimg rounded down; the exact value is taken from stats.jsonl, whose tick
    lines report `Progress/kimg` (a snapshot is written at a tick end: the last tick line with the same
    whole kimg). Without stats the rounded value is used.
    """
    exact: dict[int, float] = {}
    stats = os.path.join(run_dir, 'stats.jsonl')
    if os.path.isfile(stats):
        for row in read_jsonl(stats):
            k = _stat_mean(row, 'Progress/kimg')
            if k is not None and math.isfinite(k):
                exact[int(math.floor(k + 1e-6))] = round(k, 6)
    out = {}
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        m = SNAPSHOT_RE.match(name)
        if m:
            out[name] = exact.get(int(m.group(1)), float(int(m.group(1))))
    return out


def training_speed(run_dir: str) -> dict:
    """Last kimg and mean seconds per kimg of a run, from stats.jsonl (None when absent)."""
    path = os.path.join(run_dir, 'stats.jsonl')
    rows = read_jsonl(path) if os.path.isfile(path) else []
    kimgs = [k for k in (_stat_mean(r, 'Progress/kimg') for r in rows) if k is not None]
    total = [t for t in (_stat_mean(r, 'Timing/total_sec') for r in rows) if t is not None]
    last_kimg = kimgs[-1] if kimgs else None
    sec_per_kimg = total[-1] / last_kimg if total and last_kimg else None
    return dict(kimg=last_kimg, sec_per_kimg=sec_per_kimg)


def find_runs(root: str) -> list[str]:
    """Every directory under `root` (itself included) that holds a metrics.jsonl, sorted."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if 'metrics.jsonl' in filenames:
            found.append(dirpath)
    return sorted(found)


def load_runs(root: str) -> dict:
    """row -> dict(title, section, metric, curves{method: {seed: curve}}, speed{method: {seed: ...}})."""
    rows: dict[str, dict] = {}
    for run_dir in find_runs(root):
        records = read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
        name_match = RUN_DIR_RE.match(os.path.basename(run_dir))
        default_row = os.path.basename(os.path.dirname(run_dir)) or 'run'
        default_method = name_match.group('method') if name_match else os.path.basename(run_dir)
        default_seed = int(name_match.group('seed')) if name_match else 0
        for rec in records:
            value = rec.get('value')
            kimg = rec.get('kimg')
            if not isinstance(value, (int, float)) or not isinstance(kimg, (int, float)):
                continue
            row = str(rec.get('row', default_row))
            method = str(rec.get('method', default_method))
            seed = int(rec.get('seed', default_seed))
            row = (row, str(rec.get('metric', 'metric')))   # split below when a row holds several metrics
            info = rows.setdefault(row, dict(title=row[0], section='', metric='metric', curves={}, speed={}))
            for field in ('title', 'section', 'metric'):
                if rec.get(field):
                    info[field] = str(rec[field])
            curve = info['curves'].setdefault(method, {}).setdefault(seed, {})
            curve[round(float(kimg), 6)] = float(value)
            info['speed'].setdefault(method, {})[seed] = training_speed(run_dir)
    for info in rows.values():
        info['curves'] = {m: {s: sorted(c.items()) for s, c in seeds.items()}
                          for m, seeds in info['curves'].items()}
    # A row evaluated with several metrics (train.py --metrics fd-dna,kmer-dna) becomes one row per metric.
    per_row = collections.Counter(row for row, _ in rows)
    out = {}
    for (row, metric), info in rows.items():
        out[row if per_row[row] == 1 else f'{row}:{metric}'] = info   # shown as 'title (metric)'
    return out


# ----------------------------------------------------------------------------------------------
# Formatting.

def method_order(methods: Iterable[str]) -> list[str]:
    """Known methods in table order, then any others alphabetically."""
    methods = list(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(m for m in methods if m not in METHOD_ORDER)


def format_value(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return '–'
    text = f'{mean:.{digits}g}'
    if std is not None and std > 0:
        text += f' ± {std:.2g}'
    return text


def format_kex(entry: Mapping[str, Any]) -> str:
    return ('' if entry['reached'] else '>') + f'{entry["kex"]:.4g}'


def format_speedup(speedup: Mapping[str, Any] | None) -> str:
    if not speedup or speedup.get('value') is None:
        return '–'
    text = ('≤' if not speedup['reached'] else '') + f'{speedup["value"]:.2f}×'
    if speedup.get('seed_mean') is not None and len(speedup.get('per_seed', {})) > 1:
        text += f' (seeds {speedup["seed_mean"]:.2f} ± {speedup["seed_std"]:.2f})'
    return text


def markdown_table(rows: Mapping[str, Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One markdown table per section: final metric and kEx@target per method, and the speed-up."""
    lines: list[str] = []
    sections: dict[str, list[str]] = {}
    for row, info in rows.items():
        sections.setdefault(str(info.get('section', '')), []).append(row)
    for section in sorted(sections, key=lambda s: (s not in SECTION_TITLES, s)):
        names = sections[section]
        methods = method_order({m for r in names for m in rows[r]['curves']})
        labels = [METHOD_LABELS.get(m, m) for m in methods]
        lines.append(f'### {SECTION_TITLES.get(section, "Runs" if not section else section)}')
        lines.append('')
        header = (['Dataset (metric)'] + [f'final {l}' for l in labels] + [f'kEx@target {l}' for l in labels]
                  + ['target', 'speed-up'])
        lines.append('| ' + ' | '.join(header) + ' |')
        lines.append('|' + '---|' * len(header))
        for row in names:
            info, s = rows[row], summaries[row]
            cells = [f'{info["title"]} ({info["metric"]})']
            for m in methods:
                e = s['methods'].get(m)
                cells.append(format_value(e['final_mean'], e['final_std']) if e else '–')
            for m in methods:
                e = s['methods'].get(m)
                cells.append(format_kex(e) if e else '–')
            cells.append(f'{format_value(s["target"])} ({METHOD_LABELS.get(s["best_baseline"], s["best_baseline"])})')
            cells.append(format_speedup(s.get('speedup')))
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    lines.append('kEx = thousands of training examples; target = best score of a fixed baseline (seed-averaged); '
                 "'>' = target not reached within the budget shown; final = last evaluation (mean ± std over seeds).")
    return '\n'.join(lines)


def plot_row(path: str, info: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    """Metric vs kimg (seed mean, ±std band) for one row, with the target line; PNG written atomically."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    lows, highs = [], []
    for m in method_order(summary['methods']):
        c = summary['methods'][m]['curve']
        k, mean, std = (np.asarray(c[x], dtype=np.float64) for x in ('kimg', 'mean', 'std'))
        lows.append(float(np.nanmin(mean)))
        highs.append(float(np.nanmax(mean)))
        line, = ax.plot(k, mean, marker='o', markersize=3, label=METHOD_LABELS.get(m, m))
        if np.any(std > 0):
            ax.fill_between(k, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if summary.get('target') is not None:
        ax.axhline(summary['target'], color='gray', linestyle='--', linewidth=1, label='target')
    if lows and min(lows) > 0 and max(highs) > 10 * min(lows):   # log scale only when it spans a decade
        ax.set_yscale('log')
    ax.set_xlabel('kimg (thousands of training examples)')
    ax.set_ylabel(str(info.get('metric', 'metric')))
    ax.set_title(str(info.get('title', '')))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    plt.close(fig)
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def build_report(root: str) -> tuple[dict, dict]:
    """(rows as `load_runs` returns them, row -> compute_to_target summary) for a runs directory."""
    rows = load_runs(root)
    summaries = {}
    for row, info in list(rows.items()):
        baselines = [m for m in info['curves'] if m != ADAPTIVE]
        if not baselines:   # e.g. a row whose baseline runs have not been evaluated yet
            del rows[row]
            continue
        summaries[row] = compute_to_target(info['curves'])
    return rows, summaries


# ----------------------------------------------------------------------------------------------
# CLI.

@click.command(context_settings=dict(show_default=True, max_content_width=110), epilog="""\b
Examples:
  python -m scripts.report runs/table1
  python -m scripts.report runs/table1 --json table1.json --plots plots/""")
@click.argument('runs', metavar='RUNS_DIR', type=click.Path(file_okay=False))
@click.option('--json', 'json_path', metavar='PATH', type=click.Path(dir_okay=False),
              help='Also write the full summary (curves, per-seed values) as JSON.')
@click.option('--plots', 'plot_dir', metavar='DIR', type=click.Path(file_okay=False),
              help='Write one metric-vs-kimg PNG per row into DIR.')
def main(runs: str, json_path: str | None, plot_dir: str | None) -> None:
    """Table 1 from run directories: final metric, kEx@target and speed-up, plus metric-vs-kimg plots."""
    if not os.path.isdir(runs):
        raise click.BadParameter(f'{runs} is not a directory.', param_hint='RUNS_DIR')
    try:
        rows, summaries = build_report(runs)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if not rows:
        raise click.ClickException(f'No row under {runs} has evaluated runs (metrics.jsonl) of both a fixed baseline '
                                   f'and another method; train with --metrics or run scripts.reproduce --eval-only.')
    click.echo(markdown_table(rows, summaries))
    if plot_dir is not None:
        os.makedirs(plot_dir, exist_ok=True)
        for row in sorted(rows):
            path = os.path.join(plot_dir, f'{row.replace(":", "-")}.png')
            plot_row(path, rows[row], summaries[row])
            click.echo(f'Wrote {path}')
    if json_path is not None:
        out = {row: dict(title=rows[row]['title'], section=rows[row]['section'], metric=rows[row]['metric'],
                         speed={m: {str(s): v for s, v in d.items()} for m, d in rows[row]['speed'].items()},
                         **summaries[row]) for row in rows}
        with atomic_write(json_path) as f:
            f.write((json.dumps(jsonable(out), indent=2, allow_nan=False) + '\n').encode('utf-8'))
        click.echo(f'Wrote {json_path}')


if __name__ == '__main__':
    main()
