"""Training configuration in one place: defaults + preset + explicit options -> plain data.

Three layers, later ones winning:
  1. `DEFAULTS`: EDM's train.py defaults plus this project's options (σ-sampler, speed flags);
  2. a preset, `configs/NAME.json` (see `load_preset` for the format);
  3. the options the user gave explicitly on the command line.
`resolve_options` merges them, `validate_options` checks their combinations (each value was checked by click where
it entered: train.py converts flags, presets and resumed options alike), and `build_config` turns the result plus
facts about the dataset into the plain-data dict that `training.training_loop.training_loop(**config)` takes.
Nothing here constructs objects or touches the file system except reading presets; every error is an
`OptionsError` whose message is one sentence fit to show to a user.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import os
import re
from typing import Any, Mapping

import infonoise
from infonoise.adaptive import check_min_count

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')

@dataclasses.dataclass(frozen=True)
class Option:
    """One train.py option, declared once: the CLI, presets, validation and resume checks derive from it."""
    name: str                     # Python name; the flag is '--' + name with dashes ('batch_gpu' -> --batch-gpu).
    default: Any                  # Default value (None: unset / derived later).
    help: str                     # One-line help text (click shows the default after it).
    type: type = str              # bool | int | float | str | list (a comma-separated list of ints).
    kind: str = 'recipe'          # recipe: what is trained (a resumed run must match); length: training length;
                                  # execution: how/where it runs (may change on resume); run: per invocation,
                                  # never stored in a preset (outdir, resume, ...).
    lo: float | None = None       # Lower bound of the valid range (None: unbounded).
    hi: float | None = None       # Upper bound (None: unbounded).
    lo_open: bool = False         # Whether the lower bound itself is excluded.
    hi_open: bool = False         # Whether the upper bound itself is excluded.
    choices: tuple | None = None  # Allowed values (a click.Choice).
    metavar: str | None = None    # Placeholder shown in --help (None: FLOAT, INT or BOOL after `type`).
    is_flag: bool = False         # A boolean given by presence (--bf16) instead of a value (--cond=True).
    required: bool = False        # The CLI requires it.
    short: str | None = None      # Optional one-letter alias ('-n').
    config: str | None = None     # The `training_loop` kwarg it sets as is (converted by `type`); None: derived.


_O = Option
_POS = dict(lo=0, lo_open=True)


def _defaults(cls: type) -> dict[str, Any]:
    """The constructor defaults of a σ-sampler: the library declares them, the options read them."""
    return {name: p.default for name, p in inspect.signature(cls).parameters.items()}


_GRID, _LOGNORMAL = _defaults(infonoise.SigmaGrid), _defaults(infonoise.LogNormalSampler)
_IN, _RIVAL = _defaults(infonoise.InfoNoiseSampler), _defaults(infonoise.LossSecondMomentSampler)
_LAPLACE = _defaults(infonoise.LaplaceSampler)
OPTIONS: tuple[Option, ...] = (
    # Run (per invocation; not allowed in presets).
    _O('outdir', None, 'Where to save the results', kind='run', metavar='DIR', required=True),
    _O('preset', None, 'Recipe from configs/NAME.json (explicit options override it)', kind='run', metavar='NAME'),
    _O('desc', None, 'String to include in the run-directory name', kind='run', metavar='STR'),
    _O('nosubdir', False, 'Do not create a subdirectory for results', bool, kind='run', is_flag=True),
    _O('dry_run', False, 'Print the configuration and exit', bool, kind='run', is_flag=True, short='-n'),
    _O('resume', None, 'Resume from a training-state file, a run directory (its newest state that loads; without '
       'one, start there) or auto (the newest run in --outdir); a directory run continues in place',
       kind='run', metavar='PT|DIR|auto'),
    _O('transfer', None, 'Transfer learning from network pickle', kind='run', metavar='PKL|URL'),
    # Data and network (EDM's options and defaults).
    _O('data', None, 'Dataset: folder/zip path, builtin:digits[-binary], builtin:mnist5k[-binary], dna:PATH, '
       'binary:SPEC', metavar='SPEC'),
    _O('cond', False, 'Train class-conditional model', bool),
    _O('arch', 'ddpmpp', 'Network architecture', choices=('ddpmpp', 'ncsnpp', 'adm', 'dnaunet')),
    _O('precond', 'edm', 'Preconditioning & loss function', choices=('vp', 've', 'edm')),
    _O('duration', 200.0, 'Training duration', float, kind='length', metavar='MIMG', **_POS),
    _O('kimg', None, 'Training duration in kimg (instead of --duration)', float, kind='length', metavar='KIMG', **_POS),
    _O('batch', 512, 'Total batch size', int, lo=1, config='batch_size'),
    _O('batch_gpu', None, 'Limit batch size per GPU/rank', int, kind='execution', lo=1),
    _O('cbase', None, 'Channel multiplier  [default: varies]', int, lo=1),
    _O('cres', None, 'Channels per resolution  [default: varies]', list, metavar='LIST'),
    _O('lr', 10e-4, 'Learning rate', float, **_POS),
    _O('ema', 0.5, 'EMA half-life', float, lo=0, metavar='MIMG'),
    _O('dropout', 0.13, 'Dropout probability', float, lo=0, hi=1),
    _O('augment', 0.12, 'Augment probability', float, lo=0, hi=1),
    _O('xflip', False, 'Enable dataset x-flips', bool),
    _O('lr_rampup', 10000.0, 'Learning-rate ramp-up', float, lo=0, metavar='KIMG', config='lr_rampup_kimg'),
    _O('ema_rampup', 0.05, 'EMA half-life ramp-up ratio (0 = none)', float, lo=0),
    # Performance-related (EDM's options).
    _O('fp16', False, 'Enable mixed-precision training (network fp16)', bool),
    _O('ls', 1.0, 'Loss scaling', float, **_POS, config='loss_scaling'),
    _O('bench', True, 'Enable cuDNN benchmarking', bool, kind='execution', config='cudnn_benchmark'),
    _O('cache', True, 'Cache dataset in CPU memory', bool, kind='execution'),
    _O('workers', 1, 'DataLoader worker processes', int, kind='execution', lo=0),
    # I/O-related (EDM's options).
    _O('tick', 50.0, 'How often to print progress', float, kind='execution', metavar='KIMG', **_POS,
       config='kimg_per_tick'),
    _O('snap', 50, 'How often to save snapshots', int, kind='execution', lo=1, metavar='TICKS',
       config='snapshot_ticks'),
    _O('dump', 500, 'How often to dump training state', int, kind='execution', lo=1, metavar='TICKS',
       config='state_dump_ticks'),
    _O('preempt_signals', 'SIGTERM,SIGUSR1', 'Signals that stop training at an agreed step with a state and a '
       'snapshot, exit code 75 (none = off)', kind='execution', metavar='LIST'),
    _O('seed', None, 'Random seed  [default: random]', int),
    # σ distribution and InfoNoise.
    _O('sigma_dist', 'auto', "Training σ distribution (auto: the loss's reference one)",
       choices=('auto', 'lognormal', 'loguniform', 'infonoise', 'ddpm', 'loss-second-moment', 'kingma-gao', 'cdcd',
                'laplace')),
    _O('weighting', 'auto', "Loss weight w(σ) (auto: the preconditioning's own; uncertainty: it times EDM2's "
       "learned 1/e^u(σ), plus u)", choices=('auto', 'edm', 'vp', 've', 'unit', 'min-snr', 'uncertainty')),
    _O('min_snr_gamma', 5.0, 'γ of --weighting min-snr: w = min(1/σ², γ)', float, **_POS),
    _O('laplace_mu', float(_LAPLACE['mu']), 'Laplace σ distribution: location μ of log-SNR λ = -2 ln σ', float),
    _O('laplace_b', float(_LAPLACE['b']), 'Laplace σ distribution: scale b of λ', float, **_POS),
    _O('rival_history', _RIVAL['history'], 'Losses kept per bin by loss-second-moment, kingma-gao, cdcd', int, lo=1),
    _O('rival_refresh', _RIVAL['refresh_every'],
       'Steps between table rebuilds of loss-second-moment, kingma-gao, cdcd (1: every step, '
       'as in their papers)', int, lo=1, metavar='STEPS'),
    _O('rival_uniform', float(_RIVAL['uniform']), 'Uniform mixture weight of the loss-second-moment, kingma-gao, '
       'cdcd tables', float, lo=0, hi=1, hi_open=True),
    _O('sigma_data', 0.5, 'σ_data of the preconditioning and the edm weight: the per-element std of the data in '
       'network units (EDM: 0.5; ±1 one-hot DNA: sqrt(3)/2)', float, **_POS),
    _O('p_mean', float(_LOGNORMAL['P_mean']), 'Log-normal σ distribution: mean of ln σ', float),
    _O('p_std', float(_LOGNORMAL['P_std']), 'Log-normal σ distribution: std of ln σ', float, **_POS),
    _O('sigma_min', float(_GRID['sigma_min']), 'InfoNoise grid / log-uniform lower end', float, **_POS),
    _O('sigma_max', float(_GRID['sigma_max']), 'InfoNoise grid / log-uniform upper end', float, **_POS),
    _O('infonoise_base', 'auto', 'Warm-up sampler (auto: lognormal, loguniform for discrete data)',
       choices=('auto', 'lognormal', 'loguniform')),
    _O('infonoise_warmup', _IN['warmup_steps'], 'Warm-up optimizer steps on the base sampler', int, lo=0,
       metavar='STEPS'),
    _O('infonoise_refresh', _IN['refresh_every'], 'Steps between table refreshes', int, lo=1, metavar='STEPS'),
    _O('infonoise_freeze', _IN['freeze_after'], 'Variant: no refresh after this step, the last table serves to the '
       'end (0: refresh to the end, the paper; why and how it fares: docs/BENCHMARKS.md §16)', int, lo=0,
       metavar='STEPS'),
    _O('infonoise_bins', _GRID['num_bins'], 'Log-σ grid bins', int, lo=2),
    _O('infonoise_buffer', _IN['buffer_size'], 'FIFO losses per bin per rank', int, lo=1),
    _O('infonoise_ema', float(_IN['ema']), 'EMA rate of the per-bin mean losses', float, lo=0, hi=1, lo_open=True),
    _O('infonoise_min_count', _IN['min_count'], 'Losses every bin needs before a refresh', int, lo=1),
    _O('infonoise_floor', float(_IN['floor']), 'Log-uniform mixture weight (keeps every bin observed)', float, lo=0,
       hi=1, hi_open=True),
    _O('infonoise_endpoint', 'auto', "Pivot rule (auto: the dataset's endpoint)",
       choices=('auto', 'continuous', 'discrete')),
    _O('infonoise_gate_n', float(_IN['gate_n']), 'Gate exponent n', float, **_POS),
    _O('infonoise_onset_p', float(_IN['onset_p']), 'Onset threshold p (continuous pivot rule)', float, lo=0, hi=1,
       lo_open=True, hi_open=True),
    _O('infonoise_smooth', _IN['smooth'], 'Smoothing passes on log r', int, lo=0),
    # Devices and speed.
    _O('device', 'auto', 'Device (auto: CUDA when available)', kind='execution', choices=('auto', 'cpu', 'cuda')),
    _O('bf16', False, 'bfloat16 autocast for the forward pass', bool, kind='execution', is_flag=True),
    _O('compile', False, 'torch.compile the network', bool, kind='execution', is_flag=True),
    _O('channels_last', False, 'Channels-last weights and activations', bool, kind='execution', is_flag=True),
    _O('sdpa', False, 'Fused scaled-dot-product attention', bool, kind='execution', is_flag=True),
    _O('fused_adam', False, 'Fused Adam kernel (faster step; parameters agree with the default Adam to ~1e-7, '
       'not bitwise)', bool, kind='execution', is_flag=True),
    _O('deterministic', False, 'Deterministic algorithms (bitwise-reproducible runs)', bool, kind='execution',
       is_flag=True, config='deterministic'),
    _O('threads', 0, 'CPU threads per process (0 = torch default; 1 is fastest for tiny nets on busy CPUs)', int,
       kind='execution', lo=0),
    # Quality during training.
    _O('metrics', None, 'Metrics of the EMA network during training, comma-separated: fd-digits, fd-mnist, '
       'fd-dna, kmer-dna, motif-dna, fid (appended to metrics.jsonl)', kind='execution', metavar='LIST'),
    _O('metrics_every', 10.0, 'Evaluate --metrics every this many kimg (and at the end)', float, kind='execution',
       metavar='KIMG', **_POS, config='metrics_every_kimg'),
    _O('metrics_guidance', 1.0, 'Classifier-free guidance weight W of the --metrics samples (1 = none; the DNA '
       'presets use 2, as DNA-Diffusion samples)', float, kind='execution', lo=0, metavar='W',
       config='metrics_guidance'),
    _O('metrics_num', 1000, 'Samples per --metrics evaluation', int, kind='execution', lo=2, config='metrics_num'),
    _O('metrics_steps', 18, 'Heun σ levels per --metrics sample (NFE = 2 steps - 1)', int, kind='execution', lo=1,
       config='metrics_steps'),
    # End-of-run extras.
    _O('grid', 0, 'Images in the final sample grid (0 = none)', int, kind='execution', lo=0, config='grid_size'),
    _O('grid_steps', 18, 'Heun steps for the sample grid', int, kind='execution', lo=1, config='grid_steps'),
    _O('plot', True, 'Plot the InfoNoise profile at the end (needs matplotlib)', bool, kind='execution',
       config='plot_profile'),
)

# Stored options (everything a preset or a training state may hold) -> default.
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS if o.name not in ('outdir', 'preset', 'dry_run')}

# Options that describe where/how a run executes, not what it trains; a preset may not set them.
RUN_ONLY = tuple(o.name for o in OPTIONS if o.kind == 'run')

PRESET_KEYS = ('description', 'options', 'network_kwargs')

ARCH_KWARGS = {
    'ddpmpp': dict(model_type='SongUNet', embedding_type='positional', encoder_type='standard',
                   decoder_type='standard', channel_mult_noise=1, resample_filter=[1, 1],
                   model_channels=128, channel_mult=[2, 2, 2]),
    'ncsnpp': dict(model_type='SongUNet', embedding_type='fourier', encoder_type='residual',
                   decoder_type='standard', channel_mult_noise=2, resample_filter=[1, 3, 3, 1],
                   model_channels=128, channel_mult=[2, 2, 2]),
    'adm': dict(model_type='DhariwalUNet', model_channels=192, channel_mult=[1, 2, 3, 4]),
    # DNA-Diffusion's U-Net at its own settings (dim 200, dim_mults 1,2,4, 4 groups, 18 Fourier features,
    # p_uncond 0.1); --cbase / --cres set its width / multipliers (DNAUNet's model_channels / channel_mult).
    'dnaunet': dict(model_type='DNAUNet', model_channels=200, channel_mult=[1, 2, 4], resnet_block_groups=4,
                    learned_sinusoidal_dim=18, label_dropout=0.1),
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
    'loss-second-moment': 'infonoise.LossSecondMomentSampler',
    'kingma-gao': 'infonoise.KingmaGaoSampler',
    'cdcd': 'infonoise.CDCDSampler',
    'laplace': 'infonoise.LaplaceSampler',
    'ddpm': 'infonoise.DDPMSampler',              # DNA-Diffusion's 50 levels, β linear 1e-4 -> 0.2
}


def schedule_name(sigma_sampler: Any) -> str:
    """How plots and logs name a σ-sampler's schedule: 'InfoNoise', else its --sigma-dist value ('kingma-gao')."""
    cls = type(sigma_sampler).__name__
    flags = {path.rsplit('.', 1)[-1]: name for name, path in SAMPLER_CLASSES.items()}
    return 'InfoNoise' if flags.get(cls) == 'infonoise' else flags.get(cls, cls)

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
    return dict(description=str(raw.get('description', '')), options=dict(options),
                network_kwargs=check_network_kwargs(network_kwargs, f'Preset {name!r}'))


def _network_parameters() -> dict[str, Any]:
    """Constructor parameters a preset or state may set in network_kwargs -> a default showing the type."""
    from training import networks
    set_by_the_loop = {'self', 'img_resolution', 'img_channels', 'label_dim', 'in_channels', 'out_channels'}
    params: dict[str, Any] = {}
    for cls in (networks.VPPrecond, networks.VEPrecond, networks.iDDPMPrecond, networks.EDMPrecond,
                *networks._MODEL_TYPES.values()):
        for p in inspect.signature(cls).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in set_by_the_loop:
                continue
            default = None if p.default is p.empty else p.default
            if p.annotation == 'float' and default is not None:
                default = float(default)   # real-valued, also where the default is written as an int (sigma_max=100)
            if params.get(p.name) is None:
                params[p.name] = default
    return params


def _plain_value_ok(value: Any, default: Any) -> bool:
    """A network_kwargs value: plain JSON data, finite numbers, and the type of the parameter's default."""
    if isinstance(value, (list, tuple)):   # a list of finite numbers, where the default is a list or None
        return (default is None or isinstance(default, (list, tuple))) and all(_plain_value_ok(v, 0.0) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if default is None:
        return value is None or isinstance(value, (bool, int, float, str))
    allowed = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(type(default), ())
    return isinstance(value, allowed) and isinstance(value, bool) == isinstance(default, bool)


def check_network_kwargs(network_kwargs: Any, source: str) -> dict:
    """Check extra network constructor kwargs from a preset or a stored training state; return them.

    They are data, never code: `class_name` is refused (the network class follows from --precond and
    --arch), every key must be a parameter of this project's preconditioners or U-Nets, and every value
    must have the type of that parameter's default (finite numbers, lists of numbers); OptionsError otherwise.
    """
    if not isinstance(network_kwargs, dict):
        raise OptionsError(f'{source}: "network_kwargs" must be a JSON object.')
    if 'class_name' in network_kwargs:
        raise OptionsError(f'{source}: network_kwargs may not set class_name (the network class follows from '
                           f'--precond and --arch; names from files are never imported).')
    params = _network_parameters()
    from training.networks import _MODEL_TYPES
    for key, value in network_kwargs.items():
        if key not in params:
            raise OptionsError(f'{source}: network_kwargs has {key!r}, which is not a parameter of this project\'s '
                               f'networks.')
        if key == 'model_type' and value not in _MODEL_TYPES:
            raise OptionsError(f'{source}: network_kwargs model_type={value!r} is not one of '
                               f'{", ".join(_MODEL_TYPES)}.')
        if not _plain_value_ok(value, params[key]):
            raise OptionsError(f'{source}: network_kwargs {key}={value!r} has the wrong type or is not finite.')
    return dict(network_kwargs)


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
    if base is not None:
        opts['network_kwargs'] = check_network_kwargs(opts['network_kwargs'], 'The resumed training state')
    if preset is not None:
        opts.update(copy.deepcopy(preset['options']))
        opts['network_kwargs'] = copy.deepcopy(preset.get('network_kwargs', {}))
    if 'duration' in given and given.get('kimg') is not None:
        raise OptionsError('--duration and --kimg both set the training length; give only one.')
    if 'duration' in given:
        opts['kimg'] = None
    opts.update(copy.deepcopy(dict(given)))
    return opts


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


def validate_options(opts: Mapping[str, Any]) -> None:
    """Check the combinations of options; raise OptionsError with one sentence.

    Each value's type, range and choices are checked where it enters: by click, for flags, presets and the
    options of a resumed run alike (train.py); the batch geometry and --metrics by `build_config`.
    """
    desc = opts.get('desc')
    if desc is not None and (not isinstance(desc, str) or any(c in desc for c in ('/', '\\', os.sep, '\0'))):
        raise OptionsError(f'--desc={desc!r} may not contain a path separator (it becomes part of the run '
                           f'directory name).')
    if opts.get('fp16') and opts.get('bf16'):
        raise OptionsError('--fp16 and --bf16 are alternatives; choose one.')
    if not opts.get('data'):
        raise OptionsError('Missing option --data (and the preset gives no dataset).')
    if opts['sigma_max'] <= opts['sigma_min']:
        raise OptionsError(f'--sigma-max={opts["sigma_max"]} must be larger than --sigma-min={opts["sigma_min"]}.')
    try:
        check_min_count(opts['infonoise_min_count'], opts['infonoise_buffer'])
    except ValueError as err:
        raise OptionsError(f'--infonoise-min-count / --infonoise-buffer: {err}.') from None
    if float(opts.get('metrics_guidance', 1.0)) != 1 and opts.get('metrics') and not opts['cond']:
        raise OptionsError(f'--metrics-guidance={opts["metrics_guidance"]} needs a conditional model (--cond true); '
                           f'use 1 for an unconditional one.')


def total_kimg(opts: Mapping[str, Any]) -> float:
    """Training length in kimg (--kimg wins over --duration, which is in Mimg)."""
    if opts.get('kimg') is not None:
        return float(opts['kimg'])
    return float(opts['duration']) * 1000.0


# ----------------------------------------------------------------------------------------------
# Options -> plain-data kwargs.

def resolve_weighting(opts: Mapping[str, Any]) -> str:
    """The static loss weight w(σ): --weighting, with 'auto' (and 'uncertainty', whose learned factor
    multiplies the static one) meaning the preconditioning's own loss weight."""
    return opts['precond'] if opts['weighting'] in ('auto', 'uncertainty') else opts['weighting']


def _weight_kwargs(opts: Mapping[str, Any], sigma_data: float) -> dict:
    """'weighting' / 'sigma_data' (and 'min_snr_gamma' for min-snr) naming w(σ) for a σ-sampler."""
    out = dict(weighting=resolve_weighting(opts), sigma_data=float(sigma_data))
    if out['weighting'] == 'min-snr':
        out['min_snr_gamma'] = float(opts['min_snr_gamma'])
    return out


def sigma_sampler_kwargs(opts: Mapping[str, Any], endpoint: str, sigma_data: float = 0.5) -> dict | None:
    """Plain-data description of the training σ distribution (None: the loss's own default).

    Layout: {'class_name': ..., <constructor kwargs>}; for InfoNoise the nested 'grid' and 'base'
    entries describe the SigmaGrid and the warm-up sampler, and 'weighting' / 'sigma_data' name
    the loss weight w(σ) the table divides by.
    """
    dist = opts['sigma_dist']
    fixed = dict(lognormal=dict(P_mean=float(opts['p_mean']), P_std=float(opts['p_std'])), ddpm={},
                 loguniform=dict(sigma_min=float(opts['sigma_min']), sigma_max=float(opts['sigma_max'])),
                 laplace=dict(mu=float(opts['laplace_mu']), b=float(opts['laplace_b'])))
    fixed = {name: dict(class_name=SAMPLER_CLASSES[name], **kwargs) for name, kwargs in fixed.items()}
    grid = dict(sigma_min=float(opts['sigma_min']), sigma_max=float(opts['sigma_max']),
                num_bins=int(opts['infonoise_bins']))
    if dist == 'auto':
        return None
    if dist in fixed:
        return fixed[dist]
    if dist in ('loss-second-moment', 'kingma-gao', 'cdcd'):
        return dict(
            class_name=SAMPLER_CLASSES[dist], grid=grid, **_weight_kwargs(opts, sigma_data),
            history=int(opts['rival_history']), uniform=float(opts['rival_uniform']),
            refresh_every=int(opts['rival_refresh']), log_every=int(opts['infonoise_refresh']),
        )
    base = opts['infonoise_base']
    if base == 'auto':
        base = 'loguniform' if endpoint == 'discrete' else 'lognormal'
    return dict(
        class_name=SAMPLER_CLASSES['infonoise'], grid=grid, base=fixed[base], **_weight_kwargs(opts, sigma_data),
        warmup_steps=int(opts['infonoise_warmup']), refresh_every=int(opts['infonoise_refresh']),
        buffer_size=int(opts['infonoise_buffer']), ema=float(opts['infonoise_ema']),
        min_count=int(opts['infonoise_min_count']), gate_n=float(opts['infonoise_gate_n']),
        endpoint=endpoint, onset_p=float(opts['infonoise_onset_p']),
        floor=float(opts['infonoise_floor']), smooth=opts['infonoise_smooth'],
        freeze_after=int(opts['infonoise_freeze']),
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


def check_network_geometry(network_kwargs: Mapping[str, Any], dataset: Mapping[str, Any]) -> None:
    """OptionsError (one sentence) when the U-Net's resolution ladder does not fit the data (e.g. attention at 16
    on 8x8 digits), before anything is built."""
    from training import networks
    resolution = dataset.get('resolution')
    model = networks._MODEL_TYPES.get(network_kwargs.get('model_type'))
    if not isinstance(resolution, int) or model not in (networks.SongUNet, networks.DhariwalUNet):
        return
    params = inspect.signature(model).parameters
    channel_mult = network_kwargs.get('channel_mult', params['channel_mult'].default)
    attn = network_kwargs.get('attn_resolutions', params['attn_resolutions'].default)
    try:
        networks._check_geometry(model.__name__, resolution, list(channel_mult), list(attn))
    except ValueError as err:
        raise OptionsError(f'--data {dataset.get("name") or ""} ({resolution}x{resolution}): {err}; set '
                           f'"attn_resolutions" in a preset\'s network_kwargs (e.g. [] for none).') from None


def dataset_facts(ds: Any) -> dict:
    """The facts `build_config` needs about an opened dataset (`training.dataset.open_dataset`), as plain data."""
    return dict(name=ds.name, shape=list(ds.image_shape), resolution=ds.resolution, num_channels=ds.num_channels,
                label_dim=ds.label_dim, has_labels=ds.has_labels, endpoint=getattr(ds, 'endpoint', 'continuous'),
                size=len(ds), dataset_kwargs=dict(ds.dataset_kwargs))


def build_config(opts: Mapping[str, Any], dataset: Mapping[str, Any], world_size: int = 1) -> dict:
    """Turn resolved, validated options (`validate_options`) into `training_loop` kwargs (plain data only).

    dataset: facts about the opened dataset (`dataset_facts`): name, resolution, num_channels, label_dim,
             has_labels, endpoint, size (number of items), dataset_kwargs (its own class_name +
             constructor kwargs, what the loop reopens and snapshots store).
    Raises OptionsError for a dataset without the labels --cond needs, a bad --metrics list and a batch
    that does not split over the ranks (the geometry is computed here, once).
    """
    if opts['cond'] and not dataset.get('has_labels'):
        raise OptionsError(f'--cond requires labels, but the dataset {opts["data"]!r} has none '
                           f'(add a dataset.json with labels).')
    from training.metrics.registry import check_metric_applicable, parse_metrics
    try:   # the --metrics list (empty when unset): known names, each applicable to the dataset
        metrics = parse_metrics(opts.get('metrics') or None)
        for name in metrics if dataset.get('dataset_kwargs') else ():
            check_metric_applicable(name, dataset['dataset_kwargs'])
    except ValueError as err:
        message = str(err)
        raise OptionsError(f'--metrics: {message[:1].lower()}{message[1:]}') from None
    from training.fast_paths import FAST_PATH_DEFAULTS
    batch_gpu, rounds = batch_per_rank(int(opts['batch']), opts.get('batch_gpu'), world_size)
    endpoint = opts['infonoise_endpoint']
    if endpoint == 'auto':   # the dataset's (continuous if it declares none)
        endpoint = dataset['endpoint'] if dataset.get('endpoint') in ('continuous', 'discrete') else 'continuous'
    net_class, loss_class = PRECOND_CLASSES[opts['precond']]

    network_kwargs: dict[str, Any] = dict(class_name=net_class, **copy.deepcopy(ARCH_KWARGS[opts['arch']]))
    if opts.get('cbase') is not None:
        network_kwargs['model_channels'] = int(opts['cbase'])
    if opts.get('cres') is not None:
        network_kwargs['channel_mult'] = [int(c) for c in opts['cres']]
    if opts['arch'] == 'dnaunet':      # DNA-Diffusion's 10-row label table, grown when there are more cell types
        network_kwargs['num_classes'] = max(10, int(dataset.get('label_dim') or 0) + 1)
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
    if opts['weighting'] not in ('auto', 'uncertainty'):
        loss_kwargs['weighting'] = opts['weighting']
    if opts['weighting'] == 'min-snr':
        loss_kwargs['min_snr_gamma'] = float(opts['min_snr_gamma'])
    if opts['weighting'] == 'uncertainty':
        loss_kwargs['uncertainty'] = True
    sigma_data = float(network_kwargs.get('sigma_data', opts.get('sigma_data', 0.5)))
    loss_kwargs['sigma_data'] = sigma_data
    if opts['precond'] == 'edm':
        network_kwargs['sigma_data'] = sigma_data

    ema_rampup = None if opts.get('transfer') is not None or not opts['ema_rampup'] else float(opts['ema_rampup'])
    return dict(
        dataset_kwargs=copy.deepcopy(dict(dataset['dataset_kwargs'])) if dataset.get('dataset_kwargs')
        else dataset_kwargs(opts),
        data_loader_kwargs=dict(num_workers=int(opts['workers'])),
        network_kwargs=network_kwargs,
        loss_kwargs=loss_kwargs,
        sigma_sampler_kwargs=sigma_sampler_kwargs(opts, endpoint, sigma_data),
        optimizer_kwargs=dict(class_name='torch.optim.Adam', lr=float(opts['lr']), betas=[0.9, 0.999], eps=1e-8),
        augment_kwargs=augment_kwargs,
        seed=int(opts['seed']) if opts.get('seed') is not None else 0,
        batch_gpu=batch_gpu,
        accumulation_rounds=rounds,
        total_kimg=total_kimg(opts),
        ema_halflife_kimg=float(opts['ema']) * 1000.0,
        ema_rampup_ratio=ema_rampup,
        fast_paths={k: opts[k] for k in FAST_PATH_DEFAULTS if k in opts},
        metrics=metrics,
        **{o.config: o.type(opts[o.name]) for o in OPTIONS if o.config},   # the options that set a kwarg as is
    )

