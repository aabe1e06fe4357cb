"""InfoGrid vs the EDM grid at equal NFE on a trained 8x8-digits snapshot (evidence for generate.py's defaults).

For every step count N, the same latents (one seeded generator) go through EDM's deterministic Heun sampler
on each σ grid: EDM's ρ=7 grid, and InfoGrid variants built from the profile embedded in the snapshot
(measure literal | entropic, log-uniform floor 0 | 0.5). Quality is the Fréchet distance in the feature
space of the digit classifier (training/metrics/digit_features.py) against all real digits; lower is better.
"""
from __future__ import annotations

import json
import os
import sys

_SCRIPTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_SCRIPTS)
if sys.path and os.path.abspath(sys.path[0] or '.') == _SCRIPTS:
    sys.path[0] = _ROOT  # run as a script: import the repo (and do not shadow the stdlib `profile`)
elif _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import click  # noqa: E402
import torch  # noqa: E402

import infonoise  # noqa: E402
from dnnlib.util import atomic_write  # noqa: E402
from training import network_io, sampler  # noqa: E402
from training.metrics.digit_features import digit_frechet  # noqa: E402

GRIDS = {  # name -> None for EDM's grid, else (measure, floor)
    'edm': None,
    'infogrid-literal': ('literal', 0.0),
    'infogrid-entropic': ('entropic', 0.0),
    'infogrid-blend': ('literal', 0.5),
    'infogrid-entropic-blend': ('entropic', 0.5),
}

EXAMPLES = """\b
Examples:
  python train.py --preset digits-demo --outdir runs
  python scripts/bench_infogrid.py --network runs/00000-*/network-snapshot-000100.pkl --steps 4,6,9,18
"""


def sigma_grid(name: str, net: torch.nn.Module, profile: dict, num_steps: int) -> torch.Tensor:
    """The σ list (with trailing 0) of grid `name` for `num_steps` nonzero levels."""
    sigma_min, sigma_max = max(0.002, net.sigma_min), min(80.0, net.sigma_max)   # EDM's defaults, clamped
    if GRIDS[name] is None:
        return sampler.edm_sigma_steps(num_steps, sigma_min, sigma_max, round_sigma=net.round_sigma)
    measure, floor = GRIDS[name]
    return infonoise.infogrid_sigma_steps(profile, num_steps, sigma_min, sigma_max, measure=measure, floor=floor)


@click.command(epilog=EXAMPLES)
@click.option('--network', 'network_path', required=True, help='Snapshot with an embedded InfoNoise profile.')
@click.option('--steps', default='4,6,9,18', show_default=True, help='Comma-separated numbers of σ levels.')
@click.option('--num', default=1000, show_default=True, type=click.IntRange(min=2), help='Images per grid.')
@click.option('--seed', default=0, show_default=True, type=click.IntRange(min=0), help='Seed of the latents.')
@click.option('--reference', default='digits', show_default=True, type=click.Choice(['digits', 'digits-binary']))
@click.option('--json', 'json_path', default=None, type=click.Path(dir_okay=False), help='Also write JSON here.')
def main(network_path: str, steps: str, num: int, seed: int, reference: str, json_path: str | None) -> None:
    """Digit Fréchet distance of EDM's grid and InfoGrid variants at equal NFE."""
    try:
        step_list = [int(s) for s in steps.split(',') if s.strip()]
    except ValueError:
        raise click.BadParameter('give whole numbers separated by commas, e.g. 4,6,9,18', param_hint='--steps')
    if not step_list or min(step_list) < 2:
        raise click.BadParameter('every step count must be >= 2', param_hint='--steps')
    try:
        data = network_io.load_network(network_path)
    except network_io.NetworkLoadError as exc:
        raise click.ClickException(str(exc))
    if not data.get('infonoise'):
        raise click.ClickException(f'{network_path} has no InfoNoise profile (train with --sigma-dist infonoise).')
    net, profile = data['ema'], infonoise.profile_from_json(data['infonoise'])
    shape = [num, net.img_channels, net.img_resolution, net.img_resolution]
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    results = {}
    for n in step_list:
        for name in GRIDS:
            with torch.no_grad():
                images = sampler.heun_sampler(net, latents, sigma_grid(name, net, profile, n))
            results.setdefault(name, {})[n] = digit_frechet(images, reference=reference)
    click.echo(f'Digit Fréchet distance (lower is better), {num} images, NFE = 2N - 1\n')
    click.echo('| grid | ' + ' | '.join(f'N={n} (NFE {2 * n - 1})' for n in step_list) + ' |')
    click.echo('|---|' + '---:|' * len(step_list))
    for name, row in results.items():
        click.echo(f'| {name} | ' + ' | '.join(f'{row[n]:.2f}' for n in step_list) + ' |')
    if json_path:
        with atomic_write(json_path) as f:
            f.write(json.dumps(dict(network=network_path, num=num, seed=seed, results=results), indent=1).encode())


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
