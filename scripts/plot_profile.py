"""PNG plots of an InfoNoise profile (ρ, π, φ, u against σ), of the emergence of π over training, and of σ
grids (EDM vs InfoGrid variants at the same number of steps).

Input: a profile JSON (`scripts/measure_profile.py`), a run's `infonoise.jsonl` (one profile per refresh; the
last one is the profile plotted) or a network snapshot with an embedded profile. Outputs go to --outdir:
profile.png, grids.png, and emergence.png for a .jsonl.
"""
from __future__ import annotations

import json
import os


import click
import numpy as np

import infonoise
from training import generation
from training.metrics import plotting

EXAMPLES = """\b
Examples:
  python -m scripts.plot_profile runs/00000-digits-demo/infonoise.jsonl --outdir runs/00000-digits-demo/plots
  python -m scripts.plot_profile profile.json --outdir plots --steps 18 --grid grid-from-generate.json
"""

# The InfoGrid variants compared in grids.png: (label, measure, floor).
INFOGRID_VARIANTS = (('InfoGrid literal', 'literal', 0.0), ('InfoGrid entropic', 'entropic', 0.0),
                     ('InfoGrid literal + 50% log-uniform', 'literal', 0.5))


def read_rows(path: str) -> list[dict]:
    """Profiles from a profile JSON (one row) or an infonoise.jsonl (one row per line)."""
    with open(path, 'r', encoding='utf-8') as f:
        text = f.read()
    try:
        rows = [json.loads(text)]
    except ValueError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            raise ValueError(f'{path} is neither a JSON file nor a JSON-lines file.') from None
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows or any('sigma' not in r for r in rows):
        raise ValueError(f'{path} holds no InfoNoise profile (rows need sigma, edges, rate, ...).')
    return rows


def compare_grids(profile: dict, num_steps: int, sigma_min: float, sigma_max: float) -> dict[str, list[float]]:
    """EDM's ρ=7 grid, a log-uniform grid and the InfoGrid variants, each with num_steps nonzero σ's."""
    grids = {'EDM ρ=7': infonoise.sigma_steps('edm', num_steps, sigma_min, sigma_max).tolist(),
             'log-uniform': np.geomspace(sigma_max, sigma_min, num_steps).tolist() + [0.0]}
    for label, measure, floor in INFOGRID_VARIANTS:
        grids[label] = infonoise.sigma_steps('eq19', num_steps, sigma_min, sigma_max, profile, measure=measure,
                                             floor=floor).tolist()
    return grids


@click.command(epilog=EXAMPLES, context_settings=dict(max_content_width=110))
@click.argument('source', metavar='PROFILE.json|infonoise.jsonl|SNAPSHOT.pkl')
@click.option('--outdir', default='.', show_default=True, type=click.Path(file_okay=False), help='Where to write PNGs.')
@click.option('--steps', 'num_steps', type=click.IntRange(min=2), default=18, show_default=True,
              help='Steps of the compared σ grids.')
@click.option('--sigma-min', type=click.FloatRange(min=0, min_open=True), default=0.002, show_default=True)
@click.option('--sigma-max', type=click.FloatRange(min=0, min_open=True), default=80.0, show_default=True)
@click.option('--grid', 'grid_files', multiple=True, type=click.Path(exists=True, dir_okay=False),
              help='Also plot a grid written by generate.py --grid-out (repeatable).')
def main(source: str, outdir: str, num_steps: int, sigma_min: float, sigma_max: float,
         grid_files: tuple[str, ...]) -> None:
    """Plot an InfoNoise profile, its emergence over training, and σ grids."""
    if not sigma_min < sigma_max:
        raise click.BadParameter(f'--sigma-min {sigma_min} must be below --sigma-max {sigma_max}.')
    if not os.path.isfile(source):
        raise click.BadParameter(f'{source} does not exist.', param_hint='SOURCE')
    try:
        if source.endswith('.pkl'):
            from training.network_io import load_network
            snapshot = load_network(source, 'cpu')
            rows = [infonoise.profile_to_json(generation.snapshot_profile(snapshot, name=source))]
        else:
            rows = read_rows(source)
        profile = infonoise.profile_from_json(rows[-1])
        grids = compare_grids(profile, num_steps, sigma_min, sigma_max)
        for path in grid_files:
            with open(path, 'r', encoding='utf-8') as f:
                record = json.load(f)
            grids[os.path.basename(path)] = record['sigma_steps'] if isinstance(record, dict) else record
    except (ValueError, OSError, KeyError) as exc:
        raise click.ClickException(str(exc).rstrip('.') + '.') from None

    os.makedirs(outdir, exist_ok=True)
    written = [os.path.join(outdir, 'profile.png'), os.path.join(outdir, 'grids.png')]
    try:
        plotting.plot_profile(profile, written[0])
        plotting.plot_grids(grids, written[1])
        if len(rows) > 1:
            written.append(os.path.join(outdir, 'emergence.png'))
            plotting.plot_emergence(rows, written[-1])
    except ValueError as exc:
        raise click.ClickException(str(exc).rstrip('.') + '.') from None
    for path in written:
        click.echo(f'Wrote {path}')


if __name__ == '__main__':
    main()
