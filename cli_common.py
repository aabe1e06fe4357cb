"""The command-line side shared by the CLIs (train.py, generate.py, fid.py) and scripts/: click declarations
and process helpers. The library (training, infonoise, torch_utils, dnnlib) never imports click or prints;
everything here may.

The CLIs import these instead of importing each other: the sampler options (`sampling_options`,
`sampler_options_from_cli`), seed parsing, the distributed/loading helpers that turn library errors into
click errors on every rank, `print0` and the entry point `run_cli`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any, Callable

import click
import torch

from torch_utils import distributed as dist
from training import generation, sampler as samplers
from training.network_io import load_network


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses NaN (and infinity unless `allow_inf`): such values pass a range
    check silently and then produce black images or overflow later."""

    def __init__(self, *args: Any, allow_inf: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_inf = allow_inf

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number) or (math.isinf(number) and not self.allow_inf):
            self.fail(f'{value!r} is not a finite number.', param, ctx)
        return number


POSITIVE = FiniteFloatRange(min=0, min_open=True)
SIGMA = FiniteFloatRange(min=0, min_open=True, max=generation.MAX_SIGMA)
NON_NEGATIVE = FiniteFloatRange(min=0)


def _parsing_callback(parse: Callable[[str], Any]) -> Callable:
    """A click callback that parses a text value with `parse`, turning its ValueError into one click error."""
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(f'{str(exc).rstrip(".")}.') from None
    return callback


def comma_list(choices: tuple[str, ...] | None = None, minimum: int | None = None) -> Callable:
    """A click callback: a comma-separated value as a tuple of names from `choices`, or (no choices) of whole
    numbers >= `minimum`; None stays None; anything else is one BadParameter sentence."""
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
        if value is None:
            return None
        items = [v.strip() for v in value.split(',') if v.strip()]
        if not items:
            raise click.BadParameter('the list is empty')
        if choices is not None:
            bad = [v for v in items if v not in choices]
            if bad:
                raise click.BadParameter(f'unknown name(s) {", ".join(bad)}; choose from {", ".join(choices)}')
            return tuple(items)
        try:
            values = tuple(int(v) for v in items)
        except ValueError:
            raise click.BadParameter('expected a comma-separated list of whole numbers, e.g. 5,7,9') from None
        if minimum is not None and min(values) < minimum:
            raise click.BadParameter(f'every value must be at least {minimum}')
        return values
    return callback


seeds_callback = _parsing_callback(generation.parse_seeds)
_sigmas_callback = _parsing_callback(generation.parse_sigmas)


def resolve_grid(net: torch.nn.Module, opts: generation.SamplerOptions,
                 class_idx: int | None = None) -> torch.Tensor | None:
    """The checked sampling options' σ grid for `net` (None: the ablation sampler builds its own); any problem
    with the options, the network or the grid is one click error. A usable grid is finite, positive and strictly
    decreasing before its trailing 0 (`generation.normalize_sigmas`): a tiny --rho overflows, a huge one collapses
    the levels."""
    try:
        generation.validate(net, opts, class_idx)
        sigma_steps = generation.resolve_sigma_steps(net, opts)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except OverflowError:
        raise click.ClickException('These options give a degenerate σ grid: computing it overflows (e.g. a tiny '
                                   '--rho); change --rho, --steps or --sigma_min/max.') from None
    try:
        if sigma_steps is not None:
            generation.normalize_sigmas(torch.as_tensor(sigma_steps).tolist())
    except ValueError:
        shown = ', '.join(f'{float(s):.4g}' for s in sigma_steps[:6]) + (', ...' if len(sigma_steps) > 6 else '')
        raise click.ClickException(f'These options give a degenerate σ grid ({shown}): the levels must be finite, '
                                   f'positive and strictly decreasing; change --rho, --steps or '
                                   f'--sigma_min/max.') from None
    return sigma_steps


def write_error(exc: OSError, path: str) -> click.ClickException:
    """One click error for a failed write of `path` (a WriteError already is one sentence)."""
    from dnnlib.util import WriteError, write_cause
    if isinstance(exc, WriteError):
        return click.ClickException(str(exc))
    return click.ClickException(f'Cannot write {exc.filename or path}: {write_cause(exc)}.')


def prepare_output_dir(path: str) -> None:
    """Create an output folder up front, so that an unwritable or impossible path fails before any sampling."""
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, 'Permission denied', path)
    except OSError as exc:
        raise write_error(exc, path) from None


def sampling_options(f: Callable) -> Callable:
    """The sampler options shared by generate.py and `fid.py calc --network`."""
    options = [
        click.option('--steps', 'num_steps', type=click.IntRange(min=1), default=None,
                     help=f'Number of σ steps N (Heun NFE = 2N − 1)  [default: {generation.DEFAULT_STEPS}; with '
                          '--sigmas: the length of the list]'),
        click.option('--sigma_min', type=SIGMA, default=None,
                     help='Lowest σ  [default: 0.002; ablation: per --disc]'),
        click.option('--sigma_max', type=SIGMA, default=None,
                     help='Highest σ  [default: 80; ablation: per --disc]'),
        click.option('--rho', type=POSITIVE, default=None,
                     help='Exponent ρ of the EDM time steps (and of --infogrid-method tempered)  '
                          f'[default: {generation.DEFAULT_RHO:g}]'),
        click.option('--sigmas', metavar='LIST|FILE', default=None, callback=_sigmas_callback,
                     help='Use exactly these σ levels, e.g. 80,10,1,0.1,0.002, or a file with a JSON list or one '
                          'number per line; decreasing, a trailing 0 is added. The list sets the steps; not with '
                          '--infogrid*, --rho, --sigma_min/max or the ablation grids.'),
        click.option('--S_churn', 'S_churn', type=NON_NEGATIVE, default=0, show_default=True,
                     help='Stochasticity strength.'),
        click.option('--S_min', 'S_min', type=NON_NEGATIVE, default=0, show_default=True,
                     help='Lowest σ with stochasticity.'),
        click.option('--S_max', 'S_max', type=FiniteFloatRange(min=0, allow_inf=True), default=math.inf, show_default=True,
                     help='Highest σ with stochasticity.'),
        click.option('--S_noise', 'S_noise', type=FiniteFloatRange(), default=1, show_default=True, help='Noise inflation.'),
        click.option('--solver', type=click.Choice(samplers.SOLVERS), default=None,
                     help='ODE solver  [default: heun]'),
        click.option('--disc', 'discretization', type=click.Choice(samplers.DISCRETIZATIONS), default=None,
                     help='Ablation: time-step discretization.'),
        click.option('--schedule', type=click.Choice(samplers.SCHEDULES), default=None,
                     help='Ablation: noise schedule σ(t).'),
        click.option('--scaling', type=click.Choice(samplers.SCALINGS), default=None,
                     help='Ablation: signal scaling s(t).'),
        click.option('--infogrid', is_flag=True, help="Use InfoGrid built from the snapshot's 'infonoise' profile."),
        click.option('--infogrid-profile', 'infogrid_profile', type=click.Path(exists=True, dir_okay=False),
                     default=None, help='InfoGrid from this profile JSON (or infonoise.jsonl); implies --infogrid.'),
        click.option('--infogrid-measure', 'infogrid_measure', type=click.Choice(list(generation.INFOGRID_MEASURES)),
                     default=None, help="InfoGrid measure: 'literal' = Eq. 19 (∫σ r dσ), 'entropic' = ∫r dσ  "
                                        f"[default: {generation.DEFAULT_INFOGRID_MEASURE}]"),
        click.option('--infogrid-floor', 'infogrid_floor', type=FiniteFloatRange(0, 1), default=None,
                     help='Weight of log-uniform blended into the InfoGrid density  '
                          f'[default: {generation.DEFAULT_INFOGRID_FLOOR}]'),
        click.option('--infogrid-gated', 'infogrid_gated', is_flag=True,
                     help='Build InfoGrid from the gated rate instead of the raw rate.'),
        click.option('--infogrid-method', 'infogrid_method', type=click.Choice(list(generation.INFOGRID_METHODS)),
                     default=None, help="InfoGrid construction: 'eq19' = uniform in the measure (+ floor); "
                                        "'tempered' = EDM's ρ-spacing tilted by the information density^γ; "
                                        "'solver-aware' = equal predicted step error of --solver  "
                                        f"[default: {generation.DEFAULT_INFOGRID_METHOD}; tempered with "
                                        "--infogrid-calibrate]"),
        click.option('--infogrid-gamma', 'infogrid_gamma', type=NON_NEGATIVE, default=None,
                     help=f'Tempering exponent γ of --infogrid-method tempered  '
                          f'[default: {generation.DEFAULT_INFOGRID_GAMMA}]'),
        click.option('--infogrid-calibrate', 'infogrid_calibrate', type=click.IntRange(min=1), default=None,
                     metavar='N', help='Pick γ and ρ of the tempered InfoGrid by trajectory error against a fine '
                                       'reference on N latents, for these --steps and --solver (seconds).'),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# The values `sampling_options` declares: one per SamplerOptions field (--infogrid is a flag here, the profile
# there) and the profile file of --infogrid-profile.
SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(generation.SamplerOptions) if f.name != 'calibration') + (
    'infogrid_profile',)
_INFOGRID_KEYS = ('infogrid_measure', 'infogrid_floor', 'infogrid_gated', 'infogrid_method', 'infogrid_gamma',
                  'infogrid_calibrate')


def _given(v: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The flags of `keys` the user gave (not None, not False): 'infogrid_floor' -> '--infogrid-floor'."""
    return ['--' + key.replace('_', '-') for key in keys if v[key] not in (None, False)]


def sampler_options_from_cli(kwargs: dict[str, Any], snapshot: dict, network: str) -> generation.SamplerOptions:
    """Build SamplerOptions from the CLI values (popped from kwargs).

    Only what SamplerOptions cannot show is checked here (a flag given where it has no effect, which its default
    would hide); every other combination is checked once, by `generation.validate`, which the CLIs call next.
    """
    v = {k: kwargs.pop(k) for k in SAMPLING_KEYS}
    # The values given, by SamplerOptions field (None leaves the field's default).
    fields = {k: x for k, x in v.items() if x is not None and k not in ('infogrid', 'infogrid_profile')}
    if v['sigmas'] is not None:
        given = _given(v, ('infogrid', 'infogrid_profile', *_INFOGRID_KEYS, 'rho'))
        if given:
            raise click.UsageError(f'--sigmas gives the σ grid itself; it cannot be combined with {given[0]}.')
        return generation.SamplerOptions(**dict(fields, num_steps=v['num_steps'] or len(v['sigmas']) - 1))
    use_infogrid = v['infogrid'] or v['infogrid_profile'] is not None
    given = _given(v, _INFOGRID_KEYS)
    if given and not use_infogrid:
        raise click.UsageError(f'{given[0]} only applies together with --infogrid or --infogrid-profile.')
    method = v['infogrid_method'] or ('tempered' if v['infogrid_calibrate'] else generation.DEFAULT_INFOGRID_METHOD)
    if use_infogrid:
        if v['infogrid_calibrate'] and (v['infogrid_gamma'] is not None or v['rho'] is not None):
            raise click.UsageError('--infogrid-calibrate chooses γ and ρ itself; drop --infogrid-gamma/--rho.')
        if v['infogrid_floor'] is not None and method != 'eq19':
            raise click.UsageError('--infogrid-floor applies to --infogrid-method eq19 only.')
        if v['infogrid_gamma'] is not None and method != 'tempered':
            raise click.UsageError('--infogrid-gamma applies to --infogrid-method tempered only.')
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
        except (TypeError, KeyError, AttributeError, IndexError) as exc:   # an 'infonoise' entry of another shape
            raise click.ClickException(f"{network}'s 'infonoise' entry is not an InfoNoise profile "
                                       f"({type(exc).__name__}: {str(exc).strip() or 'malformed'}).") from None
    return generation.SamplerOptions(**dict(fields, infogrid=profile, infogrid_method=method))


def check_device(device: str) -> None:
    """A --device of cuda on a machine without CUDA is one BadParameter sentence."""
    if device == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('CUDA is not available on this machine.', param_hint='--device')


def init_distributed(device: str) -> torch.device:
    """Initialise torch.distributed (torchrun) or a single process; return this rank's device (cuda:LOCAL_RANK on
    CUDA)."""
    check_device(device)
    return dist.init(device=None if device == 'auto' else device)


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
    """The snapshot dict with its 'ema' network on `device`; click error if it cannot be loaded or its weights
    are not finite (its samples would be NaN: black images, or a plausible-looking FID of garbage)."""
    snapshot = rank0_first(lambda: load_network(network, device))
    net = snapshot['ema']
    for key, tensor in list(net.named_parameters()) + list(net.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise click.ClickException(f'{network} holds non-finite weights ({key}); its samples would be NaN.')
    return snapshot


def print0(*args: Any, **kwargs: Any) -> None:
    """print() on rank 0 only."""
    if dist.get_rank() == 0:
        print(*args, **kwargs)


def run_cli(command: Any) -> None:
    """Run a click command as a program's entry point and exit with its status.

    Under torchrun (WORLD_SIZE > 1) the process ends with os._exit once the command has returned and its
    output is flushed: C++ threads of the gloo/c10d layer can otherwise abort the interpreter's teardown
    ("terminate called without an active exception", seen on CPU ranks), which would turn a finished job
    into a failed one. Single processes exit normally.
    """
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1:
        command()           # standalone mode: click reports errors and calls sys.exit
        return
    try:
        code = command(standalone_mode=False)   # click returns the code of a click.exceptions.Exit here
        code = code if isinstance(code, int) else 0
    except click.ClickException as err:
        err.show()
        code = err.exit_code
    except click.exceptions.Exit as err:
        code = err.exit_code
    except click.Abort:
        click.echo('Aborted!', err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
