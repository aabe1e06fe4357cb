"""Generate images from a network snapshot with the EDM grid, InfoGrid, or EDM's ablation sampler.

Run `python generate.py --help` for the options and examples. Multi-GPU: `torchrun --nproc_per_node=N`.
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import math
import os
from typing import Any, Callable

import click
import numpy as np
import PIL.Image
import torch
import tqdm

from dnnlib import util
from torch_utils import distributed as dist
from training import generation
from training.network_io import load_network

EXAMPLES = """\b
Examples:
  # 64 images with EDM's deterministic Heun sampler (18 steps, NFE 35)
  python generate.py --network runs/00000-digits/network-snapshot-000100.pkl --outdir out --seeds 0-63
\b
  # InfoGrid from the profile embedded in the snapshot, and save the σ grid used
  python generate.py --network NET.pkl --outdir out --seeds 0-63 --steps 18 --infogrid --grid-out grid.json
\b
  # An official EDM checkpoint, class 3, stochastic sampling, on 8 GPUs
  torchrun --standalone --nproc_per_node=8 generate.py --outdir out --seeds 0-49999 --subdirs \\
      --network https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-cond-vp.pkl --class 3 \\
      --S_churn 40 --S_min 0.05 --S_max 50 --S_noise 1.003
\b
  # EDM's ablations (Table 1 of the EDM paper): VP discretization with Euler steps
  python generate.py --network NET.pkl --outdir out --solver euler --disc vp --schedule vp --scaling vp
"""

POSITIVE = click.FloatRange(min=0, min_open=True)


def seeds_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return generation.parse_seeds(value)
    except ValueError as exc:
        raise click.BadParameter(f'{exc}.') from None


def sampling_options(f: Callable) -> Callable:
    """The sampler options shared by generate.py and `fid.py calc --network`."""
    options = [
        click.option('--steps', 'num_steps', type=click.IntRange(min=1), default=18, show_default=True,
                     help='Number of σ steps N (Heun NFE = 2N − 1).'),
        click.option('--sigma_min', type=POSITIVE, default=None,
                     help='Lowest σ  [default: 0.002; ablation: per --disc]'),
        click.option('--sigma_max', type=POSITIVE, default=None,
                     help='Highest σ  [default: 80; ablation: per --disc]'),
        click.option('--rho', type=POSITIVE, default=7, show_default=True, help='Exponent ρ of the EDM time steps.'),
        click.option('--S_churn', 'S_churn', type=click.FloatRange(min=0), default=0, show_default=True,
                     help='Stochasticity strength.'),
        click.option('--S_min', 'S_min', type=click.FloatRange(min=0), default=0, show_default=True,
                     help='Lowest σ with stochasticity.'),
        click.option('--S_max', 'S_max', type=click.FloatRange(min=0), default=math.inf, show_default=True,
                     help='Highest σ with stochasticity.'),
        click.option('--S_noise', 'S_noise', type=float, default=1, show_default=True, help='Noise inflation.'),
        click.option('--solver', type=click.Choice(['euler', 'heun']), default=None,
                     help='ODE solver  [default: heun]'),
        click.option('--disc', 'discretization', type=click.Choice(['vp', 've', 'iddpm', 'edm']), default=None,
                     help='Ablation: time-step discretization.'),
        click.option('--schedule', type=click.Choice(['vp', 've', 'linear']), default=None,
                     help='Ablation: noise schedule σ(t).'),
        click.option('--scaling', type=click.Choice(['vp', 'none']), default=None,
                     help='Ablation: signal scaling s(t).'),
        click.option('--infogrid', is_flag=True, help="Use InfoGrid built from the snapshot's 'infonoise' profile."),
        click.option('--infogrid-profile', 'infogrid_profile', type=click.Path(exists=True, dir_okay=False),
                     default=None, help='InfoGrid from this profile JSON (or infonoise.jsonl); implies --infogrid.'),
        click.option('--infogrid-measure', 'infogrid_measure', type=click.Choice(list(generation.INFOGRID_MEASURES)),
                     default=None, help="InfoGrid measure: 'literal' = Eq. 19 (∫σ r dσ), 'entropic' = ∫r dσ  "
                                        f"[default: {generation.DEFAULT_INFOGRID_MEASURE}]"),
        click.option('--infogrid-floor', 'infogrid_floor', type=click.FloatRange(0, 1), default=None,
                     help='Weight of log-uniform blended into the InfoGrid density  '
                          f'[default: {generation.DEFAULT_INFOGRID_FLOOR}]'),
        click.option('--infogrid-gated', 'infogrid_gated', is_flag=True,
                     help='Build InfoGrid from the gated rate instead of the raw rate.'),
    ]
    for option in reversed(options):
        f = option(f)
    return f


SAMPLING_KEYS = ('num_steps', 'sigma_min', 'sigma_max', 'rho', 'S_churn', 'S_min', 'S_max', 'S_noise', 'solver',
                 'discretization', 'schedule', 'scaling', 'infogrid', 'infogrid_profile', 'infogrid_measure',
                 'infogrid_floor', 'infogrid_gated')


def sampler_options_from_cli(kwargs: dict[str, Any], snapshot: dict, network: str) -> generation.SamplerOptions:
    """Build SamplerOptions from the CLI values (popped from kwargs); click errors for bad combinations."""
    v = {k: kwargs.pop(k) for k in SAMPLING_KEYS}
    use_infogrid = v['infogrid'] or v['infogrid_profile'] is not None
    if not use_infogrid:
        flags = (('--infogrid-measure', 'infogrid_measure'), ('--infogrid-floor', 'infogrid_floor'),
                 ('--infogrid-gated', 'infogrid_gated'))
        given = [flag for flag, key in flags if v[key] not in (None, False)]
        if given:
            raise click.UsageError(f'{given[0]} only applies together with --infogrid or --infogrid-profile.')
    profile = None
    if v['infogrid_profile'] is not None:
        try:
            profile = generation.load_profile_file(v['infogrid_profile'])
        except (OSError, ValueError, KeyError) as exc:
            raise click.BadParameter(str(exc).rstrip('.') + '.', param_hint='--infogrid-profile') from None
    elif use_infogrid:
        try:
            profile = generation.snapshot_profile(snapshot, name=network)
        except ValueError as exc:
            raise click.ClickException(str(exc).rstrip('.') + '.') from None
    return generation.SamplerOptions(
        num_steps=v['num_steps'], sigma_min=v['sigma_min'], sigma_max=v['sigma_max'], rho=v['rho'],
        S_churn=v['S_churn'], S_min=v['S_min'], S_max=v['S_max'], S_noise=v['S_noise'], solver=v['solver'],
        discretization=v['discretization'], schedule=v['schedule'], scaling=v['scaling'], infogrid=profile,
        infogrid_measure=v['infogrid_measure'] or generation.DEFAULT_INFOGRID_MEASURE,
        infogrid_floor=generation.DEFAULT_INFOGRID_FLOOR if v['infogrid_floor'] is None else v['infogrid_floor'],
        infogrid_gated=v['infogrid_gated'])


def init_distributed(device: str) -> torch.device:
    """Initialise torch.distributed (torchrun) or a single process; return this rank's device."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine.', param_hint='--device')
    dist.init(device=None if device == 'auto' else device)
    if dist.get_world_size() > 1:
        return torch.device(dist.device())   # cuda:LOCAL_RANK under torchrun
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(device)


def rank0_first(fn: Callable[[], Any]) -> Any:
    """Run fn on rank 0 first (it downloads into the cache), then on the other ranks.

    A ValueError/OSError from fn becomes a click error on every rank after the barrier, so no rank hangs.
    """
    result, error = None, None
    for turn in ('first', 'rest'):
        if (dist.get_rank() == 0) == (turn == 'first'):
            try:
                result = fn()
            except (ValueError, OSError) as exc:
                error = str(exc)
        dist.barrier()
    if error is not None:
        raise click.ClickException(error)
    return result


def load_snapshot(network: str, device: torch.device) -> dict:
    """The snapshot dict with its 'ema' network on `device`; click error if it cannot be loaded."""
    return rank0_first(lambda: load_network(network, device))


def _png_bytes(image: np.ndarray) -> bytes:
    mode = {1: 'L', 2: 'LA', 3: 'RGB', 4: 'RGBA'}[image.shape[2]]
    buf = io.BytesIO()
    PIL.Image.fromarray(image[:, :, 0] if mode == 'L' else image, mode).save(buf, format='PNG')
    return buf.getvalue()


def _write_png(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    data = _png_bytes(image)
    with util.atomic_write(path) as f:
        f.write(data)


def write_grid(path: str, sigma_steps: torch.Tensor, opts: generation.SamplerOptions) -> None:
    """The σ list used (N values then 0) with how it was built, as JSON."""
    record = dict(grid='infogrid' if opts.infogrid is not None else 'edm', num_steps=opts.num_steps,
                  sigma_steps=[float(s) for s in sigma_steps.tolist()])
    if opts.infogrid is not None:
        record.update(measure=opts.infogrid_measure, floor=opts.infogrid_floor, gated=opts.infogrid_gated)
    else:
        record.update(rho=opts.rho)
    with util.atomic_write(path) as f:
        f.write((json.dumps(record, indent=1) + '\n').encode('utf-8'))


@click.command(epilog=EXAMPLES, context_settings=dict(max_content_width=110))
@click.option('--network', 'network', required=True, metavar='PATH|URL', help='Network snapshot (.pkl).')
@click.option('--outdir', required=True, type=click.Path(file_okay=False), help='Where to save the PNGs.')
@click.option('--seeds', default='0-63', show_default=True, callback=seeds_callback,
              help='Random seeds, e.g. 0-63,100.')
@click.option('--subdirs', is_flag=True, help='One subdirectory per 1000 seeds.')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None,
              help='Class label  [default: random per seed]')
@click.option('--batch', 'max_batch_size', type=click.IntRange(min=1), default=64, show_default=True,
              help='Maximum batch size per rank.')
@sampling_options
@click.option('--grid-out', 'grid_out', type=click.Path(dir_okay=False), default=None,
              help='Write the σ grid used to this JSON file.')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='auto = CUDA when available.')
def main(network: str, outdir: str, seeds: list[int], subdirs: bool, class_idx: int | None, max_batch_size: int,
         grid_out: str | None, device: str, **kwargs: Any) -> None:
    """Generate images with EDM's samplers or InfoGrid; one random generator per seed."""
    device_t = init_distributed(device)
    snapshot = load_snapshot(network, device_t)
    net = snapshot['ema']
    opts = sampler_options_from_cli(kwargs, snapshot, network)
    if grid_out is not None and opts.uses_ablation:
        raise click.UsageError('--grid-out records the EDM or InfoGrid grid; it cannot be used with the '
                               'ablation options (--solver/--disc/--schedule/--scaling without --infogrid).')
    try:
        generation.validate(net, opts, class_idx)
        sigma_steps = generation.resolve_sigma_steps(net, opts)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if net.img_channels not in (1, 2, 3, 4):
        raise click.ClickException(f'Cannot save {net.img_channels}-channel images as PNG.')

    rank, world_size = dist.get_rank(), dist.get_world_size()
    if rank == 0 and grid_out is not None:
        write_grid(grid_out, sigma_steps, opts)
    batches = generation.iterate_batches(net, seeds, opts, max_batch_size, rank, world_size, class_idx,
                                         device_t, sigma_steps)
    num_batches = len(generation.rank_batches(seeds, max_batch_size, rank, world_size))
    dist.print0(f'Generating {len(seeds)} images to "{outdir}" ...')
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        pending = []
        for batch_seeds, images in tqdm.tqdm(batches, total=num_batches, unit='batch', disable=rank != 0):
            images_np = images.permute(0, 2, 3, 1).cpu().numpy()
            done = [p for p in pending if p.done()]
            for p in done:
                p.result()  # surface write errors early
            pending = [p for p in pending if p not in done]
            pending += [pool.submit(_write_png, generation.image_path(outdir, s, subdirs), img)
                        for s, img in zip(batch_seeds, images_np)]
        for p in pending:
            p.result()
    if world_size > 1:
        dist.barrier()
    dist.print0('Done.')


if __name__ == '__main__':
    dist.run_cli(main)
