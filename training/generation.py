"""Batched image generation: per-seed random streams, σ grids (EDM, InfoGrid, ablation), rank sharding.

Reproducibility contract: every seed owns one `torch.Generator` seeded with `seed % 2**32`. A batch draws, per seed
and in this order, the latents (`data_shape(net)`: [C, H, W] for images, [4, L] for DNA), then (for conditional
networks) a class index, then one Gaussian tensor per sampler step (the sampler's `randn_like`). An image therefore
depends only on its seed, the network and the sampler options — not on the batch size, the batch composition or the
number of ranks — and matches EDM's generate.py for the same seed and device.

Sharding: seeds are split into `world_size * ceil(len / (max_batch * world_size))` consecutive batches
of near-equal size and rank r takes batches r, r + world_size, ... (EDM's scheme), so every rank runs
the same number of batches.

The caller chooses the σ grid once with `resolve_sigma_steps` and passes it to `sample_batch`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Iterator, Mapping, Sequence

import torch

import infonoise
from training import sampler as samplers
from training.networks import data_shape

ABLATION_KEYS = ('solver', 'discretization', 'schedule', 'scaling')
INFOGRID_MEASURES = ('literal', 'entropic')
# InfoGrid constructions (--infogrid-method; each is described by `infonoise.sigma_steps` and the option's help).
INFOGRID_METHODS = ('eq19', 'tempered', 'solver-aware')
DEFAULT_INFOGRID_METHOD = 'solver-aware'   # --infogrid's construction; how it compares: docs/BENCHMARKS.md §10
DEFAULT_INFOGRID_GAMMA = infonoise.infogrid.TEMPERED_GAMMA
CALIBRATION_SEED = 2_147_483_647          # latents of --infogrid-calibrate (independent of --seeds)
# InfoGrid defaults: the literal Eq. 19 measure blended 50/50 with log-uniform. Measured (docs/BENCHMARKS.md
# §5-6): the only InfoGrid variant whose step count stays flat in d on exact denoisers, and the best InfoGrid
# variant on the trained digits model at low NFE (where EDM's ρ-grid, the default grid, is better still).
DEFAULT_INFOGRID_MEASURE = 'literal'
DEFAULT_INFOGRID_FLOOR = 0.5
EDM_SIGMA_MIN = 0.002
EDM_SIGMA_MAX = 80.0
DEFAULT_STEPS = 18                      # EDM's σ steps N (Heun NFE 35)
DEFAULT_RHO = infonoise.infogrid.EDM_RHO
# σ levels above this overflow float32 when squared (c_in, c_skip and the loss weight use σ²).
MAX_SIGMA = math.sqrt(torch.finfo(torch.float32).max) / 2
MAX_SEEDS = 10_000_000                  # seeds per call: a longer list would only exhaust memory before sampling
MAX_SEED = 2 ** 63 - 1
PROFILE_HINT = ('measure one with `python -m scripts.infonoise_profile measure --network NET --data DATA '
                '--out profile.json` and pass --infogrid-profile profile.json')


class GenerationError(ValueError):
    """Sampler options that do not fit the network or each other."""


@dataclasses.dataclass
class SamplerOptions:
    """How to sample; None leaves a value to the sampler's default (EDM's convention)."""

    num_steps: int = DEFAULT_STEPS          # Number of σ steps N (NFE = 2N − 1 for Heun).
    sigma_min: float | None = None          # Lowest σ; None = 0.002 (EDM/InfoGrid) or the ablation default.
    sigma_max: float | None = None          # Highest σ; None = 80 (EDM/InfoGrid) or the ablation default.
    rho: float = DEFAULT_RHO                # Exponent of EDM's ρ-grid.
    S_churn: float = 0.0                    # Stochasticity strength (EDM's Algorithm 2).
    S_min: float = 0.0                      # Lowest σ with churn.
    S_max: float = math.inf                 # Highest σ with churn.
    S_noise: float = 1.0                    # Noise inflation for churn.
    solver: str | None = None               # 'heun' | 'euler'; None = heun.
    discretization: str | None = None       # Ablation: 'vp' | 've' | 'iddpm' | 'edm'.
    schedule: str | None = None             # Ablation: 'vp' | 've' | 'linear'.
    scaling: str | None = None              # Ablation: 'vp' | 'none'.
    infogrid: Mapping[str, Any] | None = None    # Profile (numpy arrays) for InfoGrid; None = not InfoGrid.
    infogrid_measure: str = DEFAULT_INFOGRID_MEASURE  # 'literal' (Eq. 19) | 'entropic'.
    infogrid_floor: float = DEFAULT_INFOGRID_FLOOR    # Blend weight of log-uniform in the InfoGrid density.
    infogrid_gated: bool = False            # Build InfoGrid from the gated rate instead of the raw rate.
    infogrid_method: str = DEFAULT_INFOGRID_METHOD    # 'eq19' | 'tempered' | 'solver-aware'.
    infogrid_gamma: float = DEFAULT_INFOGRID_GAMMA    # Tempering exponent γ of 'tempered' (ρ = `rho`).
    infogrid_calibrate: int = 0             # 'tempered': pick (γ, ρ) by trajectory error on this many latents.
    sigmas: Sequence[float] | None = None   # A user σ list (decreasing, ending with 0); sets num_steps.
    calibration: dict | None = None         # Filled by resolve_sigma_steps when infogrid_calibrate > 0.

    @property
    def uses_ablation(self) -> bool:
        """EDM's rule: any ablation option selects the ablation sampler (InfoGrid and --sigmas take only `solver`)."""
        return (self.infogrid is None and self.sigmas is None
                and any(getattr(self, k) is not None for k in ABLATION_KEYS))


def parse_seeds(spec: str | Sequence[int]) -> list[int]:
    """'0-3,10,12-13' -> [0, 1, 2, 3, 10, 12, 13]; a list of ints passes through. ValueError (one sentence) if
    malformed, negative, above MAX_SEED, or naming more than MAX_SEEDS seeds (counted before the list is built)."""
    if not isinstance(spec, str):
        return [int(s) for s in spec]
    seeds: list[int] = []
    for part in spec.split(','):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition('-')
        try:
            a, b = (int(lo), int(hi)) if sep else (int(part), int(part))
            if b < a:
                raise ValueError
        except ValueError:
            raise ValueError(f'cannot read {part!r} as a seed or an ascending range like 0-63') from None
        if len(seeds) + b - a + 1 > MAX_SEEDS:
            raise ValueError(f'{spec!r} names more than {MAX_SEEDS:,} seeds; split the work into several runs')
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise ValueError('no seeds given')
    if min(seeds) < 0:
        raise ValueError('seeds must be non-negative')
    if max(seeds) > MAX_SEED:
        raise ValueError(f'seeds must be at most {MAX_SEED}')
    return seeds


class SeedRandom:
    """One generator per seed; draws are stacked along the batch dimension (StackedRandomGenerator-like)."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s) % (1 << 32)) for s in seeds]

    def randn(self, size: Sequence[int], **kwargs: Any) -> torch.Tensor:
        if size[0] != len(self.generators):
            raise ValueError(f'batch dimension {size[0]} != number of seeds {len(self.generators)}')
        kwargs.setdefault('device', self.device)
        return torch.stack([torch.randn(list(size[1:]), generator=g, **kwargs) for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape, dtype=x.dtype, layout=x.layout, device=x.device)

    def randint(self, high: int, size: Sequence[int], **kwargs: Any) -> torch.Tensor:
        if size[0] != len(self.generators):
            raise ValueError(f'batch dimension {size[0]} != number of seeds {len(self.generators)}')
        kwargs.setdefault('device', self.device)
        return torch.stack([torch.randint(high, size=list(size[1:]), generator=g, **kwargs)
                            for g in self.generators])


def rank_batches(seeds: Sequence[int], max_batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's seed batches (some may be empty when there are few seeds); see the module docstring."""
    if max_batch_size < 1:
        raise ValueError('max_batch_size must be >= 1')
    n = len(seeds)
    num_batches = ((n - 1) // (max_batch_size * world_size) + 1) * world_size if n else world_size
    batches = torch.as_tensor(list(seeds), dtype=torch.int64).tensor_split(num_batches)
    return [b.tolist() for b in batches[rank::world_size]]


def load_profile_rows(path: str) -> list[dict]:
    """The profiles in a file, as JSON data: one from a profile JSON (`profile_to_json` output), one per line
    (refresh) of an `infonoise.jsonl`. ValueError with one sentence for anything else."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f'{path} is not a text file, so neither a profile JSON nor an infonoise.jsonl') from None
    try:
        rows = [json.loads(text)]
    except ValueError:
        try:
            rows = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        except ValueError:
            raise ValueError(f'{path} is neither a profile JSON file nor an infonoise.jsonl log') from None
    if not rows or not all(isinstance(r, dict) and 'rate' in r and 'edges' in r for r in rows):
        raise ValueError(f'{path} holds no InfoNoise profile (expected keys such as sigma, edges, rate)')
    return rows


def load_profile_file(path: str) -> dict:
    """A profile from a JSON file (`profile_to_json` output) or the last row of an `infonoise.jsonl`."""
    return infonoise.profile_from_json(load_profile_rows(path)[-1])


def snapshot_profile(snapshot: Mapping[str, Any], name: str = 'the snapshot') -> dict:
    """The InfoNoise profile embedded in a snapshot (key 'infonoise'); GenerationError if it has none."""
    data = snapshot.get('infonoise')
    if not data or 'rate' not in data:
        raise GenerationError(f'{name} has no InfoNoise profile for --infogrid; {PROFILE_HINT}')
    return infonoise.profile_from_json(dict(data))


def normalize_sigmas(values: Sequence[Any]) -> list[float]:
    """A user σ list checked and closed: finite, positive, at most MAX_SIGMA, strictly decreasing, then a trailing 0
    (added if absent). ValueError with one sentence otherwise."""
    try:
        sigmas = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError('the σ list must contain only numbers') from None
    if sigmas and sigmas[-1] == 0:
        sigmas = sigmas[:-1]
    if not sigmas:
        raise ValueError('the σ list needs at least one positive value')
    if not all(math.isfinite(v) and v > 0 for v in sigmas):
        raise ValueError('every σ except a final 0 must be a finite number > 0')
    if max(sigmas) > MAX_SIGMA:
        raise ValueError(f'σ level {max(sigmas):g} is too large (at most {MAX_SIGMA:.3g}, beyond which σ² overflows '
                         f'float32)')
    if any(b >= a for a, b in zip(sigmas[:-1], sigmas[1:])):
        raise ValueError('the σ list must be strictly decreasing, e.g. 80,10,1,0.1,0.002')
    return sigmas + [0.0]


def parse_sigmas(spec: str) -> list[float]:
    """--sigmas LIST|FILE: comma-separated numbers, or a file with a JSON list or one number per line
    ('#' starts a comment); returned normalised (`normalize_sigmas`). ValueError with one sentence."""
    spec = str(spec).strip()
    if os.path.isfile(spec):
        try:
            with open(spec, encoding='utf-8') as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f'cannot read {spec}: {getattr(exc, "strerror", None) or exc}') from None
        try:
            values = json.loads(text)
        except ValueError:
            values = [ln.split('#')[0].strip() for ln in text.splitlines()]
            values = [v for v in values if v]
        if not isinstance(values, list):
            raise ValueError(f'{spec} must hold a JSON list of numbers or one number per line')
        try:
            return normalize_sigmas(values)
        except ValueError as exc:
            raise ValueError(f'{spec}: {exc}') from None
    items = [v.strip() for v in spec.split(',') if v.strip()]
    try:
        values = [float(v) for v in items]
    except ValueError:
        raise ValueError(f'{spec!r} is neither a comma-separated list of numbers nor an existing file') from None
    return normalize_sigmas(values)


def validate(net: torch.nn.Module, opts: SamplerOptions, class_idx: int | None = None) -> None:
    """Raise GenerationError for options that cannot work with `net` or with each other."""
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    if class_idx is not None:
        if label_dim == 0:
            raise GenerationError(f'--class {class_idx} was given but the network is unconditional.')
        if not 0 <= class_idx < label_dim:
            raise GenerationError(f'--class {class_idx} is out of range for a network with {label_dim} classes '
                                  f'(0..{label_dim - 1}).')
    if opts.num_steps < 1:
        raise GenerationError('The number of steps must be at least 1.')
    if opts.sigmas is not None:
        flags = {'discretization': '--disc', 'schedule': '--schedule', 'scaling': '--scaling',
                 'infogrid': '--infogrid', 'sigma_min': '--sigma_min', 'sigma_max': '--sigma_max'}
        extra = [flag for key, flag in flags.items() if getattr(opts, key) is not None]
        if extra:
            raise GenerationError(f'--sigmas gives the σ grid itself and cannot be combined with {", ".join(extra)}.')
        try:
            sigmas = normalize_sigmas(opts.sigmas)
        except ValueError as exc:
            raise GenerationError(f'Bad σ list: {exc}.') from None
        if len(sigmas) - 1 != opts.num_steps:
            raise GenerationError(f'--steps {opts.num_steps} disagrees with the {len(sigmas) - 1} levels of the σ '
                                  'list (--sigmas); omit --steps (the list defines the steps).')
        lo, hi = float(getattr(net, 'sigma_min', 0.0)), float(getattr(net, 'sigma_max', math.inf))
        if sigmas[0] > hi or sigmas[-2] < lo:
            raise GenerationError(f'The σ list [{sigmas[-2]:g} .. {sigmas[0]:g}] leaves the network\'s range '
                                  f'[{lo:g}, {hi:g}].')
        return
    if opts.infogrid is not None:
        flags = {'discretization': '--disc', 'schedule': '--schedule', 'scaling': '--scaling'}
        extra = [flag for key, flag in flags.items() if getattr(opts, key) is not None]
        if extra:
            raise GenerationError(f'InfoGrid sets the σ grid itself and cannot be combined with {", ".join(extra)}.')
        # The measure, floor, method and γ are checked where the grid is built (`infonoise.sigma_steps`).
        if opts.infogrid_calibrate and opts.infogrid_method != 'tempered':
            raise GenerationError('InfoGrid calibration tunes the tempered construction (--infogrid-method tempered).')
        if opts.infogrid_method != 'eq19' and opts.num_steps < 2:
            raise GenerationError(f'The {opts.infogrid_method} InfoGrid needs at least 2 steps.')
    lo, hi = _sigma_range(net, opts)
    if opts.sigma_min is not None and opts.sigma_max is not None and not opts.sigma_min < opts.sigma_max:
        raise GenerationError(f'sigma_min ({opts.sigma_min}) must be below sigma_max ({opts.sigma_max}).')
    if not opts.uses_ablation and not lo < hi:
        raise GenerationError(f'The σ range [{lo}, {hi}] is empty after clamping to the network\'s range.')


def _sigma_range(net: torch.nn.Module, opts: SamplerOptions) -> tuple[float, float]:
    """[σ_min, σ_max] of the EDM/InfoGrid grid: the requested (or EDM default) range clamped to the net's."""
    lo = EDM_SIGMA_MIN if opts.sigma_min is None else float(opts.sigma_min)
    hi = EDM_SIGMA_MAX if opts.sigma_max is None else float(opts.sigma_max)
    return max(lo, float(getattr(net, 'sigma_min', 0.0))), min(hi, float(getattr(net, 'sigma_max', math.inf)))


def resolve_sigma_steps(net: torch.nn.Module, opts: SamplerOptions) -> torch.Tensor | None:
    """The σ grid (float64, N decreasing values then 0) for EDM, InfoGrid or a user list; None for the
    ablation sampler.

    EDM and InfoGrid grids are rounded with `net.round_sigma`, as EDM's sampler rounds its grid; a user
    list (`opts.sigmas`) is used as given. With `opts.infogrid_calibrate` > 0 the tempered InfoGrid's
    (γ, ρ) are calibrated first on that many latents (training.grid_calibration; seconds) and the result
    is stored in `opts.calibration`.
    """
    if opts.uses_ablation:
        return None
    if opts.sigmas is not None:
        return torch.tensor(normalize_sigmas(opts.sigmas), dtype=torch.float64)
    lo, hi = _sigma_range(net, opts)
    if opts.infogrid is not None and opts.infogrid_method == 'tempered' and opts.infogrid_calibrate:
        result = _calibrate(net, opts, lo, hi)
        opts.calibration = result.summary()
        return result.sigma_steps
    return infonoise.sigma_steps('edm' if opts.infogrid is None else opts.infogrid_method, opts.num_steps, lo, hi,
                                 opts.infogrid, rho=opts.rho, gamma=opts.infogrid_gamma, measure=opts.infogrid_measure,
                                 floor=opts.infogrid_floor, gated=opts.infogrid_gated, solver=opts.solver or 'heun',
                                 round_sigma=getattr(net, 'round_sigma', None))


def _calibrate(net: torch.nn.Module, opts: SamplerOptions, lo: float, hi: float):
    """Calibrate the tempered InfoGrid on opts.infogrid_calibrate latents drawn from CALIBRATION_SEED."""
    from training.grid_calibration import calibrate_tempered_grid
    params = list(net.parameters()) if hasattr(net, 'parameters') else []
    device = params[0].device if params else torch.device('cpu')
    gen = torch.Generator().manual_seed(CALIBRATION_SEED)
    n = int(opts.infogrid_calibrate)
    latents = torch.randn([n, *data_shape(net)], generator=gen).to(device)
    labels = None
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    if label_dim:
        labels = torch.eye(label_dim)[torch.randint(label_dim, (n,), generator=gen)].to(device)
    return calibrate_tempered_grid(net, opts.infogrid, opts.num_steps, latents, labels, lo, hi,
                                   solver=opts.solver or 'heun', measure=opts.infogrid_measure,
                                   gated=opts.infogrid_gated)


def grid_record(opts: SamplerOptions, sigma_steps: torch.Tensor | None) -> dict:
    """What the σ grid is and how it was built (JSON-ready; generate.py --grid-out / --verbose)."""
    record: dict[str, Any] = dict(num_steps=opts.num_steps)
    if opts.sigmas is not None:
        record['grid'] = 'user'
    elif opts.infogrid is not None:
        record.update(grid='infogrid', method=opts.infogrid_method, measure=opts.infogrid_measure,
                      gated=opts.infogrid_gated)
        if opts.infogrid_method == 'eq19':
            record['floor'] = opts.infogrid_floor
        elif opts.infogrid_method == 'tempered':
            if opts.calibration is not None:
                record.update(gamma=opts.calibration['gamma'], rho=opts.calibration['rho'],
                              calibration={k: v for k, v in opts.calibration.items() if k != 'sigma_steps'})
            else:
                record.update(gamma=opts.infogrid_gamma, rho=opts.rho)
        else:
            record['solver'] = opts.solver or 'heun'
    elif opts.uses_ablation:
        record['grid'] = 'ablation'
        record.update({k: getattr(opts, k) for k in ABLATION_KEYS if getattr(opts, k) is not None})
    else:
        record.update(grid='edm', rho=opts.rho)
    if sigma_steps is not None:
        record['sigma_steps'] = [float(s) for s in torch.as_tensor(sigma_steps).tolist()]
    return record


def sample_batch(net: torch.nn.Module, seeds: Sequence[int], opts: SamplerOptions,
                 sigma_steps: torch.Tensor | None, class_idx: int | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Float64 samples [len(seeds), *data_shape(net)] in the network's range (about [−1, 1]); see module docstring."""
    return sample_batch_labeled(net, seeds, opts, sigma_steps, class_idx, device)[0]


def sample_batch_labeled(net: torch.nn.Module, seeds: Sequence[int], opts: SamplerOptions,
                         sigma_steps: torch.Tensor | None, class_idx: int | None = None,
                         device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`sample_batch`'s samples plus the class index of each seed (int64 [len(seeds)]; None if unconditional)."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    rnd = SeedRandom(seeds, device)
    n = len(seeds)
    latents = rnd.randn([n, *data_shape(net)], device=device)
    class_labels = classes = None
    label_dim = int(getattr(net, 'label_dim', 0) or 0)
    if label_dim:
        classes = rnd.randint(label_dim, size=[n], device=device)
        if class_idx is not None:
            classes[:] = class_idx
        class_labels = torch.eye(label_dim, device=device)[classes]
    churn = dict(S_churn=opts.S_churn, S_min=opts.S_min, S_max=opts.S_max, S_noise=opts.S_noise)
    with torch.no_grad():
        if opts.uses_ablation:
            kwargs = {k: getattr(opts, k) for k in ('sigma_min', 'sigma_max', *ABLATION_KEYS)
                      if getattr(opts, k) is not None}
            samples = samplers.ablation_sampler(net, latents, class_labels, randn_like=rnd.randn_like,
                                                num_steps=opts.num_steps, rho=opts.rho, **kwargs, **churn)
        else:
            samples = samplers.heun_sampler(net, latents, sigma_steps.to(device), class_labels,
                                            randn_like=rnd.randn_like, solver=opts.solver or 'heun', **churn)
    return samples, classes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Network-range images to uint8 [N, C, H, W] as EDM saves them: x·127.5 + 128, clipped, truncated."""
    return (images * 127.5 + 128).clip(0, 255).to(torch.uint8)


def class_names(snapshot: Mapping[str, Any]) -> list[str] | None:
    """The class names a snapshot records (a DNA dataset's `cell_types` in its dataset_kwargs), else None."""
    kwargs = snapshot.get('dataset_kwargs')
    names = kwargs.get('cell_types') if isinstance(kwargs, Mapping) else None
    return [str(n) for n in names] if names else None


def resolve_class(value: str | int | None, names: Sequence[str] | None = None) -> int | None:
    """A --class value -> class index: an integer, or (when the snapshot names its classes) a class name or
    its prefix before '_' ('K562' for 'K562_ENCLB843GMH'). GenerationError for an unknown or ambiguous name."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if not names:
        raise GenerationError(f'--class {text!r} is not an index, and the snapshot names no classes; give the '
                              f'class index.')
    hits = [i for i, n in enumerate(names) if n == text] or [i for i, n in enumerate(names)
                                                              if n.split('_')[0] == text]
    if len(hits) != 1:
        what = 'matches several classes' if hits else 'is not a class of this network'
        raise GenerationError(f'--class {text!r} {what}; the classes are {", ".join(names)}.')
    return hits[0]


def iterate_samples(net: torch.nn.Module, seeds: Sequence[int], opts: SamplerOptions, max_batch_size: int,
                    rank: int = 0, world_size: int = 1, class_idx: int | None = None,
                    device: torch.device | str | None = None, sigma_steps: torch.Tensor | None = None,
                    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
    """Yield (seeds, float64 samples [n, *data_shape(net)] in network range, class indices [n] or None)
    for each non-empty batch of this rank (`to_uint8` makes images of them; DNA output decodes them)."""
    validate(net, opts, class_idx)
    if sigma_steps is None:
        sigma_steps = resolve_sigma_steps(net, opts)
    for batch in rank_batches(seeds, max_batch_size, rank, world_size):
        if not batch:
            continue
        yield batch, *sample_batch_labeled(net, batch, opts, sigma_steps, class_idx, device)


def image_path(outdir: str, seed: int, subdirs: bool = False) -> str:
    """EDM's layout: OUTDIR/000123.png, or OUTDIR/000000/000123.png with subdirs (1000 seeds per folder)."""
    folder = os.path.join(outdir, f'{seed - seed % 1000:06d}') if subdirs else outdir
    return os.path.join(folder, f'{seed:06d}.png')
