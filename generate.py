"""Generate images (or DNA sequences) from a network snapshot with the EDM grid, InfoGrid, or EDM's ablation sampler.

Image networks write one PNG per seed; sequence networks (DNA, data shape [4, L]) write one FASTA file,
OUTDIR/samples.fa, with one record per seed headed `>seed{N} class={cell type}`.
Run `python generate.py --help` for the options and examples. Multi-GPU: `torchrun --nproc_per_node=N`.
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import click
import numpy as np
import torch
import tqdm

from cli_common import (FiniteFloatRange, init_distributed, load_snapshot, prepare_output_dir, print0, resolve_grid,
                        run_cli, sampler_options_from_cli, sampling_options, seeds_callback, write_error)
from dnnlib import util
from torch_utils import distributed as dist
from training import fasta, generation
from training.image_grid import png_bytes
from training.guidance import GuidedDenoiser
from training.networks import data_shape
from training.metrics import registry

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
\b
  # 1000 K562 sequences from a DNA snapshot (out/samples.fa) with classifier-free guidance W = 2
  # (DNA-Diffusion's cond_weight w is W = 1 + w)
  python generate.py --network DNA.pkl --outdir out --seeds 0-999 --class K562 --guidance 2
"""


def _write_png(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    data = png_bytes(image)
    with util.atomic_write(path) as f:
        f.write(data)


@click.command(epilog=EXAMPLES, context_settings=dict(max_content_width=110))
@click.option('--network', 'network', required=True, metavar='PATH|URL', help='Network snapshot (.pkl).')
@click.option('--outdir', required=True, type=click.Path(file_okay=False),
              help='Where to save the PNGs (DNA: samples.fa).')
@click.option('--seeds', default='0-63', show_default=True, callback=seeds_callback,
              help='Random seeds, e.g. 0-63,100.')
@click.option('--subdirs', is_flag=True, help='One subdirectory per 1000 seeds.')
@click.option('--class', 'class_spec', metavar='INT|NAME', default=None,
              help='Class index, or a class name of a DNA snapshot (K562 or K562_ENCLB843GMH)  '
                   '[default: random per seed]')
@click.option('--guidance', type=FiniteFloatRange(min=0), default=1, show_default=True,
              help='Classifier-free guidance weight W: D_uncond + W·(D_cond − D_uncond); 1 = plain conditional. '
                   'Needs a conditional net trained with label dropout.')
@click.option('--batch', 'max_batch_size', type=click.IntRange(min=1), default=64, show_default=True,
              help='Maximum batch size per rank.')
@sampling_options
@click.option('--grid-out', 'grid_out', type=click.Path(dir_okay=False), default=None,
              help='Write the σ grid used to this JSON file.')
@click.option('--verbose', is_flag=True, help='Print the σ grid used (and how it was built) before sampling.')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='auto = CUDA when available.')
def main(network: str, outdir: str, seeds: list[int], subdirs: bool, class_spec: str | None, guidance: float,
         max_batch_size: int, grid_out: str | None, verbose: bool, device: str, **kwargs: Any) -> None:
    """Generate images (DNA: FASTA sequences) with EDM's samplers or InfoGrid; one random generator per seed.

    \b
    Discrete data are written decoded: a model trained on binarised images (values ±1) writes the sign of
    each pixel (black/white PNGs), a DNA model the argmax base at every position (FASTA).

    \b
    σ grid: EDM's ρ = 7 grid (--steps, --rho) by default. --infogrid builds the grid from the
    snapshot's InfoNoise profile with the solver-aware construction (equal predicted step error of
    --solver); --infogrid-calibrate N tunes the tempered construction on N latents; --infogrid-method
    eq19 | tempered selects the others. Where each grid wins, ties and loses, per model and NFE:
    docs/BENCHMARKS.md §10 (scripts/bench_infogrid.py). --sigmas LIST|FILE uses your own σ list;
    --verbose prints the σ list used.
    """
    device_t = init_distributed(device)
    snapshot = load_snapshot(network, device_t)
    net = snapshot['ema']
    names = generation.class_names(snapshot)
    try:
        class_idx = generation.resolve_class(class_spec, names)
        net = GuidedDenoiser(net, guidance) if guidance != 1 else net   # checks the weight against the net
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    opts = sampler_options_from_cli(kwargs, snapshot, network)
    if grid_out is not None and opts.uses_ablation:
        raise click.UsageError('--grid-out records the EDM or InfoGrid grid; it cannot be used with the '
                               'ablation options (--solver/--disc/--schedule/--scaling without --infogrid).')
    sigma_steps = resolve_grid(net, opts, class_idx)
    sequences = len(data_shape(net)) == 2   # the net denoises sequences [A, L] (DNA), not images [C, H, W]
    if sequences:
        try:
            fasta.require_biopython()   # FASTA is written with Biopython (the dna extra): fail before sampling
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    prepare_output_dir(outdir)   # an unwritable or impossible --outdir fails before any sampling
    if not sequences and net.img_channels not in (1, 2, 3, 4):
        raise click.ClickException(f'Cannot save {net.img_channels}-channel images as PNG.')

    rank, world_size = dist.get_rank(), dist.get_world_size()
    if rank == 0 and grid_out is not None:
        try:
            util.write_json(grid_out, generation.grid_record(opts, sigma_steps))   # the σ list and how it was built
        except OSError as exc:
            raise write_error(exc, grid_out) from None
    if verbose:
        record = generation.grid_record(opts, sigma_steps)
        how = ', '.join(f'{k}={v}' for k, v in record.items() if k not in ('sigma_steps', 'calibration'))
        print0(f'σ grid: {how}')
        if sigma_steps is None:
            print0('σ levels: computed inside EDM\'s ablation sampler (--disc/--schedule/--scaling).')
        else:
            print0('σ levels: ' + ', '.join(f'{float(s):.6g}' for s in sigma_steps))
    if sequences:
        _generate_fasta(net, seeds, opts, max_batch_size, class_idx, names, device_t, sigma_steps, outdir)
        return
    discrete = registry.is_discrete(snapshot.get('dataset_kwargs'))   # binarised images: write sign(x), as data are
    batches = ((batch_seeds, generation.to_uint8(registry.decode(samples) if discrete else samples))
               for batch_seeds, samples, _ in generation.iterate_samples(
                   net, seeds, opts, max_batch_size, rank, world_size, class_idx, device_t, sigma_steps))
    num_batches = len(generation.rank_batches(seeds, max_batch_size, rank, world_size))
    print0(f'Generating {len(seeds)} images to "{outdir}" ...')
    try:
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
    except OSError as exc:   # full disk, unwritable folder, a name too long: one sentence
        raise write_error(exc, outdir) from None
    if world_size > 1:
        dist.barrier()
    print0('Done.')


def _generate_fasta(net: torch.nn.Module, seeds: list[int], opts: generation.SamplerOptions, max_batch_size: int,
                    class_idx: int | None, names: list[str] | None, device: torch.device,
                    sigma_steps: torch.Tensor | None, outdir: str) -> None:
    """Sequence networks: all ranks sample their batches, rank 0 writes OUTDIR/samples.fa in --seeds order."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    batches = generation.iterate_samples(net, seeds, opts, max_batch_size, rank, world_size, class_idx, device,
                                         sigma_steps)
    num_batches = len(generation.rank_batches(seeds, max_batch_size, rank, world_size))
    path = os.path.join(outdir, 'samples.fa')
    print0(f'Generating {len(seeds)} sequences to "{path}" ...')
    records = {}
    for batch_seeds, samples, classes in tqdm.tqdm(batches, total=num_batches, unit='batch', disable=rank != 0):
        classes = None if classes is None else classes.tolist()
        records.update(zip(batch_seeds, fasta.sample_records(batch_seeds, samples, classes, names)))
    if world_size > 1:
        gathered = [None] * world_size
        torch.distributed.all_gather_object(gathered, records)
        records = {seed: record for part in gathered for seed, record in part.items()}
    error = None
    if rank == 0:
        try:
            os.makedirs(outdir, exist_ok=True)
            fasta.write_fasta(path, [records[s] for s in seeds])
        except OSError as exc:
            error = f'Cannot write {path}: {exc.strerror or exc}.'
    error = dist.broadcast_object(error)   # every rank fails (or finishes) together
    if error is not None:
        raise click.ClickException(error)
    print0('Done.')


if __name__ == '__main__':
    run_cli(main)
