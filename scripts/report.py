"""Table 1 reports from run directories, under the Table 1(a) protocol: plateau, paired seeds, paper's rule.

A run directory (what `scripts.reproduce` lays out: RUNS/ROW/METHOD-seedSEED/) holds `metrics.jsonl`, one
JSON object per (evaluation, metric) — train.py's `--metrics` lines `{"kimg", "kex", "metric", "value",
"seconds"}` or the driver's fid.py records (which also carry row / title / section / method / seed) —
and, for the Table 1(a) runs, `final.jsonl`: the final evaluation at a large sample size, one line per
(metric, decoded) with `num` (samples), `classes`, `decoded` and `value`. RUNS/ROW/row.json may give the row's
`title` and a `note` printed with it. RUNS/ROW/floor.json holds the
real-data floor of each metric at the sizes used (real training data against the metric's reference, by
the same code): `{"METRIC": {"N": value}}`. Records without row / method / seed take them from the
directory names. `python -m scripts.report RUNS` prints the report, writes it to RUNS/report.md and one
metric-vs-kEx plot per row and metric to RUNS/plots/.

The rules the report applies (lower metric = better; "fixed baselines" are all methods that are not
adaptive, i.e. not infonoise, its variants infonoise-freeze and infonoise-onset, loss-second-moment, kingma-gao or
cdcd):

  (a) plateau: the best fixed baseline's seed-mean curve improves by less than 5% between the first
      evaluation at or after 75% of the budget and the last one -> "plateau: yes", else "no".
  (b) evaluations: at least 12 per run, evenly spaced in kEx; fewer is printed as a protocol breach.
  (c) target = the best fixed baseline's final seed-mean value (best = the lowest among the fixed
      baselines). kEx@target = the first EVALUATED kEx at which a method's seed-mean curve is at or below
      the target (the paper's rule). The crossing interpolated linearly between the two bracketing
      evaluations appears only in a secondary, labelled column. Speed-up = the best baseline's kEx@target
      divided by the method's ('≤' when the method never reaches the target: its budget is used).
  (d) seeds: at least 3 per (row, method), the same seeds for every method. Per-seed paired differences
      (method − best fixed baseline) of the final metric and of kEx@target (each seed's own curve against
      the row's target) with their mean and 95% t-interval (scipy.stats.t); the verdict is "better" when
      the interval lies below 0, "worse" above 0, "tied" when it holds 0. A seed that does not reach the
      target within the budget is censored: printed '>budget' and left out of the kEx differences, never
      averaged as if reached; the differences use the seeds where both runs reached it.
  (e) the final metric of a run is its final.jsonl value (>= 1,000 generated samples per class for DNA,
      >= 2,000 for images; smaller sizes are printed as a breach), shown next to the real-data floor at
      the same size; without final.jsonl the last curve point is used and labelled so.
  (f) discrete rows are scored on decoded samples (sign for ±1 images, argmax for one-hot DNA); the raw
      (undecoded) final value is printed once per row where recorded.
  (g) each paper claim a row tests (PAPER_CLAIMS) ends the report with one word, confirmed / not confirmed /
      refuted at this scale, from the intervals of (d) (claim_verdict) and the reason.
  (h) tuning (issue 17): the log-normal settings `lognormal-PMEAN-PSTD` of LOGNORMAL_GRID run at the first seed;
      the best of them (lowest final there) runs at every seed. A setting with fewer than MIN_SEEDS seeds neither
      sets the target nor enters the main table; the tuning line lists the settings and compares InfoNoise with
      the best one over the seeds both have (paired final differences as in (d)): "within" when the interval is
      'tied' or 'better', "not within" when 'worse', "undecided" with fewer than MIN_SEEDS pairs. InfoNoise costs
      one run per seed, the grid len(LOGNORMAL_GRID) runs at the first seed.
"""
from __future__ import annotations

import collections
import json
import math
import os
import pathlib
import re
from typing import Any, Iterable, Mapping, Sequence

import click
import numpy as np
import scipy.stats

from dnnlib.util import atomic_write, jsonable, write_json
from training.metrics import SEQUENCE_METRICS, plotting

ADAPTIVE = 'infonoise'   # the paper's method: its speed-up is the headline of a row
ADAPTIVE_METHODS = ('infonoise', 'infonoise-freeze', 'infonoise-onset', 'loss-second-moment', 'kingma-gao', 'cdcd')
METHOD_ORDER = ('loguniform', 'edm', 'ddpm', 'lognormal-w1', 'infonoise', 'infonoise-freeze', 'infonoise-onset',
                'loss-second-moment', 'kingma-gao', 'cdcd')
METHOD_LABELS = {'loguniform': 'log-uniform', 'edm': 'EDM transfer', 'lognormal-w1': 'log-normal (w=1)',
                 'ddpm': 'DDPM (DNA-Diffusion)', 'infonoise': 'InfoNoise',
                 'infonoise-freeze': 'InfoNoise frozen at 8 kEx',
                 'infonoise-onset': 'InfoNoise, onset pivot', 'loss-second-moment': 'loss 2nd moment',
                 'kingma-gao': 'Kingma–Gao', 'cdcd': 'CDCD'}
SNAPSHOT_RE = re.compile(r'^network-snapshot-(\d+)\.pkl$')
RUN_DIR_RE = re.compile(r'^(?P<method>.+)-seed(?P<seed>\d+)$')
PLATEAU_REL = 0.05        # (a) relative improvement below which the best baseline counts as plateaued
PLATEAU_FROM = 0.75       # (a) ... measured from this fraction of the budget to its end
MIN_EVALUATIONS = 12      # (b)
MIN_SEEDS = 3             # (d)
CONFIDENCE = 0.95         # (d)
MIN_FINAL_PER_CLASS = {'sequence': 1000, 'image': 2000}   # (e)
# (h) The tuning a user would otherwise do (issue 17): log-normal σ, w = 1, P_mean × P_std; method names
# lognormal-PMEAN-PSTD (e.g. lognormal--1.2-0.8). scripts.reproduce builds its runs from this list.
LOGNORMAL_GRID = [(m, s) for m in (-1.2, -0.4, 0.4) for s in (0.8, 1.2, 1.8)]
GRID_METHOD_RE = re.compile(r'^lognormal-(?P<p_mean>-?\d+(?:\.\d+)?)-(?P<p_std>\d+(?:\.\d+)?)$')

Curve = Sequence[tuple[float, float]]   # [(kimg, value), ...] in increasing kimg

# The paper's Table 1 claims that the CPU rows test, by row (and headline metric): 'faster' = InfoNoise reaches
# the best fixed baseline's final quality in fewer kEx and ends no worse; 'parity' = InfoNoise ends level with it.
PAPER_CLAIMS = {
    'bmnist': ('faster', "Table 1(a) bMNIST: InfoNoise reaches the best fixed baseline's target 2.0× sooner and "
                         'ends better (FID 0.40 vs 0.53)'),
    'dna:fd-dna': ('faster', "Table 1(a) DNA: InfoNoise reaches the best fixed baseline's target 2.7× sooner and "
                             'ends better (Sei-FID 0.42 vs 0.45)'),
    'mnist': ('parity', 'Table 1(b) MNIST: InfoNoise ends level with the EDM schedule (FID 0.43 vs 0.44, 1.0×)'),
}


def is_adaptive(method: str) -> bool:
    """Whether `method` adapts its σ distribution during training (not a fixed baseline)."""
    return method in ADAPTIVE_METHODS


# ----------------------------------------------------------------------------------------------
# Protocol arithmetic (pure functions).

def _check_curve(kimg: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(kimg, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if k.shape != v.shape or k.ndim != 1:
        raise ValueError(f'kimg and values must be 1-D and equally long, got {k.shape} and {v.shape}.')
    return k, v


def first_evaluated(kimg: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """The paper's rule: the first evaluated kimg whose value is <= target (non-finite never is); None if none."""
    k, v = _check_curve(kimg, values)
    hits = np.flatnonzero(np.isfinite(v) & (v <= target))
    return float(k[hits[0]]) if hits.size else None


def first_reach(kimg: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """Secondary figure only: the first crossing of value <= target, interpolated linearly between the last
    evaluation above the target and the first one at or below it (the first evaluation itself when it
    already meets the target, or when the point before it is not finite). None when no evaluation meets it.
    """
    k, v = _check_curve(kimg, values)
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


def lead_on_curve(kimg: Sequence[float], values: Sequence[float], base_kimg: Sequence[float],
                  base_values: Sequence[float]) -> dict:
    """Where one (seed-mean) curve is below another at the evaluations both have (kimg matched to 1e-3):
    dict(shared, ahead_at, behind_at, level_at), each *_at a list of kimg (ahead = lower value)."""
    mine = {round(float(k), 3): float(v) for k, v in zip(*_check_curve(kimg, values))}
    base = {round(float(k), 3): float(v) for k, v in zip(*_check_curve(base_kimg, base_values))}
    shared = sorted(set(mine) & set(base))
    return dict(shared=len(shared), ahead_at=[k for k in shared if mine[k] < base[k]],
                behind_at=[k for k in shared if mine[k] > base[k]], level_at=[k for k in shared if mine[k] == base[k]])


def plateau_check(kimg: Sequence[float], values: Sequence[float], rel: float = PLATEAU_REL,
                  start: float = PLATEAU_FROM) -> dict:
    """Rule (a) on one (seed-mean) curve: relative improvement from the first evaluation at or after
    `start` x budget to the last evaluation; plateau when it is below `rel`.

    Returns dict(kimg_from, value_from, kimg_to, value_to, improvement, plateau).
    """
    k, v = _check_curve(kimg, values)
    if k.size == 0:
        raise ValueError('plateau_check needs at least one evaluation.')
    i = int(np.flatnonzero(k >= start * k[-1] - 1e-9)[0])
    improvement = float((v[i] - v[-1]) / abs(v[i])) if v[i] != 0 else 0.0
    return dict(kimg_from=float(k[i]), value_from=float(v[i]), kimg_to=float(k[-1]), value_to=float(v[-1]),
                improvement=improvement, plateau=bool(improvement < rel) and i < k.size - 1)


def evaluation_grid(kimg: Sequence[float], tol: float = 0.1) -> dict:
    """Rule (b): number of evaluations and whether they are evenly spaced (every gap within `tol` of the
    median gap; the first one counts from 0)."""
    k = np.sort(np.asarray(kimg, dtype=np.float64))
    gaps = np.diff(np.concatenate([[0.0], k]))
    step = float(np.median(gaps)) if gaps.size else math.nan
    even = bool(gaps.size and step > 0 and np.all(np.abs(gaps - step) <= tol * step))
    return dict(count=int(k.size), every=step, even=even, ok=bool(even and k.size >= MIN_EVALUATIONS))


def paired_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of paired differences with its two-sided t-interval: dict(n, mean, lo, hi); lo/hi None when n < 2."""
    d = np.asarray(list(differences), dtype=np.float64)
    n = int(d.size)
    mean = float(d.mean()) if n else None
    if n < 2:
        return dict(n=n, mean=mean, lo=None, hi=None)
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, df=n - 1) * d.std(ddof=1) / math.sqrt(n))
    return dict(n=n, mean=mean, lo=mean - half, hi=mean + half)


def verdict(interval: Mapping[str, Any]) -> str:
    """'better' (interval below 0: the method's metric or kEx is lower), 'worse' (above 0), 'tied' (holds 0),
    'n/a' (fewer than two pairs)."""
    lo, hi = interval.get('lo'), interval.get('hi')
    if lo is None or hi is None:
        return 'n/a'
    if hi < 0:
        return 'better'
    if lo > 0:
        return 'worse'
    return 'tied'


def compute_to_target(curves: Mapping[str, Mapping[Any, Curve]], baselines: Sequence[str] | None = None,
                      finals: Mapping[str, Mapping[Any, float]] | None = None) -> dict:
    """The compute-to-target summary of one table row and metric, by rules (a)-(d) of the module docstring.

    curves:    method -> seed -> [(kimg, value), ...] (lower value = better).
    baselines: the fixed baselines that may set the target (default: every non-adaptive method).
    finals:    method -> seed -> final value at the large final size (rule e); default: the curves' last points.
    Returns a JSON-ready dict: target, best_baseline, plateau, methods{...}; each method carries its
    kEx@target (first evaluated; `kex_interp` the secondary interpolated one), speed-up, per-seed values and
    the paired differences against the best baseline with their intervals and verdicts.
    """
    methods = list(curves)
    baselines = [m for m in (baselines if baselines is not None else methods) if not is_adaptive(m) and m in curves]
    if not baselines:
        raise ValueError('compute_to_target needs at least one fixed baseline with a curve.')
    means = {m: mean_curve(curves[m].values()) for m in methods}
    final_means = {m: float(means[m][1][-1]) for m in baselines}
    best = min(baselines, key=lambda m: final_means[m] if math.isfinite(final_means[m]) else math.inf)
    target = final_means[best]
    summary: dict[str, Any] = dict(target=target, best_baseline=best, methods={},
                                   plateau=plateau_check(means[best][0], means[best][1]))

    for m in methods:
        kimg, mean, std = means[m]
        budget = float(kimg[-1])
        kex = first_evaluated(kimg, mean, target)
        seeds = {}
        for seed, c in curves[m].items():
            k_s, v_s = zip(*sorted(c))
            hit = first_evaluated(k_s, v_s, target)
            measured = bool(finals and m in finals and seed in finals[m])   # else: the last curve point stands in
            final = finals[m][seed] if measured else float(v_s[-1])
            seeds[str(seed)] = dict(kex=hit, reached=hit is not None, final=float(final), final_measured=measured,
                                    curve_final=float(v_s[-1]), budget_kimg=float(k_s[-1]),
                                    grid=evaluation_grid(k_s))
        final_values = [e['final'] for e in seeds.values()]
        summary['methods'][m] = dict(
            final_mean=float(np.mean(final_values)),
            final_std=float(np.std(final_values, ddof=1)) if len(final_values) > 1 else 0.0,
            kex=kex, reached=kex is not None, kex_interp=first_reach(kimg, mean, target), budget_kimg=budget,
            num_seeds=len(seeds), seeds=seeds, curve=dict(kimg=kimg.tolist(), mean=mean.tolist(), std=std.tolist()))

    base = summary['methods'][best]
    for m in methods:
        e = summary['methods'][m]
        e['speedup'] = dict(value=None, bound=False) if base['kex'] is None else dict(
            value=base['kex'] / (e['kex'] if e['reached'] else e['budget_kimg']), bound=not e['reached'])
        paired = sorted(set(e['seeds']) & set(base['seeds']), key=int)
        e['paired_seeds'] = paired
        e['same_seeds'] = set(e['seeds']) == set(base['seeds'])
        if m == best:
            continue
        e['lead'] = lead_on_curve(means[m][0], means[m][1], means[best][0], means[best][1])
        both = [s for s in paired if e['seeds'][s]['reached'] and base['seeds'][s]['reached']]
        d_kex = [e['seeds'][s]['kex'] - base['seeds'][s]['kex'] for s in both]
        e['paired_final'] = paired_finals(e['seeds'], base['seeds'])
        e['paired_kex'] = dict(paired_interval(d_kex), diffs=d_kex, seeds=both,
                               censored=[s for s in paired if s not in both])
        e['paired_kex']['verdict'] = verdict(e['paired_kex'])
    return summary


def paired_finals(seeds: Mapping[str, Mapping[str, Any]], base_seeds: Mapping[str, Mapping[str, Any]]) -> dict:
    """Paired final differences (method − base) over the seeds both have, as `compute_to_target` lists seeds,
    with their interval and verdict (rule d). Like with like: a pair where either run lacks its large final
    evaluation compares both curve ends (the same sample size), never a large-sample final with a curve point."""
    common = sorted(set(seeds) & set(base_seeds), key=int)
    # A run still short of the other's budget (an interim collection) has no final to compare yet.
    budgets_differ = [s for s in common if abs(seeds[s]['budget_kimg'] - base_seeds[s]['budget_kimg']) > 1e-3]
    paired = [s for s in common if s not in budgets_differ]
    ends = [s for s in paired if not (seeds[s]['final_measured'] and base_seeds[s]['final_measured'])]
    key = {s: 'curve_final' if s in ends else 'final' for s in paired}
    mine, theirs = [seeds[s][key[s]] for s in paired], [base_seeds[s][key[s]] for s in paired]
    diffs = [a - b for a, b in zip(mine, theirs)]
    out = dict(paired_interval(diffs), diffs=diffs, curve_ends=ends, values=mine, base_values=theirs, seeds=paired,
               budgets_differ=budgets_differ)
    out['verdict'] = verdict(out)
    return out


def tuning_summary(grid: Mapping[str, Mapping[str, Any]], summary: Mapping[str, Any]) -> dict | None:
    """Rule (h) for one row: `grid` maps each tuning setting that ran to its per-seed entries (as
    `compute_to_target` lists them under methods[m]['seeds']); `summary` is the row's compute_to_target result.
    Returns None without grid runs, else dict(settings {name: first-seed value}, expected, best, comparison
    (paired_finals of InfoNoise against the best setting, or None), word)."""
    if not grid:
        return None
    first = min((s for seeds in grid.values() for s in seeds), key=int)
    settings = {m: seeds[first]['final'] for m, seeds in grid.items() if first in seeds}
    out: dict[str, Any] = dict(first_seed=first, settings=settings, expected=len(LOGNORMAL_GRID), best=None,
                               comparison=None, word='undecided')
    if len(settings) < len(LOGNORMAL_GRID):
        return out
    out['best'] = best = min(settings, key=lambda m: settings[m] if math.isfinite(settings[m]) else math.inf)
    ada = summary['methods'].get(ADAPTIVE)
    if ada is None:
        return out
    comparison = paired_finals(ada['seeds'], grid[best])
    out['comparison'] = comparison
    if comparison['n'] >= MIN_SEEDS:
        out['word'] = {'better': 'within', 'tied': 'within', 'worse': 'not within'}.get(comparison['verdict'],
                                                                                     'undecided')
    return out


def claim_verdict(kind: str, summary: Mapping[str, Any]) -> tuple[str, str]:
    """(word, why) for one paper claim at this scale: 'confirmed', 'not confirmed' or 'refuted'.

    kind 'faster': confirmed when InfoNoise's seed-mean curve reaches the target sooner than the best fixed
    baseline's (speed-up > 1 by the paper's rule), its paired kEx difference is 'better' and its paired final
    difference is not 'worse'; refuted when its paired final difference is 'worse' (interval above 0); otherwise
    not confirmed. kind 'parity': confirmed when the paired final difference is 'tied' or 'better', refuted when
    'worse'. Fewer than MIN_SEEDS seeds give no interval: not confirmed, whatever the means say.
    """
    e = summary['methods'].get(ADAPTIVE)
    if e is None:
        return 'not confirmed', f'no {label(ADAPTIVE)} run yet.'
    best = label(summary['best_baseline'])
    if e['num_seeds'] < MIN_SEEDS or not e['same_seeds']:
        pf = e['paired_final']
        paired = pf['seeds']
        if not paired:
            return 'not confirmed', f'{label(ADAPTIVE)} has no seed in common with {best} at the same budget yet.'
        ends = ' (curve ends)' if pf['curve_ends'] else ''
        return 'not confirmed', (f'{len(paired)} paired seed(s) of {MIN_SEEDS} needed; so far, on the '
                                 f'{seed_list(paired)} both have, {label(ADAPTIVE)} ends at '
                                 f'{fmt(float(np.mean(pf["values"])))} against {fmt(float(np.mean(pf["base_values"])))} '
                                 f'for {best}{ends}, kEx@target {format_kex(e["kex"], e["budget_kimg"])}.')
    final = e['paired_final']
    plateau = '' if summary['plateau']['plateau'] else ' (at a budget where the baseline has not plateaued)'
    why_final = f'paired final Δ {format_interval(final)} ({final["verdict"]})'
    if final['verdict'] == 'worse':
        return 'refuted', f'{label(ADAPTIVE)} ends worse than {best}: {why_final}{plateau}.'
    if kind == 'parity':
        return 'confirmed', f'{label(ADAPTIVE)} ends level with or better than {best}: {why_final}{plateau}.'
    speedup, kex = e['speedup'], e['paired_kex']
    why_kex = f'speed-up {format_speedup(speedup)}, paired kEx Δ {format_interval(kex)} ({kex["verdict"]})'
    if e['reached'] and speedup['value'] is not None and speedup['value'] > 1 and kex['verdict'] == 'better':
        return 'confirmed', f'{why_kex}; {why_final}{plateau}.'
    return 'not confirmed', f'{why_kex}; {why_final}{plateau}.'


# ----------------------------------------------------------------------------------------------
# Run directories.

def read_jsonl(path: str) -> list[dict]:
    """The JSON objects of a .jsonl file; a truncated or malformed line (a run still writing) is skipped, and a
    missing file reads as none."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, 'r', encoding='utf-8') as f:
        for line in filter(str.strip, f):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return [r for r in rows if isinstance(r, dict)]


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
    for row in read_jsonl(os.path.join(run_dir, 'stats.jsonl')):
        k = _stat_mean(row, 'Progress/kimg')
        if k is not None and math.isfinite(k):
            exact[int(math.floor(k + 1e-6))] = round(k, 6)
    names = sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []
    return {m.group(0): exact.get(int(m.group(1)), float(int(m.group(1)))) for m in map(SNAPSHOT_RE.match, names) if m}


def training_speed(run_dir: str) -> dict:
    """Last kimg and mean seconds per kimg of a run, from stats.jsonl (None when absent)."""
    rows = read_jsonl(os.path.join(run_dir, 'stats.jsonl'))
    kimgs = [k for k in (_stat_mean(r, 'Progress/kimg') for r in rows) if k is not None]
    total = [t for t in (_stat_mean(r, 'Timing/total_sec') for r in rows) if t is not None]
    last_kimg = kimgs[-1] if kimgs else None
    return dict(kimg=last_kimg, sec_per_kimg=total[-1] / last_kimg if total and last_kimg else None)


def _read_json(path: str) -> Any:
    try:
        return json.loads(pathlib.Path(path).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None


PROFILE_BANDS = (0.05, 0.5, 5.0)   # σ band edges of the profile-drift table (the grid's ends close the outer bands)
PROFILE_ROWS = 7                   # refreshes shown per run: evenly spaced, first and last included


def profile_drift(path: str, rows: int = PROFILE_ROWS) -> list[dict]:
    """How an adaptive run's σ distribution moved: from its profile lines (infonoise.jsonl, one per refresh), at
    `rows` evenly spaced refreshes, dict(kimg, pivot, mass) with `mass` the share of the sampling density π (floor
    included) in each σ band of PROFILE_BANDS (len(PROFILE_BANDS) + 1 shares summing to 1)."""
    lines = [r for r in read_jsonl(path) if 'pi' in r and 'edges' in r and 'kimg' in r]
    if not lines:
        return []
    from infonoise.profile import band_shares    # here, not at the top: the rest of the report runs without torch
    picks = sorted({round(i * (len(lines) - 1) / max(rows - 1, 1)) for i in range(rows)})
    out = []
    for r in (lines[i] for i in picks):
        edges = np.asarray(r['edges'], dtype=np.float64)
        mass = np.asarray(r['pi'], dtype=np.float64) * np.diff(edges)
        shares = band_shares(edges, r['pi'], PROFILE_BANDS)
        x = np.clip(np.log(PROFILE_BANDS), np.log(edges[0]), np.log(edges[-1]))   # log-uniform on the same grid
        uniform = np.diff(np.concatenate([[0.0], (x - np.log(edges[0])) / np.log(edges[-1] / edges[0]), [1.0]]))
        pivot = r.get('pivot')
        sigma = np.sqrt(edges[:-1] * edges[1:]) if 'sigma' not in r else np.asarray(r['sigma'], dtype=np.float64)
        mse = r.get('mse')
        out.append(dict(kimg=float(r['kimg']), pivot=float(pivot) if isinstance(pivot, (int, float)) else None,
                        peak=float(sigma[np.argmax(mass / np.diff(np.log(edges)))]),   # mode of π per unit log σ
                        low_ratio=float(mse[0] / sigma[0] ** 2) if mse else None,    # mse/σ² in the lowest bin
                        mass=[float(v) for v in shares], loguniform=[float(v) for v in uniform]))
    return out


def load_runs(root: str) -> dict:
    """row -> dict(title, section, metric, curves{method: {seed: curve}}, finals{method: {seed: {...}}},
    floors{num: value}, curve_num, speed{method: {seed: ...}}); a row evaluated with several metrics becomes
    one entry per metric ('ROW:METRIC')."""
    rows: dict[tuple[str, str], dict] = {}
    run_dirs = sorted({d for d, _dirs, files in os.walk(root) if 'metrics.jsonl' in files or 'final.jsonl' in files})
    for run_dir in run_dirs:
        records = read_jsonl(os.path.join(run_dir, 'metrics.jsonl'))
        name_match = RUN_DIR_RE.match(os.path.basename(run_dir))
        default_row = os.path.basename(os.path.dirname(run_dir)) or 'run'
        default_method = name_match.group('method') if name_match else os.path.basename(run_dir)
        default_seed = int(name_match.group('seed')) if name_match else 0
        options = _read_json(os.path.join(run_dir, 'training_options.json')) or {}
        floor = _read_json(os.path.join(os.path.dirname(run_dir), 'floor.json')) or {}
        row_info = _read_json(os.path.join(os.path.dirname(run_dir), 'row.json')) or {}
        speed = training_speed(run_dir) if records else None   # one read of stats.jsonl per run

        def entry(rec: Mapping[str, Any]) -> tuple[dict, str, int]:
            row = str(rec.get('row', default_row))
            metric = str(rec.get('metric', 'metric'))
            info = rows.setdefault((row, metric), dict(title=str(row_info.get('title', row)), section='', metric=metric,
                                                       curves={}, finals={}, floors={}, curve_num=None, profiles={},
                                                       speed={}, note=row_info.get('note')))
            info.update({field: str(rec[field]) for field in ('title', 'section') if rec.get(field)})
            info['floors'].update({int(n): float(v) for n, v in (floor.get(metric) or {}).items()})
            return info, str(rec.get('method', default_method)), int(rec.get('seed', default_seed))

        for rec in records:
            value, kimg = rec.get('value'), rec.get('kimg')
            if not isinstance(value, (int, float)) or not isinstance(kimg, (int, float)):
                continue
            info, method, seed = entry(rec)
            info['curves'].setdefault(method, {}).setdefault(seed, {})[round(float(kimg), 6)] = float(value)
            info['speed'].setdefault(method, {})[seed] = speed
            num = rec.get('num', options.get('metrics_num'))
            if isinstance(num, int):
                info['curve_num'] = num
        drift = profile_drift(os.path.join(run_dir, 'infonoise.jsonl'))
        if drift and records:
            info, method, seed = entry(records[0])
            info['profiles'].setdefault(method, {})[seed] = drift
        for rec in read_jsonl(os.path.join(run_dir, 'final.jsonl')):
            if isinstance(rec.get('value'), (int, float)):
                info, method, seed = entry(rec)
                kind = 'decoded' if rec.get('decoded', True) else 'raw'
                kept = info['finals'].setdefault(method, {}).setdefault(seed, {})
                if float(rec.get('kimg', 0)) >= float(kept.get(kind, {}).get('kimg', 0)):   # the latest snapshot's
                    kept[kind] = dict(rec)
    for info in rows.values():
        info['curves'] = {m: {s: sorted(c.items()) for s, c in seeds.items()} for m, seeds in info['curves'].items()}
        for seeds in info['finals'].values():      # continuous data: the one (undecoded) record is the final
            for kept in seeds.values():
                if 'decoded' not in kept and 'raw' in kept:
                    kept['decoded'] = dict(kept.pop('raw'), as_is=True)
    per_row = collections.Counter(row for row, _ in rows)
    return {row if per_row[row] == 1 else f'{row}:{metric}': info for (row, metric), info in sorted(rows.items())}


# ----------------------------------------------------------------------------------------------
# Formatting.

def method_order(methods: Iterable[str]) -> list[str]:
    """Known methods in table order, then any others alphabetically (tuning-grid names included)."""
    methods = list(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(m for m in methods if m not in METHOD_ORDER)


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def fmt(x: float | None, digits: int = 4) -> str:
    return '–' if x is None or not math.isfinite(x) else f'{x:.{digits}g}'


def seed_list(seeds: Sequence[str]) -> str:
    """'seed 0' or 'seeds 0,2'."""
    return ('seed ' if len(seeds) == 1 else 'seeds ') + ','.join(seeds)


def format_value(mean: float | None, std: float | None = None, digits: int = 4) -> str:
    text = fmt(mean, digits)
    if text != '–' and std is not None and std > 0:
        text += f' ± {std:.2g}'
    return text


def format_kex(kex: float | None, budget: float) -> str:
    """kEx@target, or '>budget' for a censored curve (target not reached)."""
    return f'>{budget:g}' if kex is None else f'{kex:g}'


def format_interval(interval: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not interval or interval.get('mean') is None:
        return '–'
    text = fmt(interval['mean'], digits)
    if interval.get('lo') is not None:
        text += f' [{fmt(interval["lo"], digits)}, {fmt(interval["hi"], digits)}]'
    return text + f' (n = {interval["n"]})'


def format_speedup(speedup: Mapping[str, Any] | None) -> str:
    """'1.33×'; '≤1.00×' for a censored method; '–' when there is none, or when a censored run stopped before
    the best baseline's kEx@target (its bound exceeds 1× and says nothing)."""
    if not speedup or speedup.get('value') is None or (speedup.get('bound') and speedup['value'] > 1):
        return '–'
    return ('≤' if speedup.get('bound') else '') + f'{speedup["value"]:.2f}×'


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: header, separator, one line per row."""
    return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + ['| ' + ' | '.join(r) + ' |' for r in rows]


def row_markdown(name: str, info: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    """The Table 1(a) block of one row and metric: protocol checks, then one line per method."""
    metric = str(info['metric'])
    best = s['best_baseline']
    methods = table_methods(s)
    lines = [f'#### {info["title"]} ({metric})', '']
    if info.get('note'):
        lines.append(f'- note: {info["note"]}')
    p = s['plateau']
    if p['kimg_from'] >= p['kimg_to']:
        lines.append(f'- plateau: **no** — cannot be checked: {label(best)} has no evaluation between 75% of the '
                     f'budget and its end ({p["kimg_to"]:g} kEx).')
    else:
        lines.append(f'- plateau: **{"yes" if p["plateau"] else "no"}** — best fixed baseline {label(best)}: '
                     f'{fmt(p["value_from"])} at {p["kimg_from"]:g} kEx → {fmt(p["value_to"])} at {p["kimg_to"]:g} '
                     f'kEx ({100 * p["improvement"]:.1f}% better; plateau means < {100 * PLATEAU_REL:g}%).')
    grids = [e['grid'] for m in methods for e in s['methods'][m]['seeds'].values()]
    counts = sorted({g['count'] for g in grids})
    everys = sorted({round(g['every'], 3) for g in grids})
    breaches = []
    if min(counts) < MIN_EVALUATIONS or not all(g['even'] for g in grids):
        breaches.append(f'fewer than {MIN_EVALUATIONS} evenly spaced evaluations')
    seed_sets = {tuple(s['methods'][m]['seeds']) for m in methods}
    if min(s['methods'][m]['num_seeds'] for m in methods) < MIN_SEEDS:
        breaches.append(f'fewer than {MIN_SEEDS} seeds')
    if len(seed_sets) > 1:
        breaches.append('not the same seeds for every method')
    lines.append(f'- evaluations per run: {"/".join(map(str, counts))}, every {"/".join(f"{e:g}" for e in everys)} '
                 f'kEx (evenly spaced: {"yes" if all(g["even"] for g in grids) else "no"}); seeds: '
                 + '; '.join(f'{label(m)} {",".join(s["methods"][m]["seeds"])}' for m in methods
                             if len(seed_sets) > 1 or m == methods[0]) + '.')
    curve_num = info.get('curve_num')
    lines.append(f'- target: {fmt(s["target"])} = final seed-mean of {label(best)} on the curve'
                 + (f' ({curve_num} samples per evaluation)' if curve_num else '') + '.')
    finals = [r['decoded'] for seeds in info['finals'].values() for r in seeds.values() if 'decoded' in r]
    nums, classes = {int(r.get('num', 0)) for r in finals}, {int(r.get('classes', 1) or 1) for r in finals}
    floors = info.get('floors') or {}
    if nums:
        kind = 'sequence' if metric in SEQUENCE_METRICS else 'image'
        per_class = min(n // c for n, c in zip(sorted(nums), sorted(classes) * len(nums)))
        if per_class < MIN_FINAL_PER_CLASS[kind]:
            breaches.append(f'final evaluation below {MIN_FINAL_PER_CLASS[kind]:,} samples per class')
        floor_text = '; '.join(f'real-data floor at {n}: {fmt(floors.get(n))}' for n in sorted(nums))
        scored = 'as sampled (continuous data)' if all(r.get('as_is') for r in finals) else 'decoded'
        lines.append(f'- final: {"/".join(map(str, sorted(nums)))} samples ({per_class} per class), {scored}; '
                     f'{floor_text}.')
    else:
        breaches.append('no final evaluation at the protocol size (finals = last curve point)')
    if curve_num and curve_num in floors:
        lines.append(f'- real-data floor at the curve size ({curve_num}): {fmt(floors[curve_num])}.')
    raw = []
    for m in methods:
        pairs = np.array([(r['raw']['value'], r['decoded']['value']) for r in info['finals'].get(m, {}).values()
                          if 'raw' in r and 'decoded' in r]).reshape(-1, 2)
        if len(pairs):
            raw.append(f'{label(m)} {fmt(float(pairs[:, 0].mean()))} → {fmt(float(pairs[:, 1].mean()))}')
    if raw:
        lines.append('- raw → decoded final (seed means): ' + '; '.join(raw) + '.')
    lines.append('- protocol: ' + ('as specified.' if not breaches else 'NOT met: ' + '; '.join(breaches) + '.'))
    lines.append('')
    header = ['method', 'final (mean ± std)', f'Δ final vs {label(best)} [95% CI]', 'verdict',
              'kEx@target (first evaluated)', 'per seed', f'Δ kEx vs {label(best)} [95% CI]', 'verdict', 'speed-up',
              'kEx@target interpolated (secondary)']
    table = []
    for m in methods:
        e = s['methods'][m]
        per_seed = ', '.join(format_kex(v['kex'], v['budget_kimg']) for _, v in sorted(e['seeds'].items(),
                                                                                        key=lambda kv: int(kv[0])))
        if m == best:
            d_final = d_kex = v_final = v_kex = '(baseline)'
        else:
            d_final, v_final = format_interval(e['paired_final']), e['paired_final']['verdict']
            if e['paired_final']['curve_ends']:
                d_final += f'; curve ends for {seed_list(e["paired_final"]["curve_ends"])}'
            if e['paired_final']['budgets_differ']:
                d_final += f'; not yet at the same budget: {seed_list(e["paired_final"]["budgets_differ"])}'
            d_kex, v_kex = format_interval(e['paired_kex']), e['paired_kex']['verdict']
            if e['paired_kex']['censored']:
                d_kex += f'; censored seeds {",".join(e["paired_kex"]["censored"])}'
        interp = fmt(e['kex_interp']) if e['kex_interp'] is not None else f'>{e["budget_kimg"]:g}'
        unmeasured = [seed for seed, v in sorted(e['seeds'].items(), key=lambda kv: int(kv[0]))
                      if not v['final_measured']]
        final_text = format_value(e['final_mean'], e['final_std']) + (
            f' (curve end for {seed_list(unmeasured)})' if unmeasured else '')
        table.append([label(m), final_text, d_final, v_final,
                      format_kex(e['kex'], e['budget_kimg']), per_seed, d_kex, v_kex, format_speedup(e['speedup']),
                      interp])
    lines += markdown_table(header, table) + ['']
    leads = [f'{label(m)} {format_lead(s["methods"][m]["lead"])}' for m in methods if m != best]
    if leads:
        lines += [f'On the seed-mean curves, against {label(best)} at the evaluations both have: '
                  + '; '.join(leads) + '.', '']
    if s.get('tuning'):
        lines += [tuning_text(s['tuning']), '']
    edges = [f'{b:g}' for b in PROFILE_BANDS]
    bands = [f'σ < {edges[0]}', *(f'{a}–{b}' for a, b in zip(edges, edges[1:])), f'σ ≥ {edges[-1]}']
    for m in methods:
        for seed, drift in sorted((info.get('profiles') or {}).get(m, {}).items())[:1]:
            table = [['log-uniform, same grid', '–', '–', '–', *(f'{x:.3f}' for x in drift[0]['loguniform'])]]
            table += [[f'{d["kimg"]:g}', fmt(d['pivot'], 3), fmt(d['peak'], 3), fmt(d['low_ratio'], 3),
                       *(f'{x:.3f}' for x in d['mass'])] for d in drift]
            lines += [f'Profile drift of {label(m)} (seed {seed}) at evenly spaced refreshes: the pivot c, the mode of '
                      f'π per unit log σ, mse/σ² in the lowest σ bin (1 = the noise passes through undenoised) and '
                      f'the share of π (floor included) per σ band.', '']
            lines += markdown_table(['kEx', 'pivot c', 'π mode', 'mse/σ², lowest bin', *bands], table) + ['']
    return '\n'.join(lines)


def tuning_text(t: Mapping[str, Any]) -> str:
    """Rule (h) as one paragraph: the settings at the first seed, the best, and InfoNoise against it."""
    settings = ', '.join(f'{m} {fmt(v)}' for m, v in sorted(t['settings'].items(), key=lambda kv: kv[1]))
    text = (f'Tuning (log-normal σ, w = 1; rule h): {len(t["settings"])} of {t["expected"]} settings at seed '
            f'{t["first_seed"]}: {settings}.')
    if t['best'] is None:
        return text + ' The comparison waits for the whole grid.'
    c = t['comparison']
    if c is None:
        return text + f' Best: {t["best"]}; no {label(ADAPTIVE)} run to compare yet.'
    ends = f'; curve ends for {seed_list(c["curve_ends"])}' if c['curve_ends'] else ''
    text += (f' Best: {t["best"]}. {label(ADAPTIVE)} − {t["best"]}, final: {format_interval(c)}{ends} '
             f'({c["verdict"]}). ')
    if t['word'] == 'undecided':
        return text + f'Whether {label(ADAPTIVE)} lands within the tuned best is undecided until both have ' \
                      f'{MIN_SEEDS} paired seeds.'
    return text + (f'{label(ADAPTIVE)} lands **{t["word"]}** the tuned best, at one run per seed against the '
                   f'grid\'s {t["expected"]} runs at one seed (1/{t["expected"]} of the tuning compute).')


def format_lead(lead: Mapping[str, Any]) -> str:
    """'ahead at 3 of 12 evaluations (at 4, 8, 12 kEx)': the kEx of the rarer outcome when there are 6 or fewer."""
    ahead, n = lead['ahead_at'], lead['shared']
    text = f'ahead at {len(ahead)} of {n} evaluation{"s" if n != 1 else ""}'
    if 0 < len(ahead) <= min(6, n // 2):
        text += ' (at ' + ', '.join(f'{k:g}' for k in ahead) + ' kEx)'
    elif 0 < n - len(ahead) <= 6 and len(ahead) > n // 2:
        text += ' (not at ' + ', '.join(f'{k:g}' for k in lead['behind_at'] + lead['level_at']) + ' kEx)'
    return text


def markdown_report(rows: Mapping[str, Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """The whole report: one block per row and metric (what RUNS/report.md holds)."""
    out = ['<!-- Written by `python -m scripts.report`; regenerate, do not edit. -->', '',
           *(row_markdown(name, rows[name], summaries[name]) for name in rows)]
    verdicts = [(name, *PAPER_CLAIMS[name], *claim_verdict(PAPER_CLAIMS[name][0], summaries[name]))
                for name in rows if name in PAPER_CLAIMS and ADAPTIVE in summaries[name]['methods']]
    if verdicts:
        out += ['#### The paper\'s claims at this scale', '']
        out += [f'- {claim}: **{word}** — {why}' for name, kind, claim, word, why in verdicts]
        out.append('')
    out.append("kEx = thousands of training examples. '>B' = the target was not reached within the budget B "
               "(censored). Δ = method − best fixed baseline per seed (lower = better for both); verdict from the "
               "95% t-interval.")
    return '\n'.join(out) + '\n'


def plot_row(path: str, info: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    """Metric vs kEx (seed mean, ±std band) for one row, with the target and the floor; PNG written atomically."""
    fig, ax = plotting.pyplot().subplots(figsize=(6.5, 4.2), dpi=100)
    lows, highs = [], []
    for m in table_methods(summary):
        c = summary['methods'][m]['curve']
        k, mean, std = (np.asarray(c[x], dtype=np.float64) for x in ('kimg', 'mean', 'std'))
        lows.append(float(np.nanmin(mean)))
        highs.append(float(np.nanmax(mean)))
        line, = ax.plot(k, mean, marker='o', markersize=3, label=label(m))
        if np.any(std > 0):
            ax.fill_between(k, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if summary.get('target') is not None:
        ax.axhline(summary['target'], color='gray', linestyle='--', linewidth=1, label='target')
    floor = (info.get('floors') or {}).get(info.get('curve_num'))
    if floor is not None:
        ax.axhline(floor, color='black', linestyle=':', linewidth=1, label='real-data floor')
    if lows and min(lows) > 0 and max(highs) > 10 * min(lows):   # log scale only when it spans a decade
        ax.set_yscale('log')
    ax.set_xlabel('kEx (thousands of training examples)')
    ax.set_ylabel(str(info.get('metric', 'metric')))
    ax.set_title(str(info.get('title', '')))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    plotting.save_figure(fig, path, dpi=100, bbox_inches=None)


def build_report(root: str) -> tuple[dict, dict]:
    """(rows as `load_runs` returns them, row -> compute_to_target summary) for a runs directory; rows
    without a fixed baseline yet are left out."""
    rows = {row: info for row, info in load_runs(root).items() if not all(map(is_adaptive, info['curves']))}
    summaries = {}
    for row, info in rows.items():
        finals = {m: {seed: r['decoded']['value'] for seed, r in seeds.items() if 'decoded' in r}
                  for m, seeds in info['finals'].items()}
        curves = info['curves']
        # Rule (h): a tuning setting at fewer than MIN_SEEDS seeds does not set the target.
        eligible = [m for m in curves if not is_adaptive(m) and not tuning_only(m, len(curves[m]))]
        summary = compute_to_target(curves, baselines=eligible or None, finals=finals)
        summary['tuning'] = tuning_summary({m: summary['methods'][m]['seeds'] for m in curves
                                            if GRID_METHOD_RE.match(m)}, summary)
        summaries[row] = summary
    return rows, summaries


def tuning_only(method: str, num_seeds: int) -> bool:
    """Rule (h): a tuning-grid setting with fewer than MIN_SEEDS seeds (shown on the tuning line only)."""
    return bool(GRID_METHOD_RE.match(method)) and num_seeds < MIN_SEEDS


def table_methods(summary: Mapping[str, Any]) -> list[str]:
    """The methods of a row's main table and plot, in table order (tuning-only settings left out)."""
    return [m for m in method_order(summary['methods']) if not tuning_only(m, summary['methods'][m]['num_seeds'])]


BEGIN_MARK = '<!-- BEGIN scripts.report {} -->'
END_MARK = '<!-- END scripts.report {} -->'


def splice(document: str, key: str, text: str) -> str:
    """`document` with the text between the BEGIN/END scripts.report KEY markers replaced by `text`."""
    begin, end = BEGIN_MARK.format(key), END_MARK.format(key)
    if begin not in document or end not in document:
        raise ValueError(f'the document has no "{begin}" ... "{end}" block.')
    head, rest = document.split(begin, 1)
    return f'{head}{begin}\n{text.rstrip()}\n{end}{rest.split(end, 1)[1]}'


def spliced(document: str, key: str) -> str | None:
    """The text between the BEGIN/END markers of `key` (None without them)."""
    begin, end = BEGIN_MARK.format(key), END_MARK.format(key)
    if begin not in document or end not in document:
        return None
    return document.split(begin, 1)[1].split(end, 1)[0].strip('\n') + '\n'


# ----------------------------------------------------------------------------------------------
# CLI.

@click.command(context_settings=dict(show_default=True, max_content_width=110), epilog="""\b
Examples:
  # Regenerate Table 1(a) (docs/results/table1a/report.md, its plots, the block in docs/BENCHMARKS.md)
  python -m scripts.report docs/results/table1a --benchmarks docs/BENCHMARKS.md
\b
  python -m scripts.report runs/table1 --json table1.json --plots plots/""")
@click.argument('runs', metavar='RUNS_DIR', type=click.Path(file_okay=False))
@click.option('--out', 'out_path', metavar='PATH', type=click.Path(dir_okay=False), default=None,
              help='Write the report here  [default: RUNS_DIR/report.md]')
@click.option('--plots', 'plot_dir', metavar='DIR', type=click.Path(file_okay=False), default=None,
              help='Write one metric-vs-kEx PNG per row and metric  [default: RUNS_DIR/plots]')
@click.option('--no-plots', is_flag=True, help='Write no plots.')
@click.option('--json', 'json_path', metavar='PATH', type=click.Path(dir_okay=False),
              help='Also write the full summary (curves, per-seed values, intervals) as JSON.')
@click.option('--benchmarks', metavar='MD', type=click.Path(dir_okay=False), default=None,
              help='Also replace the block between "<!-- BEGIN scripts.report NAME -->" and "<!-- END ... -->" '
                   'in this markdown file (NAME = the folder name of RUNS_DIR).')
def main(runs: str, out_path: str | None, plot_dir: str | None, no_plots: bool, json_path: str | None,
         benchmarks: str | None) -> None:
    """Table 1 from run directories under the Table 1(a) protocol: plateau check, final metric next to the
    real-data floor, kEx@target by the paper's rule, speed-up, paired seed differences and verdicts."""
    if not os.path.isdir(runs):
        raise click.BadParameter(f'{runs} is not a directory.', param_hint='RUNS_DIR')
    try:
        rows, summaries = build_report(runs)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if not rows:
        raise click.ClickException(f'No row under {runs} has evaluated runs (metrics.jsonl) of a fixed baseline; '
                                   f'train with --metrics or run scripts.reproduce --eval-only.')
    text = markdown_report(rows, summaries)
    click.echo(text, nl=False)
    out_path = out_path or os.path.join(runs, 'report.md')
    with atomic_write(out_path) as f:
        f.write(text.encode('utf-8'))
    click.echo(f'Wrote {out_path}', err=True)
    if not no_plots:
        plot_dir = plot_dir or os.path.join(runs, 'plots')
        os.makedirs(plot_dir, exist_ok=True)
        for row in sorted(rows):
            path = os.path.join(plot_dir, f'{row.replace(":", "-")}.png')
            plot_row(path, rows[row], summaries[row])
            click.echo(f'Wrote {path}', err=True)
    if benchmarks is not None:
        key = os.path.basename(os.path.normpath(runs))
        try:
            document = splice(pathlib.Path(benchmarks).read_text(encoding='utf-8'), key, text)
        except (OSError, ValueError) as err:
            raise click.ClickException(f'Cannot update {benchmarks}: {err}') from None
        with atomic_write(benchmarks) as f:
            f.write(document.encode('utf-8'))
        click.echo(f'Updated {benchmarks}', err=True)
    if json_path is not None:
        out = {row: dict({k: rows[row][k] for k in ('title', 'section', 'metric', 'floors', 'speed')}, **summaries[row])
               for row in rows}
        write_json(json_path, jsonable(out, strict=True), indent=2, allow_nan=False)
        click.echo(f'Wrote {json_path}', err=True)


if __name__ == '__main__':
    main()
