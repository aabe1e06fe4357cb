"""Fréchet Inception Distance, EDM-compatible: `calc` (FID of images or of a network) and `ref` (statistics);
`dna` (sequence metrics of generated DNA: FD in a cell-type CNN's features, k-mer JS, JASPAR motif composition,
GC and CpG, memorisation, marker motifs; each with its real-data floor).

Run `python fid.py calc --help` / `python fid.py ref --help` / `python fid.py dna --help`.
Multi-GPU: `torchrun --nproc_per_node=N`.
"""
from __future__ import annotations

import io
import os
from typing import Any

import click
import numpy as np
import torch
import tqdm

from cli_common import (init_distributed, load_snapshot, print0, rank0_first, resolve_grid, run_cli,
                        sampler_options_from_cli, sampling_options, seeds_callback, write_error)
from dnnlib import util
from torch_utils import distributed as dist
from training import generation
from training.dataset import open_dataset
from training.networks import data_shape
from training.metrics import frechet
from training.metrics.detector import INCEPTION_URL, load_detector

DEFAULT_NUM = 50000

CALC_EXAMPLES = """\b
Examples:
  # FID of 50k generated PNGs against EDM's CIFAR-10 reference statistics
  python fid.py calc --images out --ref https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz
\b
  # Sample a snapshot in memory (no PNGs) with InfoGrid at 18 steps and evaluate 10k images on 8 GPUs
  torchrun --standalone --nproc_per_node=8 fid.py calc --network NET.pkl --ref refs/cifar10.npz \\
      --num 10000 --steps 18 --infogrid
"""

REF_EXAMPLES = """\b
Examples:
  python fid.py ref --data datasets/cifar10-32x32.zip --dest refs/cifar10-32x32.npz
  python fid.py ref --data builtin:digits --dest refs/digits.npz --detector my_detector.pt
"""


def _common_options(f):
    f = click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
                     help='auto = CUDA when available.')(f)
    f = click.option('--workers', 'num_workers', type=click.IntRange(min=0), default=3, show_default=True,
                     help='Data-loading worker processes per rank.')(f)
    f = click.option('--batch', 'max_batch_size', type=click.IntRange(min=1), default=64, show_default=True,
                     help='Maximum batch size per rank.')(f)
    return click.option('--detector', 'detector_url', metavar='PATH|URL', default=INCEPTION_URL, show_default=True,
                        help='Feature detector: a TorchScript file or a pickle, called as '
                             'det(uint8 NCHW, return_features=True) -> [N, D]. A TorchScript detector is code: '
                             'it runs with your rights (it can read and write your files), so pass only files you '
                             'trust. Pickles load without running code; the pinned Inception-v3 pickle runs only as '
                             'downloaded by you from its URL (its SHA-256 is then pinned privately) or, from the '
                             'cache, if its SHA-256 matches your pin.')(f)


def _load_ref(ref_path: str) -> tuple[np.ndarray, np.ndarray]:
    def load():
        with util.open_url(ref_path) as f:
            data = f.read()
        try:
            return frechet.load_reference_stats(io.BytesIO(data), name=ref_path)
        except ValueError as exc:
            if 'allow_pickle' in str(exc) or 'pickle' in str(exc).lower():   # never pass on advice to load unsafely
                raise ValueError(f'{ref_path} holds Python objects instead of plain numeric arrays mu and sigma; '
                                 f'they are refused because loading them could run code.') from None
            raise
    return rank0_first(load)


def _open_dataset(path: str, **kwargs: Any):
    try:
        return open_dataset(path, **kwargs)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _check_finite_stats(mu: np.ndarray, sigma: np.ndarray, what: str) -> None:
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise click.ClickException(f'{what} hold non-finite statistics (NaN or infinity); no FID can be computed.')


def _reason(exc: BaseException) -> str:
    """One line for an error, also from a DataLoader worker (whose message embeds a traceback)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if len(lines) > 1 and any('Original Traceback' in ln for ln in lines):
        last = lines[-1]
        return last.split(': ', 1)[1] if ': ' in last else last
    return lines[0] if lines else type(exc).__name__


def _stats(batches, detector, total: int, device: torch.device, desc: str) -> tuple[np.ndarray, np.ndarray]:
    progress = tqdm.tqdm(batches, total=total, unit='batch', desc=desc, disable=dist.get_rank() != 0)
    try:
        return frechet.compute_stats(progress, detector, detector.feature_dim, device)
    except (ValueError, OSError) as exc:   # a bad detector output, an undecodable image (or a decompression bomb)
        raise click.ClickException(_reason(exc)) from None


@click.group()
def main() -> None:
    """Fréchet Inception Distance (EDM-compatible).

    \b
    calc  FID of a folder/zip of images, or of a network sampled in memory, against reference statistics.
    ref   Reference statistics (mu, sigma) of a dataset, as an .npz file.
    dna   Sequence metrics of generated DNA (FASTA) per cell type, each beside its real-data floor.
    """


@main.command(epilog=CALC_EXAMPLES, context_settings=dict(max_content_width=110))
@click.option('--images', 'image_path', metavar='DIR|ZIP', default=None, help='Generated images (folder or zip).')
@click.option('--network', metavar='PATH|URL', default=None, help='Or: a network snapshot to sample in memory.')
@click.option('--ref', 'ref_path', metavar='NPZ|URL', required=True, help='Reference statistics (mu, sigma).')
@click.option('--num', 'num_expected', type=click.IntRange(min=2, max=generation.MAX_SEEDS), default=None,
              show_default=str(DEFAULT_NUM),
              help='Number of images to evaluate (with --network and --seeds: at most len(seeds)).')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of the random subset when --images '
              'holds more than --num images.')
@click.option('--seeds', default=None, callback=seeds_callback,
              help='With --network: sampling seeds  [default: 0..NUM-1]')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None,
              help='With --network: class label  [default: random per seed]')
@sampling_options
@_common_options
def calc(image_path: str | None, network: str | None, ref_path: str, num_expected: int | None, seed: int,
         seeds: list[int] | None, class_idx: int | None, detector_url: str, max_batch_size: int, num_workers: int,
         device: str, **kwargs: Any) -> None:
    """FID of generated images against reference statistics."""
    if (image_path is None) == (network is None):
        raise click.UsageError('Give exactly one of --images and --network.')
    network_only = [seeds, class_idx, kwargs['infogrid_profile'], kwargs['solver'], kwargs['discretization'],
                    kwargs['schedule'], kwargs['scaling']]
    if image_path is not None and (kwargs['infogrid'] or any(v is not None for v in network_only)):
        raise click.UsageError('--seeds, --class and the sampler options apply only with --network.')
    device_t = init_distributed(device)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mu_ref, sigma_ref = _load_ref(ref_path)
    _check_finite_stats(mu_ref, sigma_ref, f'The reference {ref_path}')

    if image_path is not None:
        num = DEFAULT_NUM if num_expected is None else num_expected
        dataset = _open_dataset(image_path, max_size=num, random_seed=seed)
        if len(dataset) < num:
            raise click.ClickException(f'Found {len(dataset)} images in {image_path}, fewer than --num {num}.')
        image_shape = tuple(dataset.image_shape)
    else:
        snapshot = load_snapshot(network, device_t)
        net = snapshot['ema']
        opts = sampler_options_from_cli(kwargs, snapshot, network)
        sigma_steps = resolve_grid(net, opts, class_idx)
        if seeds is None:
            seeds = list(range(DEFAULT_NUM if num_expected is None else num_expected))
        elif num_expected is not None:
            if num_expected > len(seeds):
                raise click.ClickException(f'--num {num_expected} is larger than the {len(seeds)} seeds given.')
            seeds = seeds[:num_expected]
        if len(seeds) < 2:
            raise click.ClickException('FID needs at least 2 images; give more --seeds.')
        image_shape = data_shape(net)
        if len(image_shape) != 3:
            raise click.ClickException(f'{network} generates sequences of shape {list(image_shape)}, not images; '
                                       f'image FID does not apply to it.')

    detector = rank0_first(lambda: load_detector(detector_url, device_t, image_shape))
    if detector.feature_dim != mu_ref.shape[0]:
        raise click.ClickException(f'The reference {ref_path} has {mu_ref.shape[0]}-D features but the detector '
                                   f'{detector_url} produces {detector.feature_dim}-D features.')
    if image_path is not None:
        total = sum(1 for b in frechet.rank_index_batches(len(dataset), max_batch_size, rank, world_size) if len(b))
        batches = frechet.dataset_batches(dataset, max_batch_size, rank, world_size, num_workers)
        print0(f'Computing features of {len(dataset)} images from "{image_path}" ...')
    else:
        total = sum(1 for b in generation.rank_batches(seeds, max_batch_size, rank, world_size) if b)
        batches = (generation.to_uint8(samples) for _batch_seeds, samples, _ in generation.iterate_samples(
            net, seeds, opts, max_batch_size, rank, world_size, class_idx, device_t, sigma_steps))
        print0(f'Sampling and computing features of {len(seeds)} images from "{network}" ...')
    mu, sigma = _stats(batches, detector, total, device_t, 'features')
    if rank == 0:
        _check_finite_stats(mu, sigma, 'The features of the generated images')
        try:
            fid = frechet.frechet_distance(mu, sigma, mu_ref, sigma_ref)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        print(f'{fid:g}')
    dist.barrier()


@main.command(epilog=REF_EXAMPLES, context_settings=dict(max_content_width=110))
@click.option('--data', 'dataset_path', metavar='PATH|SPEC', required=True,
              help='Dataset: folder or zip, or builtin:digits.')
@click.option('--dest', 'dest_path', metavar='NPZ', required=True, type=click.Path(dir_okay=False),
              help='Where to write the statistics.')
@_common_options
def ref(dataset_path: str, dest_path: str, detector_url: str, max_batch_size: int, num_workers: int,
        device: str) -> None:
    """Reference statistics (mu, sigma) of a dataset for `fid.py calc`."""
    device_t = init_distributed(device)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    dataset = _open_dataset(dataset_path)
    if len(dataset) < 2:
        raise click.ClickException(f'{dataset_path} holds {len(dataset)} image(s); statistics need at least 2.')
    detector = rank0_first(lambda: load_detector(detector_url, device_t, tuple(dataset.image_shape)))
    total = sum(1 for b in frechet.rank_index_batches(len(dataset), max_batch_size, rank, world_size) if len(b))
    batches = frechet.dataset_batches(dataset, max_batch_size, rank, world_size, num_workers)
    print0(f'Computing reference statistics of {len(dataset)} images from "{dataset_path}" ...')
    mu, sigma = _stats(batches, detector, total, device_t, 'features')
    if rank == 0:
        _check_finite_stats(mu, sigma, f'The features of {dataset_path}')
        try:
            os.makedirs(os.path.dirname(os.path.abspath(dest_path)), exist_ok=True)
            with util.atomic_write(dest_path) as f:
                frechet.save_reference_stats(f, mu, sigma)
        except OSError as exc:
            raise write_error(exc, dest_path) from None
        print(f'Saved {dest_path}')
    dist.barrier()


DNA_EXAMPLES = """\b
Examples:
  # DNA_TABLES: DNA-Diffusion's four-cell-type training table (.txt/.tsv/.gz) or a folder of its tables.
  # Every metric of generate.py's FASTA, per cell type, each with its real-data floor
  python fid.py dna --samples out/samples.fa --data dna:DNA_TABLES
\b
  # k-mer, motif and memorisation only, also written as JSON
  python fid.py dna --samples out/samples.fa --data dna:DNA_TABLES --metrics kmer,motif,memo \\
      --json out/dna.json
"""


@main.command(epilog=DNA_EXAMPLES, context_settings=dict(max_content_width=110))
@click.option('--samples', 'samples_path', metavar='FASTA', required=True, type=click.Path(dir_okay=False),
              help='Generated sequences; a header field class=NAME gives the cell type (generate.py writes it).')
@click.option('--data', 'data', metavar='dna:PATH', required=True,
              help='The DNA tables the model was trained on: one table or a folder of them.')
@click.option('--metrics', 'metric_spec', default='fd,kmer,motif,motifp,gc,cpg,memo,markers', show_default=True,
              help="fd = FD (cell-type CNN; stand-in for Sei-FID), kmer = k-mer JS (k = 1..6), motif = motif "
                   "composition KL as DNA-Diffusion computed it (JASPAR 2020, needs the dna extra), motifp = its "
                   "p < 1e-4 variant against the held-out split, gc / cpg = GC content / CpG o/e Wasserstein-1, "
                   "memo = share >= 95% identical to a training sequence, markers = marker-motif enrichment vs "
                   "the other cell types.")
@click.option('--split', type=click.Choice(['test', 'validation', 'training']), default='test', show_default=True,
              help='Reference split of the tables.')
@click.option('--json', 'json_path', metavar='PATH', type=click.Path(dir_okay=False), default=None,
              help='Also write the report (per cell type, per k, classifier accuracy) as JSON.')
def dna(samples_path: str, data: str, metric_spec: str, split: str, json_path: str | None) -> None:
    """Sequence metrics of generated DNA against real sequences, per cell type and averaged, each beside its
    real-data floor (real sequences at the same sample size through the same code)."""
    import dataclasses
    from training.fasta import read_fasta, require_biopython
    from training.metrics import dna_eval
    spec = data if data.startswith('dna:') else f'dna:{data}'
    try:
        names = dna_eval.parse_metric_names(metric_spec)
        require_biopython()   # the FASTA reader is Biopython's (the dna extra): fail before loading the tables
        reference = dna_eval.DNAReference(spec, split)
        records = read_fasta(samples_path, length=reference.seq_len)
        cell_types = [dna_eval.header_cell_type(header) for header, _ in records]
        report = dna_eval.evaluate_sequences([seq for _, seq in records], cell_types, reference, names, floors=True)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    print(dna_eval.format_report(report))
    if json_path is not None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
            util.write_json(json_path, dataclasses.asdict(report), indent=2)
        except OSError as exc:
            raise write_error(exc, json_path) from None


if __name__ == '__main__':
    run_cli(main)
