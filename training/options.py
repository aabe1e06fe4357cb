"""Training configuration in one place: defaults + preset + explicit options -> plain data.

Three layers, later ones winning:
  1. `DEFAULTS`: EDM's train.py defaults plus this project's options (σ-sampler, speed flags);
  2. a preset, `configs/NAME.json` (see `load_preset` for the format);
  3. the options the user gave explicitly on the command line.
`resolve_options` merges them, `validate_options` checks them, and `build_config` turns the
result plus facts about the dataset into the plain-data dict that
`training.training_loop.training_loop(**config)` takes. Nothing here constructs objects or
touches the file system except reading presets; every error is an `OptionsError` whose
message is one sentence fit to show to a user.
"""
from __future__ import annotations

import copy
import json
import os
import re
from typing import Any, Mapping

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')

# Option name -> default. Names are the click parameter names (dashes become underscores).
DEFAULTS: dict[str, Any] = dict(
    # EDM's options and defaults.
    data=None,            # dataset spec: path to a folder/zip, 'builtin:digits', 'dna:PATH', ...
    cond=False,           # class-conditional training (needs labels)
    arch='ddpmpp',        # ddpmpp | ncsnpp | adm
    precond='edm',        # vp | ve | edm
    duration=200.0,       # training length in Mimg
    kimg=None,            # training length in kimg (alternative to duration)
    batch=512,            # total batch size over all ranks
    batch_gpu=None,       # per-rank batch per accumulation round (None: batch / ranks)
    cbase=None,           # model_channels override
    cres=None,            # channel_mult override (list of ints)
    lr=10e-4,             # Adam learning rate
    ema=0.5,              # EMA half-life in Mimg
    dropout=0.13,
    augment=0.12,         # augmentation probability (0 disables the pipe)
    xflip=False,          # dataset x-flips
    fp16=False,           # EDM's use_fp16 network flag
    ls=1.0,               # loss scaling
    bench=True,           # cudnn.benchmark
    cache=True,           # cache the dataset in memory
    workers=1,            # data-loader worker processes per rank
    desc=None,            # run-directory suffix
    nosubdir=False,
    tick=50.0,            # kimg per tick
    snap=50,              # ticks per network snapshot
    dump=500,             # ticks per training-state dump
    seed=None,
    transfer=None,        # network snapshot to initialise from
    resume=None,          # training-state file or run directory
    # Learning-rate and EMA ramp-ups (EDM's training-loop defaults).
    lr_rampup=10000.0,    # kimg
    ema_rampup=0.05,      # EMA half-life ramp-up ratio (0: none)
    # Loss / σ distribution.
    sigma_dist='auto',    # auto (the loss's reference distribution) | lognormal | loguniform | infonoise
    weighting='auto',     # auto (the precond's own) | edm | vp | ve | unit
    p_mean=-1.2,          # log-normal σ distribution (EDM's P_mean / P_std)
    p_std=1.2,
    sigma_min=0.002,      # InfoNoise grid and log-uniform range
    sigma_max=80.0,
    infonoise_base='auto',  # auto (lognormal for continuous, loguniform for discrete data) | lognormal | loguniform
    infonoise_warmup=2000,
    infonoise_refresh=200,
    infonoise_bins=64,
    infonoise_buffer=512,
    infonoise_ema=0.1,
    infonoise_min_count=32,
    infonoise_floor=0.05,
    infonoise_endpoint='auto',  # auto (the dataset's) | continuous | discrete
    infonoise_gate_n=3.0,
    infonoise_onset_p=2e-3,
    infonoise_smooth=0,
    # Devices and speed.
    device='auto',        # auto | cpu | cuda
    bf16=False,           # bfloat16 autocast around the forward pass
    compile=False,        # torch.compile the network
    channels_last=False,
    sdpa=False,           # scaled-dot-product attention kernels
    deterministic=False,  # torch deterministic algorithms (bitwise-reproducible runs)
    threads=0,            # CPU intra-op threads per process (0: torch's default)
    # End-of-run extras.
    grid=0,               # images in the final sample grid (0: none)
    grid_steps=18,        # Heun steps for the sample grid
    plot=True,            # plot the InfoNoise profile at the end (needs matplotlib)
)

# Options that describe where/how a run executes, not what it trains; a preset may not set them.
RUN_ONLY = ('outdir', 'resume', 'transfer', 'dry_run', 'nosubdir', 'desc', 'preset')

PRESET_KEYS = ('description', 'options', 'network_kwargs')

ARCH_KWARGS = {
    'ddpmpp': dict(model_type='SongUNet', embedding_type='positional', encoder_type='standard',
                   decoder_type='standard', channel_mult_noise=1, resample_filter=[1, 1],
                   model_channels=128, channel_mult=[2, 2, 2]),
    'ncsnpp': dict(model_type='SongUNet', embedding_type='fourier', encoder_type='residual',
                   decoder_type='standard', channel_mult_noise=2, resample_filter=[1, 3, 3, 1],
                   model_channels=128, channel_mult=[2, 2, 2]),
    'adm': dict(model_type='DhariwalUNet', model_channels=192, channel_mult=[1, 2, 3, 4]),
}

PRECOND_CLASSES = {
    'vp': ('training.networks.VPPrecond', 'training.loss.VPLoss'),
    've': ('training.networks.VEPrecond', 'training.loss.VELoss'),
    'edm': ('training.networks.EDMPrecond', 'training.loss.EDMLoss'),
}

SAMPLER_CLASSES = {
    'lognormal': 'infonoise.LogNormalSampler',
    'loguniform': 'infonoise.LogUniformSampler',
    'infonoise': 'infonoise.InfoNoiseSampler',
}

CHOICES = dict(
    arch=tuple(ARCH_KWARGS), precond=tuple(PRECOND_CLASSES),
    sigma_dist=('auto', 'lognormal', 'loguniform', 'infonoise'),
    weighting=('auto', 'edm', 'vp', 've', 'unit'),
    infonoise_base=('auto', 'lognormal', 'loguniform'),
    infonoise_endpoint=('auto', 'continuous', 'discrete'),
    device=('auto', 'cpu', 'cuda'),
)


class OptionsError(ValueError):
    """A bad option, preset or combination; the message is one sentence for the user."""


def flag(name: str) -> str:
    """Option name as typed on the command line: 'batch_gpu' -> '--batch-gpu'."""
    return '--' + name.replace('_', '-')


# ----------------------------------------------------------------------------------------------
# Presets.

def list_presets(preset_dir: str = PRESET_DIR) -> list[str]:
    """Names of the presets in `preset_dir` (file names without .json), sorted."""
    if not os.path.isdir(preset_dir):
        return []
    return sorted(f[:-5] for f in os.listdir(preset_dir) if f.endswith('.json'))


def load_preset(name: str, preset_dir: str = PRESET_DIR) -> dict:
    """Read and check configs/NAME.json (or, when `name` is a path to a .json file, that file).

    Format: {"description": str, "options": {option: value, ...}, "network_kwargs": {...}}.
    `options` uses the keys of `DEFAULTS`; `network_kwargs` (optional) are extra constructor
    kwargs for the network (e.g. num_blocks, attn_resolutions) applied after the arch's.
    Returns {"options": dict, "network_kwargs": dict, "description": str}.
    """
    if name.endswith('.json') or os.sep in name or '/' in name:
        path = name  # a preset file outside configs/
    elif re.fullmatch(r'[A-Za-z0-9_.-]+', name):
        path = os.path.join(preset_dir, name + '.json')
    else:
        path = ''
    if not os.path.isfile(path):
        raise OptionsError(f'Unknown preset {name!r}; available: {", ".join(list_presets(preset_dir))}.')
    try:
        with open(path, 'rt', encoding='utf-8') as f:
            raw = json.load(f)
    except (OSError, ValueError) as err:
        raise OptionsError(f'Preset {name!r} ({path}) is not readable JSON: {err}.') from None
    if not isinstance(raw, dict):
        raise OptionsError(f'Preset {name!r} must be a JSON object.')
    unknown = sorted(set(raw) - set(PRESET_KEYS))
    if unknown:
        raise OptionsError(f'Preset {name!r} has unknown top-level key(s): {", ".join(unknown)}.')
    options = raw.get('options', {})
    network_kwargs = raw.get('network_kwargs', {})
    if not isinstance(options, dict) or not isinstance(network_kwargs, dict):
        raise OptionsError(f'Preset {name!r}: "options" and "network_kwargs" must be JSON objects.')
    bad = sorted(k for k in options if k not in DEFAULTS or k in RUN_ONLY)
    if bad:
        raise OptionsError(f'Preset {name!r} sets unknown or run-only option(s): {", ".join(bad)}.')
    for key, value in options.items():
        if not _type_ok(key, value):
            raise OptionsError(f'Preset {name!r}: option {key!r} has the wrong type ({value!r}).')
    return dict(description=str(raw.get('description', '')), options=dict(options),
                network_kwargs=dict(network_kwargs))


# Types of the options whose default is None (the others take their default's type).
_NONE_DEFAULT_TYPES = dict(data=str, kimg=float, batch_gpu=int, cbase=int, cres=list, desc=str, seed=int,
                           transfer=str, resume=str)


def _type_ok(name: str, value: Any) -> bool:
    """Whether a preset value has the option's type (ints pass for floats; None for None defaults)."""
    default = DEFAULTS[name]
    expected = _NONE_DEFAULT_TYPES.get(name) if default is None else type(default)
    if value is None:
        return default is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is list:
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, expected)


# ----------------------------------------------------------------------------------------------
# Merging and validation.

def resolve_options(given: Mapping[str, Any], preset: Mapping[str, Any] | None = None,
                    base: Mapping[str, Any] | None = None) -> dict:
    """Merge the layers into one options dict.

    given:  options the user typed explicitly (name -> value); they win over everything.
    preset: a `load_preset` result (its options override `base`; its network_kwargs are kept
            under the key 'network_kwargs').
    base:   the starting options (default `DEFAULTS`; a resumed run passes its saved options).
    Raises OptionsError for explicitly conflicting options.
    """
    opts = copy.deepcopy(dict(DEFAULTS if base is None else base))
    opts.setdefault('network_kwargs', {})
    if preset is not None:
        opts.update(copy.deepcopy(preset['options']))
        opts['network_kwargs'] = copy.deepcopy(preset.get('network_kwargs', {}))
    if 'duration' in given and given.get('kimg') is not None:
        raise OptionsError('--duration and --kimg both set the training length; give only one.')
    if 'duration' in given:
        opts['kimg'] = None
    opts.update(copy.deepcopy(dict(given)))
    return opts


def _check_range(opts: Mapping[str, Any], name: str, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    value = opts.get(name)
    if value is None:
        return
    ok = True
    if lo is not None:
        ok = ok and (value > lo if lo_open else value >= lo)
    if hi is not None:
        ok = ok and (value < hi if hi_open else value <= hi)
    if not ok:
        left = '(' if lo_open else '['
        right = ')' if hi_open else ']'
        lo_s = '-inf' if lo is None else f'{lo:g}'
        hi_s = 'inf' if hi is None else f'{hi:g}'
        raise OptionsError(f'{flag(name)}={value} is outside the valid range {left}{lo_s}, {hi_s}{right}.')


def batch_per_rank(batch: int, batch_gpu: int | None, world_size: int) -> tuple[int, int]:
    """(batch_gpu, accumulation rounds) for a total batch over `world_size` ranks.

    Raises OptionsError unless batch = world_size x batch_gpu x rounds exactly.
    """
    if batch % world_size != 0:
        raise OptionsError(f'--batch={batch} is not divisible by the number of ranks ({world_size}).')
    per_rank = batch // world_size
    if batch_gpu is None or batch_gpu > per_rank:
        batch_gpu = per_rank
    if per_rank % batch_gpu != 0:
        raise OptionsError(f'--batch={batch} is not divisible by ranks x --batch-gpu '
                           f'({world_size} x {batch_gpu}).')
    return batch_gpu, per_rank // batch_gpu


def validate_options(opts: Mapping[str, Any], world_size: int = 1) -> None:
    """Check value ranges and combinations; raise OptionsError with one sentence."""
    for name, choices in CHOICES.items():
        if opts.get(name) not in choices:
            raise OptionsError(f'{flag(name)}={opts.get(name)!r} is not one of: {", ".join(choices)}.')
    if opts.get('fp16') and opts.get('bf16'):
        raise OptionsError('--fp16 and --bf16 are alternatives; choose one.')
    if not opts.get('data'):
        raise OptionsError('Missing option --data (and the preset gives no dataset).')
    _check_range(opts, 'duration', 0, lo_open=True)
    _check_range(opts, 'kimg', 0, lo_open=True)
    _check_range(opts, 'batch', 1)
    _check_range(opts, 'batch_gpu', 1)
    _check_range(opts, 'cbase', 1)
    _check_range(opts, 'lr', 0, lo_open=True)
    _check_range(opts, 'ema', 0)
    _check_range(opts, 'dropout', 0, 1)
    _check_range(opts, 'augment', 0, 1)
    _check_range(opts, 'ls', 0, lo_open=True)
    _check_range(opts, 'workers', 0)
    _check_range(opts, 'threads', 0)
    _check_range(opts, 'tick', 0, lo_open=True)
    _check_range(opts, 'snap', 1)
    _check_range(opts, 'dump', 1)
    _check_range(opts, 'lr_rampup', 0)
    _check_range(opts, 'ema_rampup', 0)
    _check_range(opts, 'p_std', 0, lo_open=True)
    _check_range(opts, 'sigma_min', 0, lo_open=True)
    _check_range(opts, 'infonoise_warmup', 0)
    _check_range(opts, 'infonoise_refresh', 1)
    _check_range(opts, 'infonoise_bins', 2)
    _check_range(opts, 'infonoise_buffer', 1)
    _check_range(opts, 'infonoise_ema', 0, 1, lo_open=True)
    _check_range(opts, 'infonoise_min_count', 0)
    _check_range(opts, 'infonoise_floor', 0, 1, hi_open=True)
    _check_range(opts, 'infonoise_gate_n', 0, lo_open=True)
    _check_range(opts, 'infonoise_onset_p', 0, 1, lo_open=True, hi_open=True)
    _check_range(opts, 'infonoise_smooth', 0)
    _check_range(opts, 'grid', 0)
    _check_range(opts, 'grid_steps', 1)
    if opts['sigma_max'] <= opts['sigma_min']:
        raise OptionsError(f'--sigma-max={opts["sigma_max"]} must be larger than --sigma-min={opts["sigma_min"]}.')
    if opts['infonoise_min_count'] > opts['infonoise_buffer']:
        raise OptionsError(f'--infonoise-min-count={opts["infonoise_min_count"]} can never be reached with '
                           f'--infonoise-buffer={opts["infonoise_buffer"]}.')
    cres = opts.get('cres')
    if cres is not None and (not isinstance(cres, (list, tuple)) or not cres
                             or any(not isinstance(c, int) or c < 1 for c in cres)):
        raise OptionsError(f'--cres={cres!r} must be a non-empty list of positive integers.')
    batch_per_rank(int(opts['batch']), opts.get('batch_gpu'), world_size)


def total_kimg(opts: Mapping[str, Any]) -> float:
    """Training length in kimg (--kimg wins over --duration, which is in Mimg)."""
    if opts.get('kimg') is not None:
        return float(opts['kimg'])
    return float(opts['duration']) * 1000.0


# ----------------------------------------------------------------------------------------------
# Options -> plain-data kwargs.

def resolve_endpoint(opts: Mapping[str, Any], dataset_endpoint: str | None) -> str:
    """--infonoise-endpoint, with 'auto' taken from the dataset (continuous if it declares none)."""
    if opts['infonoise_endpoint'] != 'auto':
        return opts['infonoise_endpoint']
    return dataset_endpoint if dataset_endpoint in ('continuous', 'discrete') else 'continuous'


def resolve_weighting(opts: Mapping[str, Any]) -> str:
    """--weighting, with 'auto' meaning the preconditioning's own loss weight."""
    return opts['precond'] if opts['weighting'] == 'auto' else opts['weighting']


def sigma_sampler_kwargs(opts: Mapping[str, Any], endpoint: str, sigma_data: float = 0.5) -> dict | None:
    """Plain-data description of the training σ distribution (None: the loss's own default).

    Layout: {'class_name': ..., <constructor kwargs>}; for InfoNoise the nested 'grid' and 'base'
    entries describe the SigmaGrid and the warm-up sampler, and 'weighting' / 'sigma_data' name
    the loss weight w(σ) the table divides by.
    """
    dist = opts['sigma_dist']
    lognormal = dict(class_name=SAMPLER_CLASSES['lognormal'], P_mean=float(opts['p_mean']),
                     P_std=float(opts['p_std']))
    loguniform = dict(class_name=SAMPLER_CLASSES['loguniform'], sigma_min=float(opts['sigma_min']),
                      sigma_max=float(opts['sigma_max']))
    if dist == 'auto':
        return None
    if dist == 'lognormal':
        return lognormal
    if dist == 'loguniform':
        return loguniform
    base = opts['infonoise_base']
    if base == 'auto':
        base = 'loguniform' if endpoint == 'discrete' else 'lognormal'
    return dict(
        class_name=SAMPLER_CLASSES['infonoise'],
        grid=dict(sigma_min=float(opts['sigma_min']), sigma_max=float(opts['sigma_max']),
                  num_bins=int(opts['infonoise_bins'])),
        base=lognormal if base == 'lognormal' else loguniform,
        weighting=resolve_weighting(opts), sigma_data=float(sigma_data),
        warmup_steps=int(opts['infonoise_warmup']), refresh_every=int(opts['infonoise_refresh']),
        buffer_size=int(opts['infonoise_buffer']), ema=float(opts['infonoise_ema']),
        min_count=int(opts['infonoise_min_count']), gate_n=float(opts['infonoise_gate_n']),
        endpoint=endpoint, onset_p=float(opts['infonoise_onset_p']),
        floor=float(opts['infonoise_floor']), smooth=opts['infonoise_smooth'],
    )


def dataset_kwargs(opts: Mapping[str, Any]) -> dict:
    """Plain-data kwargs for `training.dataset.open_dataset` (before the dataset is opened)."""
    return dict(spec=str(opts['data']), use_labels=bool(opts['cond']), xflip=bool(opts['xflip']),
                cache=bool(opts['cache']))


def run_description(opts: Mapping[str, Any], dataset_name: str, world_size: int) -> str:
    """EDM-style run-directory description (plus the σ distribution)."""
    cond = 'cond' if opts['cond'] else 'uncond'
    dtype = 'fp16' if opts['fp16'] else ('bf16' if opts['bf16'] else 'fp32')
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset_name or 'data').strip('_') or 'data'
    desc = (f'{name}-{cond}-{opts["arch"]}-{opts["precond"]}-{opts["sigma_dist"]}-gpus{world_size}'
            f'-batch{opts["batch"]}-{dtype}')
    if opts.get('desc'):
        desc += f'-{opts["desc"]}'
    return desc


def build_config(opts: Mapping[str, Any], dataset: Mapping[str, Any], world_size: int = 1) -> dict:
    """Turn resolved, validated options into `training_loop` kwargs (plain data only).

    dataset: facts about the opened dataset: name, resolution, num_channels, label_dim,
             has_labels, endpoint, size (number of items), dataset_kwargs (its own class_name +
             constructor kwargs, what the loop reopens and snapshots store).
    """
    validate_options(opts, world_size)
    if opts['cond'] and not dataset.get('has_labels'):
        raise OptionsError(f'--cond requires labels, but the dataset {opts["data"]!r} has none '
                           f'(add a dataset.json with labels).')
    batch_gpu, rounds = batch_per_rank(int(opts['batch']), opts.get('batch_gpu'), world_size)
    endpoint = resolve_endpoint(opts, dataset.get('endpoint'))
    weighting = resolve_weighting(opts)
    net_class, loss_class = PRECOND_CLASSES[opts['precond']]

    network_kwargs: dict[str, Any] = dict(class_name=net_class)
    network_kwargs.update(copy.deepcopy(ARCH_KWARGS[opts['arch']]))
    if opts.get('cbase') is not None:
        network_kwargs['model_channels'] = int(opts['cbase'])
    if opts.get('cres') is not None:
        network_kwargs['channel_mult'] = [int(c) for c in opts['cres']]
    network_kwargs.update(copy.deepcopy(opts.get('network_kwargs') or {}))
    augment_kwargs = None
    if opts['augment']:
        from training.augment import edm_augment_kwargs
        augment_kwargs = dict(class_name='training.augment.AugmentPipe', **edm_augment_kwargs(float(opts['augment'])))
        network_kwargs['augment_dim'] = 9
    network_kwargs.update(dropout=float(opts['dropout']), use_fp16=bool(opts['fp16']))

    loss_kwargs: dict[str, Any] = dict(class_name=loss_class)
    if opts['precond'] == 'edm':
        loss_kwargs.update(P_mean=float(opts['p_mean']), P_std=float(opts['p_std']))
    if opts['weighting'] != 'auto':
        loss_kwargs['weighting'] = weighting
    sigma_data = float(network_kwargs.get('sigma_data', 0.5))

    if dataset.get('dataset_kwargs'):
        ds_kwargs = copy.deepcopy(dict(dataset['dataset_kwargs']))
    else:
        ds_kwargs = dataset_kwargs(opts)
    ema_rampup = None if opts.get('transfer') is not None or not opts['ema_rampup'] else float(opts['ema_rampup'])
    return dict(
        dataset_kwargs=ds_kwargs,
        data_loader_kwargs=dict(num_workers=int(opts['workers'])),
        network_kwargs=network_kwargs,
        loss_kwargs=loss_kwargs,
        sigma_sampler_kwargs=sigma_sampler_kwargs(opts, endpoint, sigma_data),
        optimizer_kwargs=dict(class_name='torch.optim.Adam', lr=float(opts['lr']), betas=[0.9, 0.999], eps=1e-8),
        augment_kwargs=augment_kwargs,
        seed=int(opts['seed']) if opts.get('seed') is not None else 0,
        batch_size=int(opts['batch']),
        batch_gpu=batch_gpu,
        accumulation_rounds=rounds,
        total_kimg=total_kimg(opts),
        ema_halflife_kimg=float(opts['ema']) * 1000.0,
        ema_rampup_ratio=ema_rampup,
        lr_rampup_kimg=float(opts['lr_rampup']),
        loss_scaling=float(opts['ls']),
        kimg_per_tick=float(opts['tick']),
        snapshot_ticks=int(opts['snap']),
        state_dump_ticks=int(opts['dump']),
        cudnn_benchmark=bool(opts['bench']),
        fast_paths=dict(bf16=bool(opts['bf16']), compile=bool(opts['compile']),
                        channels_last=bool(opts['channels_last']), sdpa=bool(opts['sdpa'])),
        deterministic=bool(opts['deterministic']),
        grid_size=int(opts['grid']),
        grid_steps=int(opts['grid_steps']),
        plot_profile=bool(opts['plot']),
    )


def jsonable(obj: Any) -> Any:
    """Deep copy of `obj` with tuples turned into lists (what JSON round-trips to)."""
    return json.loads(json.dumps(obj))

