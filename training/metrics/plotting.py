"""PNG plots of InfoNoise profiles, of the emergence of π over training, and of σ grids (matplotlib, Agg).

Inputs are plain data: a profile dict as returned by `InfoNoiseSampler.profile()` or read back with
`infonoise.profile_from_json` (arrays or lists under `sigma`, `edges`, `rho`, `pi`, `phi`, `u`, ...),
rows of `infonoise.jsonl`, or σ lists. Every function writes one PNG atomically and returns nothing.
matplotlib is an optional dependency (the `plot` extra); it is imported on first use.
"""
from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np

from dnnlib import util


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: str, **savefig_kwargs: Any) -> None:
    """`fig` as a PNG at `path`, written atomically, then closed (savefig kwargs: default dpi 110, tight box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format='png', **{'dpi': 110, 'bbox_inches': 'tight', **savefig_kwargs})
    pyplot().close(fig)
    with util.atomic_write(path) as f:
        f.write(buf.getvalue())


def _floats(value: Any) -> np.ndarray | None:
    """float64 array from an array or a JSON list (None entries, i.e. unknown estimates, become NaN); None stays."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = [np.nan if v is None else v for v in value]
    return np.asarray(value, dtype=np.float64)


def _positive(y: np.ndarray) -> np.ndarray:
    """Mask non-positive values so that log axes skip them instead of failing."""
    return np.where(y > 0, y, np.nan)


def per_log_sigma(density: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """A density per unit σ turned into one per unit ln σ (p(ln σ) = σ·p(σ)): what a log-σ axis shows.

    Drawn per unit σ on a log axis, a log-uniform floor looks as if most of the mass sat at σ_min;
    per unit ln σ it is flat, and equal heights mean equal mass per decade.
    """
    return np.asarray(density, np.float64) * np.asarray(sigma, np.float64)


_PROFILE_PANELS = (('rho', 'target ρ per unit ln σ  (σ·ρ)'), ('pi', 'sampling density π per unit ln σ  (σ·π)'),
                   ('phi', 'effective weight φ = π·w per unit ln σ  (σ·φ)'), ('u', 'information CDF u(σ)'))


def profile_panels(profile: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(key, title) of the four panels: ρ, π, φ, u; for a profile without an entropy rate (a rival schedule's,
    whose ρ is its π, or InfoNoise's before its first refresh) the losses held per bin replace ρ."""
    from infonoise.infogrid import has_rate
    if has_rate(profile) or profile.get('counts') is None:
        return _PROFILE_PANELS
    return (('counts', 'losses held per bin'),) + _PROFILE_PANELS[1:]


def plot_profile(profile: Mapping[str, Any], path: str, title: str | None = None,
                 schedule: str = 'InfoNoise') -> None:
    """Four panels against σ (log axes): target ρ (or the counts, see `profile_panels`), sampling density π,
    φ = π·w (each per unit ln σ, see `per_log_sigma`), and the CDF u. The pivot (when present) is drawn as a
    dashed vertical line. The default title names the `schedule` whose profile it is and the step.
    """
    sigma = _floats(profile.get('sigma'))
    if sigma is None:
        raise ValueError('The profile has no sigma array.')
    edges = _floats(profile.get('edges'))
    pivot = profile.get('pivot')
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), sharex=True)
    for ax, (key, label) in zip(axes.flat, profile_panels(profile)):
        y = _floats(profile.get(key))
        if y is not None and key not in ('u', 'counts') and y.shape == sigma.shape:
            y = per_log_sigma(y, sigma)
        shown = None if y is None else (y if key == 'u' else _positive(y))
        if shown is None or not np.isfinite(shown).any():
            why = f'no {key!r} in profile' if y is None else f'{key} not estimated yet'
            ax.text(0.5, 0.5, why, ha='center', va='center', transform=ax.transAxes)
        else:
            x = edges if (edges is not None and y.shape == edges.shape and y.shape != sigma.shape) else sigma
            if key == 'u':
                ax.plot(x, y, color='C3')
                ax.set_ylim(-0.02, 1.02)
            else:
                ax.plot(x, _positive(y), color='C0', drawstyle='steps-mid')
                ax.set_yscale('log')
        if pivot is not None and np.isfinite(float(pivot)) and float(pivot) > 0:
            ax.axvline(float(pivot), color='gray', linestyle='--', linewidth=1, label=f'pivot {float(pivot):.3g}')
            ax.legend(loc='best', fontsize=8)
        ax.set_xscale('log')
        ax.set_title(label, fontsize=10)
        ax.grid(True, which='major', alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel('σ')
    step = profile.get('step')
    fig.suptitle(title or (f'{schedule} profile' + (f' (step {int(step)})' if step is not None else '')))
    save_figure(fig, path)


def plot_emergence(jsonl_rows: Sequence[Mapping[str, Any]], path: str, key: str = 'pi') -> None:
    """π(σ) (or another profile density `key`) per unit ln σ at every refresh, coloured by training step."""
    rows = [r for r in jsonl_rows if r.get(key) is not None and r.get('sigma') is not None
            and np.isfinite(_positive(_floats(r[key]))).any()]
    if not rows:
        raise ValueError(f'No rows with an estimated {key!r} and sigma to plot.')
    plt = pyplot()
    steps = np.array([float(r.get('step', i)) for i, r in enumerate(rows)])
    cmap = plt.get_cmap('viridis')
    lo, hi = float(steps.min()), float(steps.max())
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r, s in zip(rows, steps):
        frac = 0.0 if hi == lo else (s - lo) / (hi - lo)
        sigma = _floats(r['sigma'])
        ax.plot(sigma, _positive(per_log_sigma(_floats(r[key]), sigma)), color=cmap(frac), linewidth=1.2)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1))
    fig.colorbar(mappable, ax=ax, label='training step')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('σ')
    ax.set_ylabel(f'{key} per unit ln σ  (σ·{key})')
    ax.set_title(f'Emergence of {key} over training ({len(rows)} refreshes)')
    ax.grid(True, which='major', alpha=0.3)
    save_figure(fig, path)


def plot_grids(grids: Mapping[str, Sequence[float]], path: str) -> None:
    """One row of markers per σ grid (trailing zeros dropped), on a shared log σ axis."""
    if not grids:
        raise ValueError('No grids to plot.')
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(grids) + 1.4))
    names = list(grids)
    for i, name in enumerate(names):
        s = np.asarray(grids[name], np.float64)
        s = s[s > 0]
        ax.plot(s, np.full_like(s, i), marker='|', markersize=14, linestyle='-', linewidth=0.5, color=f'C{i % 10}')
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([f'{n} ({int(np.sum(np.asarray(grids[n]) > 0))})' for n in names])
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.invert_yaxis()
    ax.set_xscale('log')
    ax.set_xlabel('σ')
    ax.set_title('σ grids (number of nonzero steps)')
    ax.grid(True, axis='x', which='major', alpha=0.3)
    save_figure(fig, path)
