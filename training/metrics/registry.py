"""Metrics by name: what `train.py --metrics` and the benchmark scripts evaluate.

    fd-digits   Fréchet distance in the 8x8-digit classifier's features (`digit_features`) against all real
                digits, binarised when the run's data are binarised (builtin:digits-binary). Images [C, 8, 8].
    fd-mnist    the same for 32x32 digits (`mnist_features`) against the 5,000 real mnist5k digits (binarised
                for builtin:mnist5k-binary). Images [C, 32, 32].
    fd-dna      FD (cell-type CNN; stand-in for Sei-FID)  } DNA sequences [4, L], against the test split of the
    kmer-dna    k-mer JS divergence, mean over k = 1…6    } tables the run trained on, per cell type, averaged
    motif-dna   JASPAR motif-composition KL(gen ‖ real)    } over cell types (`dna_eval`).
    fid         FID with the Inception-v3 detector (or `detector`), against reference statistics `ref`
                (an .npz path/URL), or against the statistics of the run's own dataset when ref is None.
Lower is better for all of them.

Sampling (`sample`): the EMA network in eval mode, deterministic Heun on EDM's σ grid with `num_steps`
steps, seeds seed, seed+1, …; a conditional network gets balanced classes (sample i has class i mod
label_dim, sampled as `generate.py --class` would for that seed), optionally with classifier-free guidance
weight `guidance` (`generate.py --guidance`; default 1 = plain conditional sampling). The global random
state of torch is left untouched (`torch.random.fork_rng`), so evaluating during training does not change
the training run. Sequence samples are decoded by the argmax over the four rows at every position.
With `cache` (a directory), each finished batch is also saved there and a later call with the same directory
loads it instead of sampling it again: a long evaluation that is killed resumes at its first missing batch,
and its samples are bitwise those of an uninterrupted call (the batches are the same). The directory must be
private to one (network, num_samples, seed, num_steps, batch, guidance): nothing in it is checked but shapes.

Decoded scoring (`decode=True`, what `train.py --metrics` does on discrete data): binarised images are scored
as the sign of each pixel (threshold 0, values ±1) and one-hot sequences as the one-hot of their argmax, as a
user of a discrete model would use the samples. `real_floor` scores real examples of the run's data by the
same code at a given size: the value a generator that reproduces the training data exactly would get
(image metrics: a seeded subset of the dataset against the metric's reference set, which for fd-digits and
fd-mnist is the whole real set; sequence metrics: the training split against the test split, the same number
of sequences per cell type as `sample` draws).

Cost: the first DNA evaluation of a process loads and motif-scans the reference split and loads (or, once per
machine, trains) the cell-type classifier; fd-mnist trains its classifier once per machine. Later evaluations
only sample and score the samples.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from training.metrics import SEQUENCE_METRICS

METRICS = ('fd-digits', 'fd-mnist', 'fd-dna', 'kmer-dna', 'motif-dna', 'fid')
IMAGE_SIDES = {'fd-digits': 8, 'fd-mnist': 32}
DEFAULT_BATCH = 64

_fid_references: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}   # reference statistics, built once per process


def parse_metrics(spec: str | Sequence[str] | None) -> list[str]:
    """'fd-dna,kmer-dna' (or a list) -> validated metric names without duplicates; ValueError for unknown ones."""
    if spec is None:
        return []
    names = [s.strip() for s in spec.split(',')] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f'Unknown metric {unknown[0]!r}; choose from {", ".join(METRICS)}.')
    return list(dict.fromkeys(names))


def _class_name(kwargs: Mapping[str, Any]) -> str:
    """The dataset class behind stored dataset_kwargs, looking through BinarizedDataset to its base."""
    name = str(kwargs.get('class_name', ''))
    base = kwargs.get('base')
    if name.endswith('BinarizedDataset') and base is not None:
        if isinstance(base, Mapping):
            return _class_name(base)
        from training.dataset import dataset_kwargs_from_spec
        return _class_name(dataset_kwargs_from_spec(base))
    return name


def _is_binarized(kwargs: Mapping[str, Any] | None) -> bool:
    return kwargs is not None and str(kwargs.get('class_name', '')).endswith('BinarizedDataset')


def _kind_and_shape(obj: Any) -> tuple[str, tuple[int, ...] | None]:
    """('sequence' | 'image', data shape if known) of a network or of dataset_kwargs."""
    if isinstance(obj, torch.nn.Module) or hasattr(obj, 'img_resolution'):
        from training.networks import data_shape
        shape = data_shape(obj)
        return ('sequence' if len(shape) == 2 else 'image'), shape
    if isinstance(obj, Mapping):
        name = _class_name(obj)
        if name.endswith('DNADataset'):
            return 'sequence', None
        known = {'DigitsDataset': (1, 8, 8), 'Mnist5kDataset': (1, 32, 32)}
        return 'image', next((s for k, s in known.items() if name.endswith(k)), None)
    raise ValueError(f'Cannot tell what {type(obj).__name__} generates; pass the network or its dataset_kwargs.')


def check_metric_applicable(name: str, net_or_dataset_kwargs: Any) -> None:
    """ValueError (one sentence) unless metric `name` can evaluate this network / data."""
    parse_metrics([name])
    kind, shape = _kind_and_shape(net_or_dataset_kwargs)
    what = 'DNA sequences' if kind == 'sequence' else 'images'
    shown = f' of shape {list(shape)}' if shape is not None else ''
    if name in SEQUENCE_METRICS and kind != 'sequence':
        raise ValueError(f'{name} is a DNA sequence metric, but this run generates {what}{shown}; use fd-digits, '
                         f'fd-mnist or fid.')
    if name not in SEQUENCE_METRICS and kind == 'sequence':
        raise ValueError(f'{name} is an image metric, but this run generates {what}{shown}; use fd-dna, kmer-dna '
                         f'or motif-dna.')
    side = IMAGE_SIDES.get(name)
    if side is not None and shape is not None and tuple(shape[1:]) != (side, side):
        raise ValueError(f'{name} measures {side}x{side} digit images, but this run generates {what}{shown}.')


def sample(net: torch.nn.Module, num_samples: int, seed: int = 0, device: torch.device | str = 'cpu',
           num_steps: int = 18, batch: int = DEFAULT_BATCH,
           guidance: float = 1.0, cache: str | os.PathLike | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """(float64 samples [num_samples, *data_shape(net)] on the CPU, class index per sample or None).

    guidance: classifier-free guidance weight W (`training.guidance`; 1 = plain conditional sampling).
    cache:    directory of finished batches (`batch-CLASS-START.npy`), written as they finish and read back
              instead of resampled; see the module docstring. None: nothing is written.
    """
    from dnnlib.util import atomic_write
    from training import generation
    from training.guidance import GuidedDenoiser
    from training.networks import data_shape
    if num_samples < 2:
        raise ValueError(f'Metrics need at least 2 samples, got {num_samples}.')
    seeds = np.arange(seed, seed + num_samples)
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    classes = np.arange(num_samples) % label_dim if label_dim else None
    opts = generation.SamplerOptions(num_steps=num_steps)
    out: list[torch.Tensor | None] = [None] * num_samples
    was_training = net.training
    devices = [torch.device(device)] if torch.device(device).type == 'cuda' else []
    if cache is not None:
        os.makedirs(cache, exist_ok=True)
    try:
        net.eval()
        denoiser = net if float(guidance) == 1 else GuidedDenoiser(net, guidance)
        with torch.random.fork_rng(devices=devices):
            sigma_steps = generation.resolve_sigma_steps(denoiser, opts)
            for c in (range(label_dim) if label_dim else [None]):
                index = np.arange(num_samples) if c is None else np.flatnonzero(classes == c)
                for start in range(0, len(index), batch):
                    part = index[start:start + batch]
                    path = None if cache is None else os.path.join(cache, f'batch-{c}-{start}.npy')
                    x = _load_batch(path, (len(part), *data_shape(net)))
                    if x is None:
                        x = generation.sample_batch(denoiser, seeds[part].tolist(), opts, sigma_steps, c,
                                                    device).cpu()
                        if path is not None:
                            with atomic_write(path) as f:
                                np.save(f, x.numpy(), allow_pickle=False)
                    for i, row in zip(part, x):
                        out[i] = row
    finally:
        net.train(was_training)
    return torch.stack(out), classes


def _load_batch(path: str | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """A cached float64 batch of the expected shape, or None (no cache, not written yet, or not this batch)."""
    if path is None or not os.path.isfile(path):
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None                               # unreadable: sampled again and overwritten
    if array.shape != shape or array.dtype != np.float64:
        return None
    return torch.from_numpy(array)


def is_discrete(dataset_kwargs: Mapping[str, Any] | None) -> bool:
    """Whether the run's data are discrete (binarised images or DNA), i.e. whether samples are decoded."""
    return _is_binarized(dataset_kwargs) or _class_name(dataset_kwargs or {}).endswith('DNADataset')


def decode(samples: torch.Tensor) -> torch.Tensor:
    """Samples mapped to the data's discrete values: one-hot of the argmax for sequences [N, 4, L], the sign
    (threshold 0; values -1, +1) for images [N, C, H, W]."""
    if samples.ndim == 3:
        onehot = torch.nn.functional.one_hot(samples.argmax(dim=1), samples.shape[1]).transpose(1, 2)
        return onehot.to(samples.dtype) * 2 - 1
    return torch.where(samples >= 0, torch.ones_like(samples), -torch.ones_like(samples))


def real_floor(names: Sequence[str], dataset_kwargs: Mapping[str, Any], num_samples: int, seed: int = 0,
               label_dim: int = 0, device: torch.device | str = 'cpu', batch: int = DEFAULT_BATCH) -> dict[str, float]:
    """The metrics of `num_samples` real examples (see the module docstring); name -> value.

    label_dim: classes of a conditional run (its samples are balanced over them; 0 = unconditional).
    """
    names = parse_metrics(names)
    if num_samples < 2:
        raise ValueError(f'Metrics need at least 2 samples, got {num_samples}.')
    rng = np.random.default_rng(seed)
    values: dict[str, float] = {}
    sequence_names = [n for n in names if n in SEQUENCE_METRICS]
    if sequence_names:
        from training.metrics import dna_eval
        train = dna_eval.load_dna_split(dict(dataset_kwargs), 'training')
        classes = np.arange(num_samples) % label_dim if label_dim else None
        if label_dim:
            order = list(dataset_kwargs.get('cell_types') or train.cell_types)
            wanted = [order[c] for c in classes]
            pools = {c: rng.permutation(np.flatnonzero(np.array(train.cell_types)[train.labels] == c))
                     for c in dict.fromkeys(wanted)}   # first-use order: the draws do not depend on hashing
            short = [c for c, pool in pools.items() if len(pool) < wanted.count(c)]
            if short:
                raise ValueError(f'The training split has fewer than {wanted.count(short[0])} {short[0]} sequences.')
            taken = {c: iter(pool) for c, pool in pools.items()}
            index = [next(taken[c]) for c in wanted]
        else:
            if len(train.codes) < num_samples:
                raise ValueError(f'The training split has only {len(train.codes)} sequences.')
            index = rng.permutation(len(train.codes))[:num_samples]
        report = _sequence_report(sequence_names, train.codes[np.asarray(index)], classes, dataset_kwargs)
        values.update({m: float(report.values[m]['mean']) for m in sequence_names})
    image_names = [n for n in names if n not in SEQUENCE_METRICS]
    if image_names:
        from training.dataset import open_dataset
        dataset = open_dataset(dict(dataset_kwargs, xflip=False, max_size=None))
        if len(dataset) < num_samples:
            raise ValueError(f'The dataset has only {len(dataset)} images, fewer than {num_samples}.')
        index = rng.permutation(len(dataset))[:num_samples]
        images = torch.stack([torch.as_tensor(np.asarray(dataset[int(i)][0])) for i in index])
        samples = images.to(torch.float64) / 127.5 - 1
        values.update(evaluate_samples(image_names, samples, None, dataset_kwargs, device, batch))
    return {n: float(values[n]) for n in names}


@functools.cache
def _detector(url: str, device: str, shape: tuple[int, ...]) -> Any:
    """A feature detector, loaded once per process per (url, device, image shape)."""
    from training.metrics.detector import load_detector
    return load_detector(url, device, shape)


def _fid(images_uint8: torch.Tensor, dataset_kwargs: Mapping[str, Any] | None, device: torch.device | str,
         detector: str | None, ref: str | None, batch: int) -> float:
    from training.metrics import frechet
    from training.metrics.detector import INCEPTION_URL
    url = detector or INCEPTION_URL
    det = _detector(url, str(device), tuple(images_uint8.shape[1:]))

    def reference() -> tuple[np.ndarray, np.ndarray]:
        if ref is not None:
            import io
            from dnnlib import util
            with util.open_url(ref) as f:
                return frechet.load_reference_stats(io.BytesIO(f.read()), name=ref)
        if dataset_kwargs is None:
            raise ValueError('fid needs reference statistics (ref) or the dataset_kwargs of the run.')
        from training.dataset import open_dataset
        dataset = open_dataset(dict(dataset_kwargs, xflip=False, max_size=None))
        return frechet.compute_stats(frechet.dataset_batches(dataset, batch), det, det.feature_dim, device)

    ref_key = ref if ref is not None else repr(sorted((dataset_kwargs or {}).items()))
    if (url, ref_key) not in _fid_references:
        _fid_references[url, ref_key] = reference()
    mu_ref, sigma_ref = _fid_references[url, ref_key]
    batches = (images_uint8[i:i + batch] for i in range(0, len(images_uint8), batch))
    mu, sigma = frechet.compute_stats(batches, det, det.feature_dim, device)
    return frechet.frechet_distance(mu, sigma, mu_ref, sigma_ref)


def _sequence_report(names: Sequence[str], samples: torch.Tensor | np.ndarray, classes: np.ndarray | None,
                     dataset_kwargs: Mapping[str, Any] | None) -> Any:
    from training.metrics import dna_eval
    if dataset_kwargs is None:
        raise ValueError('The DNA sequence metrics need the dataset_kwargs of the run (its DNA tables).')
    reference = dna_eval.get_reference(dict(dataset_kwargs), 'test')
    cell_types = None
    if classes is not None:
        order = list(dataset_kwargs.get('cell_types') or reference.cell_types)
        cell_types = [order[int(c)] for c in classes]
    return dna_eval.evaluate_sequences(samples, cell_types, reference, list(names))


def evaluate_metrics(names: Sequence[str], net: torch.nn.Module, dataset_kwargs: Mapping[str, Any] | None,
                     num_samples: int, seed: int = 0, device: torch.device | str = 'cpu', num_steps: int = 18,
                     batch: int = DEFAULT_BATCH, detector: str | None = None, ref: str | None = None,
                     guidance: float = 1.0, decoded: bool = False) -> dict[str, float]:
    """Several metrics of one network from one set of samples (see the module docstring); name -> value.
    decoded: score `decode(samples)` instead of the raw samples."""
    names = parse_metrics(names)
    for name in names:
        check_metric_applicable(name, net)
        if dataset_kwargs is not None:
            check_metric_applicable(name, dataset_kwargs)
    samples, classes = sample(net, num_samples, seed, device, num_steps, batch, guidance)
    if decoded:
        samples = decode(samples)
    return evaluate_samples(names, samples, classes, dataset_kwargs, device, batch, detector, ref)


def evaluate_samples(names: Sequence[str], samples: torch.Tensor, classes: np.ndarray | None,
                     dataset_kwargs: Mapping[str, Any] | None, device: torch.device | str = 'cpu',
                     batch: int = DEFAULT_BATCH, detector: str | None = None,
                     ref: str | None = None) -> dict[str, float]:
    """Metrics of given samples (float, [N, *data_shape] in [-1, 1]; class index per sample or None), e.g.
    drawn by a benchmark on its own σ grid; name -> value."""
    names = parse_metrics(names)
    values: dict[str, float] = {}
    sequence_names = [n for n in names if n in SEQUENCE_METRICS]
    if sequence_names:
        report = _sequence_report(sequence_names, samples, classes, dataset_kwargs)
        values.update({m: report.values[m]['mean'] for m in sequence_names})
    from training.generation import to_uint8
    images = to_uint8(samples) if len(sequence_names) < len(names) else None
    for name in names:
        if name in IMAGE_SIDES:   # against the real digits, binarised ones ('-binary') when the data are binarised
            from training.metrics import digit_features, mnist_features
            metric = (digit_features if name == 'fd-digits' else mnist_features).METRIC
            values[name] = metric.frechet(images, metric.references[int(_is_binarized(dataset_kwargs))])
        elif name == 'fid':
            values[name] = _fid(images, dataset_kwargs, device, detector, ref, batch)
    return {n: float(values[n]) for n in names}

