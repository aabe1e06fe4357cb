"""InfoNoise profiles outside training: measure one (`measure`), plot one (`plot`).

`measure`: the entropy-rate profile r(σ) = mse(σ)/σ³ of a frozen network on a dataset, or the exact
empirical-Bayes profile of a small dataset, written as a profile JSON for `generate.py --infogrid-profile`.
Network mode uses the training estimator itself: for each of the K log-spaced bins, N noise levels are
drawn stratified in log σ inside the bin, the per-sample unweighted error mean((D(y + σn; σ) − y)²) is
computed on random dataset images (y in [−1, 1], EDM's scaling), and the errors go through an
`InfoNoiseSampler`'s observe/refresh machinery (one refresh, no EMA), which forms the rate, pivot, gate,
target ρ, sampling density π (with the floor), φ = π·w and the CDF u exactly as training does.

Oracle mode (`--oracle`) replaces the network by the exact empirical-Bayes denoiser of the dataset
(`infonoise.oracles.EmpiricalBayes`, the memorising optimum): mse_k is its Monte Carlo MMSE at the bin
centre σ_k over N draws of (x0, ε), divided by the number of elements (the per-element convention of
the training estimator), and goes through the same machinery.

`replay`: the sampling table of each refresh a run recorded (RUN/infonoise.jsonl), rebuilt from the run's
per-bin errors under another rule (`REPLAY_VARIANTS`: the continuous pivot rule, a pivot held at its first
value, another floor, no gate), as the share of π in σ bands. The run's own settings come first and give back
the recorded tables (the line "as run: largest |Δπ|" checks it). A replay shows the table a rule builds from
the errors this run measured; it cannot show how training on that table would have changed the errors.

`plot`: PNGs of a profile (ρ, π, φ, u against σ), of the emergence of π over training and of σ grids (EDM vs
InfoGrid variants at the same number of steps), from a profile JSON, a run's `infonoise.jsonl` (one profile
per refresh; the last one is plotted) or a network snapshot with an embedded profile. Outputs go to
--outdir: profile.png, grids.png, and emergence.png for a .jsonl.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import click
import numpy as np
import torch
import tqdm

import infonoise
from cli_common import check_device, comma_list, load_snapshot
from dnnlib import util
from training import generation
from training.grid_calibration import NamedGrids
from training.metrics import plotting

EXAMPLES = """\b
Examples:
  # Profile of a trained snapshot on its training data (64 bins x 256 samples)
  python -m scripts.infonoise_profile measure --network runs/00000-cifar10/network-snapshot-200000.pkl \\
      --data datasets/cifar10-32x32.zip --out profile.json
  python generate.py --network NET.pkl --outdir out --infogrid-profile profile.json
\b
  # Exact empirical-Bayes profile of 500 digits (no network)
  python -m scripts.infonoise_profile measure --oracle --data builtin:digits --max-size 500 --out oracle.json
\b
  # The tables a run's recorded errors give under other pivot rules and floors
  python -m scripts.infonoise_profile replay docs/results/table1a/bmnist/infonoise-seed0 --rows 6
\b
  # Plots of a run's profiles, and of a profile JSON with a grid written by generate.py --grid-out
  python -m scripts.infonoise_profile plot runs/00000-digits-demo/infonoise.jsonl --outdir runs/00000-digits-demo/plots
  python -m scripts.infonoise_profile plot profile.json --outdir plots --steps 18 --grid grid.json
"""

# The σ grids compared in grids.png: label -> name (training.grid_calibration.NamedGrids); the infogrid-* ones only
# for a profile with an entropy rate.
COMPARED_GRIDS = {'EDM ρ=7': 'edm', 'log-uniform': 'loguniform', 'InfoGrid literal': 'infogrid-literal',
                  'InfoGrid entropic': 'infogrid-entropic', 'InfoGrid literal + 50% log-uniform': 'infogrid-blend'}

# Replays: name -> (what it is, the σ-sampler settings it changes, the pivot it holds: None = the rule's,
# 'first' = the one of the run's first recorded refresh, a number = that c).
REPLAY_VARIANTS: dict[str, tuple[str, dict[str, Any], float | str | None]] = {
    'as-run': ("the run's own settings", {}, None),
    'onset-pivot': ('the continuous-data pivot rule (onset, p = 2e-3)', dict(endpoint='continuous', onset_p=2e-3),
                    None),
    'first-pivot': ("the pivot held at the run's first refresh", {}, 'first'),
    'floor-0.25': ('a log-uniform floor of 0.25', dict(floor=0.25), None),
    'ungated': ('no gate (c = 1e-9, far below the grid: g ≈ 1, so π ∝ r / w), floor as run', {}, 1e-9),
}
REPLAY_BANDS = (0.05, 0.5, 5.0)   # σ band edges of the replay tables (the bands of BENCHMARKS §16's drift tables)


# ---------------------------------------------------------------------------------------------------
# Measurement (plain functions; the CLI below only wires options to them).

def stratified_sigma(grid: infonoise.SigmaGrid, per_bin: int, generator: torch.Generator) -> torch.Tensor:
    """K·N σ's, N per bin, stratified in log σ within each bin (float64, bin-major order).

    Sub-bin j of bin k gets log σ = log edge_k + (j + U)/N · Δlog with U ~ U[0, 1), squeezed by 1e-6 of
    a bin width away from the edges so that every σ lands in its own bin under `grid.bin_index`.
    """
    K = grid.num_bins
    j = torch.arange(per_bin, dtype=torch.float64).repeat(K)
    k = torch.arange(K, dtype=torch.float64).repeat_interleave(per_bin)
    frac = (j + torch.rand(K * per_bin, dtype=torch.float64, generator=generator)) / per_bin
    frac = 1e-6 + (1 - 2e-6) * frac
    return torch.exp(grid.log_min + (k + frac) * grid.log_width)


def profile_from_losses(grid: infonoise.SigmaGrid, sigma: torch.Tensor, losses: torch.Tensor, weight_fn: Callable,
                        endpoint: str, floor: float, smooth: int = 0) -> dict:
    """Run per-sample (σ, unweighted loss) pairs through one refresh of an InfoNoiseSampler; its profile()."""
    counts = torch.bincount(grid.bin_index(sigma), minlength=grid.num_bins)
    s = infonoise.InfoNoiseSampler(grid, weight_fn=weight_fn, warmup_steps=0, refresh_every=1,
                                   buffer_size=int(counts.max()), ema=1.0, min_count=1, endpoint=endpoint, floor=floor,
                                   smooth=smooth, device='cpu')
    s.observe(sigma.cpu().double(), losses.cpu().float())
    if int(counts.min()) < 1:
        raise ValueError('Some σ bins received no samples.')
    if not s.step():
        raise ValueError('The measured losses do not give a usable profile (non-finite or all-zero rate).')
    return s.profile()


def measure_network_losses(net: torch.nn.Module, dataset: Any, sigma: torch.Tensor, batch_size: int,
                           generator: torch.Generator, device: torch.device,
                           progress: Callable = lambda it, total: it) -> torch.Tensor:
    """Per-sample mean((D(y + σn; σ) − y)²) for every σ, on random dataset items (y = x/127.5 − 1)."""
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    index = torch.randint(len(dataset), [sigma.numel()], generator=generator)
    losses = torch.empty(sigma.numel(), dtype=torch.float64)
    starts = range(0, sigma.numel(), batch_size)
    for start in progress(starts, len(starts)):
        idx = index[start:start + batch_size].tolist()
        items = [dataset[i] for i in idx]
        y = torch.from_numpy(np.stack([im for im, _ in items])).to(device, torch.float32) / 127.5 - 1
        labels = torch.from_numpy(np.stack([lb for _, lb in items])).to(device, torch.float32) if label_dim else None
        s = sigma[start:start + batch_size].to(device, torch.float32)
        noise = torch.randn(y.shape, generator=generator).to(device)
        with torch.no_grad():
            denoised = net(y + noise * s[:, None, None, None], s, labels).to(torch.float32)
        losses[start:start + len(idx)] = (denoised - y).square().flatten(1).mean(1).double().cpu()
    return losses


def oracle_mse(dataset: Any, sigma: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    """Per-element empirical-Bayes MMSE at each σ: EmpiricalBayes(data).mmse(σ) / (elements per item), with data all
    items of `dataset` as float64 [n, C, H, W] in [−1, 1]."""
    data = np.stack([dataset[i][0] for i in range(len(dataset))]).astype(np.float64) / 127.5 - 1
    oracle = infonoise.EmpiricalBayes(torch.from_numpy(data))
    generator = torch.Generator().manual_seed(seed)
    mmse = oracle.mmse(np.asarray(sigma, np.float64), num_samples=num_samples, generator=generator)
    return np.asarray(mmse) / oracle.dim


def compare_grids(profile: dict, num_steps: int, sigma_min: float, sigma_max: float) -> dict[str, list[float]]:
    """The COMPARED_GRIDS with num_steps nonzero σ's each (the InfoGrid ones only when the profile has an entropy
    rate, `infonoise.infogrid.has_rate`)."""
    grids = NamedGrids(None, profile, sigma_min, sigma_max)
    return {label: grids(name, num_steps).tolist() for label, name in COMPARED_GRIDS.items()
            if infonoise.infogrid.has_rate(profile) or not name.startswith('infogrid-')}


def replay_run(run: str, variants: tuple[str, ...], rows: int, bands: tuple[float, ...]) -> dict:
    """`replay` as data: dict(run, bands, refreshes, check, variants{name: dict(title, table[{kimg, pivot, shares}])})
    at `rows` evenly spaced recorded refreshes; `check` is the largest |π_replay − π_recorded| / max π_recorded of
    the run's own settings over all recorded refreshes (0 up to rounding when the replay is faithful)."""
    from training.training_loop import build_sigma_sampler
    for name in ('training_options.json', 'infonoise.jsonl'):
        if not os.path.isfile(os.path.join(run, name)):
            raise ValueError(f'{run} has no {name}, so it is not the folder of an InfoNoise training run')
    with open(os.path.join(run, 'training_options.json'), encoding='utf-8') as f:
        options = json.load(f)
    kwargs = (options.get('sigma_sampler_kwargs') if isinstance(options, dict) else None) or {}
    if kwargs.get('class_name') != 'infonoise.InfoNoiseSampler':
        raise ValueError(f'{run} is not an InfoNoise run (its training_options.json names no InfoNoiseSampler)')
    lines = [r for r in generation.load_profile_rows(os.path.join(run, 'infonoise.jsonl'))
             if r.get('refreshes') and r.get('mse') is not None and 'kimg' in r]
    if not lines:
        raise ValueError(f'{run}/infonoise.jsonl holds no refresh with per-bin errors')
    picks = sorted({round(i * (len(lines) - 1) / max(rows - 1, 1)) for i in range(rows)})
    out: dict[str, Any] = dict(run=run, bands=list(bands), refreshes=len(lines), variants={})
    for name in variants:
        title, changes, hold = REPLAY_VARIANTS[name]
        sampler = build_sigma_sampler({**kwargs, **changes})
        pivot = float(lines[0]['pivot']) if hold == 'first' else hold
        # The run's own settings rebuild every refresh (the check); the other variants only the rows shown.
        built = {i: sampler.table_from_mse(lines[i]['mse'], pivot)
                 for i in (range(len(lines)) if name == 'as-run' else picks)}
        if name == 'as-run':
            out['check'] = max(float(np.max(np.abs(b['pi'] - np.asarray(lines[i]['pi'], dtype=np.float64)))
                                     / np.max(lines[i]['pi'])) for i, b in built.items())
        table = [dict(kimg=float(lines[i]['kimg']), pivot=built[i]['pivot'],
                      shares=infonoise.band_shares(lines[i]['edges'], built[i]['pi'], bands).tolist()) for i in picks]
        out['variants'][name] = dict(title=title, table=table)
    return out


def replay_markdown(result: dict) -> str:
    """The replay as markdown: one table per variant (kEx, pivot, share of π per σ band)."""
    edges = [f'{b:g}' for b in result['bands']]
    header = ['kEx', 'pivot c', f'σ < {edges[0]}', *(f'{a}–{b}' for a, b in zip(edges, edges[1:])), f'σ ≥ {edges[-1]}']
    out = [f'Replay of {result["run"]} ({result["refreshes"]} recorded refreshes); as run: largest |Δπ| / max π = '
           f'{result["check"]:.1e}.', '']
    for name, v in result['variants'].items():
        out += [f'{name}: {v["title"]}', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        out += ['| ' + ' | '.join([f'{r["kimg"]:g}', f'{r["pivot"]:.3g}', *(f'{x:.3f}' for x in r['shares'])]) + ' |'
                for r in v['table']]
        out.append('')
    return '\n'.join(out)

# ---------------------------------------------------------------------------------------------------
# CLI.

@click.group(epilog=EXAMPLES, context_settings=dict(max_content_width=110))
def main() -> None:
    """InfoNoise profiles outside training: measure one, plot one."""


@main.command(context_settings=dict(max_content_width=110))
@click.option('--network', metavar='PATH|URL', default=None, help='Network snapshot (not with --oracle).')
@click.option('--data', 'data_spec', metavar='PATH|SPEC', required=True, help='Dataset: folder, zip or builtin:digits.')
@click.option('--out', 'out_path', required=True, type=click.Path(dir_okay=False), help='Profile JSON to write.')
@click.option('--oracle', is_flag=True, help='Exact empirical-Bayes profile of the dataset instead of a network.')
@click.option('--bins', 'num_bins', type=click.IntRange(min=2), default=64, show_default=True,
              help='Number of σ bins K.')
@click.option('--sigma-min', type=click.FloatRange(min=0, min_open=True), default=0.002, show_default=True)
@click.option('--sigma-max', type=click.FloatRange(min=0, min_open=True), default=80.0, show_default=True)
@click.option('--per-bin', type=click.IntRange(min=1), default=256, show_default=True,
              help='Samples per bin N (oracle: Monte Carlo draws per σ).')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=256, show_default=True,
              help='Network evaluations per batch.')
@click.option('--max-size', type=click.IntRange(min=1), default=None, help='Use a seeded random subset of the dataset.')
@click.option('--cond/--uncond', 'use_labels', default=None,
              help='Read dataset labels  [default: when the network is conditional]')
@click.option('--weight', type=click.Choice(list(infonoise.weights.WEIGHT_NAMES)), default='edm', show_default=True,
              help='Training loss weight w(σ) for π and φ = π·w.')
@click.option('--sigma-data', type=click.FloatRange(min=0, min_open=True), default=None,
              help="σ_data of the EDM weight  [default: the network's, else 0.5]")
@click.option('--endpoint', type=click.Choice(['auto', 'continuous', 'discrete']), default='auto', show_default=True,
              help='Pivot rule; auto = what the dataset declares.')
@click.option('--floor', type=click.FloatRange(0, 1, max_open=True), default=0.05, show_default=True,
              help='Log-uniform floor mixed into π (as in training).')
@click.option('--smooth', type=click.IntRange(min=0), default=0, show_default=True, help='Log-rate smoothing passes.')
@click.option('--seed', type=int, default=0, show_default=True, help='Random seed.')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
def measure(network: str | None, data_spec: str, out_path: str, oracle: bool, num_bins: int, sigma_min: float,
         sigma_max: float, per_bin: int, batch_size: int, max_size: int | None, use_labels: bool | None, weight: str,
         sigma_data: float | None, endpoint: str, floor: float, smooth: int, seed: int, device: str) -> None:
    """Entropy-rate profile of a network (or of the exact denoiser of a dataset) as a profile JSON."""
    from training.dataset import open_dataset
    from training.networks import data_shape

    if oracle == (network is not None):
        raise click.UsageError('Give either --network or --oracle.')
    if not sigma_min < sigma_max:
        raise click.BadParameter(f'--sigma-min {sigma_min} must be below --sigma-max {sigma_max}.')
    check_device(device)
    device_t = torch.device(device if device != 'auto' else 'cuda' if torch.cuda.is_available() else 'cpu')

    net = None
    if network is not None:
        net = load_snapshot(network, device_t)['ema']   # click error for an unreadable or non-finite snapshot
        if use_labels is None:
            use_labels = bool(getattr(net, 'label_dim', 0))
    try:
        dataset = open_dataset(data_spec, max_size=max_size, random_seed=seed, use_labels=bool(use_labels))
        if net is not None and list(dataset.image_shape) != list(data_shape(net)):
            raise ValueError(f'{data_spec} holds items of shape {list(dataset.image_shape)} but the network makes '
                             f'{list(data_shape(net))}.')
        if net is not None and getattr(net, 'label_dim', 0) and dataset.label_dim != net.label_dim:
            raise ValueError(f'The network needs {net.label_dim} class labels; '
                             f'{data_spec} provides {dataset.label_dim}.')
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None

    grid = infonoise.SigmaGrid(sigma_min, sigma_max, num_bins)
    sigma_data = sigma_data or float(getattr(net, 'sigma_data', 0.5) or 0.5)   # --sigma-data is never 0
    weight_fn = infonoise.get_weight(weight, sigma_data=sigma_data)
    endpoint = dataset.endpoint if endpoint == 'auto' else endpoint
    bar = lambda it, total: tqdm.tqdm(it, total=total, unit='batch')  # noqa: E731

    try:
        if oracle:
            click.echo(f'Exact empirical-Bayes profile of {len(dataset)} items on {num_bins} bins ...')
            mse = oracle_mse(dataset, grid.sigma.numpy(), per_bin, seed)
            profile = profile_from_losses(grid, grid.sigma.clone(), torch.from_numpy(mse), weight_fn, endpoint,
                                          floor, smooth)
        else:
            generator = torch.Generator().manual_seed(seed)
            sigma = stratified_sigma(grid, per_bin, generator)
            click.echo(f'Measuring {network} on {num_bins} bins x {per_bin} samples ...')
            losses = measure_network_losses(net, dataset, sigma, batch_size, generator, device_t, bar)
            profile = profile_from_losses(grid, sigma, losses, weight_fn, endpoint, floor, smooth)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    record = infonoise.profile_to_json(profile)   # with its provenance
    record.update(source='oracle' if oracle else 'network', **({} if network is None else dict(network=network)),
                  data=data_spec, num_items=len(dataset), per_bin=per_bin, weight=weight, sigma_data=sigma_data,
                  endpoint=endpoint, floor=floor, seed=seed)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    util.write_json(out_path, record)
    click.echo(f'Wrote {out_path} (pivot σ = {float(profile.get("pivot", math.nan)):.4g}).')


@main.command(context_settings=dict(max_content_width=110))
@click.argument('source', metavar='PROFILE.json|infonoise.jsonl|SNAPSHOT.pkl')
@click.option('--outdir', default='.', show_default=True, type=click.Path(file_okay=False), help='Where to write PNGs.')
@click.option('--steps', 'num_steps', type=click.IntRange(min=2), default=18, show_default=True,
              help='Steps of the compared σ grids.')
@click.option('--sigma-min', type=click.FloatRange(min=0, min_open=True), default=0.002, show_default=True)
@click.option('--sigma-max', type=click.FloatRange(min=0, min_open=True), default=80.0, show_default=True)
@click.option('--grid', 'grid_files', multiple=True, type=click.Path(exists=True, dir_okay=False),
              help='Also plot a grid written by generate.py --grid-out (repeatable).')
def plot(source: str, outdir: str, num_steps: int, sigma_min: float, sigma_max: float,
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
            rows = generation.load_profile_rows(source)
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
    if not infonoise.infogrid.has_rate(profile):
        click.echo('No InfoGrid in grids.png: InfoGrid needs an InfoNoise profile with an entropy rate, and this '
                   'one has none.')


@main.command(context_settings=dict(max_content_width=110))
@click.argument('run', type=click.Path(exists=True, file_okay=False))
@click.option('--variants', default=','.join(REPLAY_VARIANTS), show_default=True,
              callback=comma_list(tuple(REPLAY_VARIANTS)),
              help='Replays, comma-separated: ' + '; '.join(f'{k}: {v[0]}' for k, v in REPLAY_VARIANTS.items()) + '.')
@click.option('--rows', type=click.IntRange(min=2), default=8, show_default=True,
              help='Recorded refreshes shown per variant, evenly spaced (the first and the last included).')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False), default=None,
              help='Also write the replay as JSON to this file.')
def replay(run: str, variants: tuple[str, ...], rows: int, json_path: str | None) -> None:
    """Rebuild an InfoNoise run's recorded sampling tables under other pivot rules, floors or no gate."""
    if 'as-run' not in variants:
        variants = ('as-run', *variants)                # the check that the replay is faithful always runs
    try:
        result = replay_run(run, variants, rows, REPLAY_BANDS)
        if json_path:
            util.write_json(json_path, util.jsonable(result, strict=True), indent=1, allow_nan=False)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise click.ClickException(str(exc).rstrip('.') + '.') from None
    click.echo(replay_markdown(result))


if __name__ == '__main__':
    main()
