"""Train a diffusion model with EDM's pipeline and an InfoNoise or fixed σ distribution.

Thin CLI: options -> `training.options` (presets, validation, plain-data config) -> dataset check ->
`training.training_loop.training_loop`. Runs as plain `python` (one process, CPU or one GPU) and under
`torchrun` (NCCL on GPUs, gloo on CPU).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Callable

import click

from cli_common import FiniteFloatRange
from dnnlib.util import first_line
from training import options as opt_lib

EXAMPLES = """\b
Examples:
  # CPU demo: 8x8 digits with InfoNoise, a few minutes; sample grid + profile plot in runs/
  python train.py --preset digits-demo --outdir runs
\b
  # EDM's CIFAR-10 recipe on 8 GPUs, InfoNoise row of the paper
  torchrun --standalone --nproc_per_node=8 train.py --preset cifar10-uncond \\
      --data datasets/cifar10-32x32.zip --outdir runs --sigma-dist infonoise
\b
  # Plain EDM options (no preset), 2 CPU ranks with gloo, 12 kimg
  torchrun --nproc_per_node=2 train.py --outdir runs --data builtin:mnist5k --cbase 32 \\
      --cres 1,2 --batch 64 --kimg 12 --device cpu
\b
  # Continue the newest training state of a run (same options, taken from the state)
  python train.py --outdir runs --resume runs/00000-digits-uncond-ddpmpp-edm-infonoise-gpus1-batch128-fp32
\b
  # A requeueable cluster job: the same line starts the run, and after a preemption (SIGTERM/SIGUSR1:
  # state + snapshot, exit code 75) or a kill continues its newest run directory
  python train.py --preset cifar10-uncond --data cifar10.zip --outdir runs/cifar --resume auto
"""


class _PositiveIntList(click.ParamType):
    """A non-empty list of positive integers: '1,2,2' on the command line, [1, 2, 2] in a preset or a state."""
    name = 'list'

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        items = value.split(',') if isinstance(value, str) else value
        try:
            out = [int(x) for x in items]
            ok = bool(out) and min(out) >= 1 and not any(isinstance(x, (bool, float)) for x in items)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            self.fail(f'expected a non-empty comma-separated list of positive integers, got {value!r}', param, ctx)
        return out


def _click_option(option: opt_lib.Option) -> Callable:
    """A click option from its one declaration in training.options.OPTIONS."""
    metavar = option.metavar or {float: 'FLOAT', int: 'INT', bool: 'BOOL'}.get(option.type)
    kwargs: dict[str, Any] = dict(help=option.help, metavar=metavar, required=option.required)
    if option.is_flag:
        kwargs.update(is_flag=True)
    elif option.choices is not None:
        kwargs.update(type=click.Choice(option.choices), metavar=None)
    elif option.type is list:
        kwargs.update(type=_PositiveIntList())
    elif option.type is float or (option.type is int and (option.lo, option.hi) != (None, None)):
        ranged = FiniteFloatRange if option.type is float else click.IntRange   # an infinite --lr trains NaN weights
        kwargs.update(type=ranged(min=option.lo, max=option.hi, min_open=option.lo_open, max_open=option.hi_open))
    else:
        kwargs.update(type=option.type)
    if option.default is not None and not option.is_flag:
        kwargs.update(default=option.default)
    names = [option.short] if option.short else []
    return click.option(*names, opt_lib.flag(option.name), option.name, **kwargs)


def _options(f: Callable) -> Callable:
    for option in reversed(opt_lib.OPTIONS):
        f = _click_option(option)(f)
    return f


@click.command(epilog=EXAMPLES, context_settings=dict(show_default=True, max_content_width=110))
@_options
def main(**kwargs) -> None:
    """Train a diffusion model (EDM pipeline) with an InfoNoise or a fixed σ distribution.

    Presets (configs/*.json) hold the recipes; every option given explicitly overrides the preset.
    The σ distribution defaults to the loss's reference one (--sigma-dist auto: log-normal for EDM);
    how InfoNoise and the fixed distributions compare, with the data behind it: docs/BENCHMARKS.md §16.
    """
    ctx = click.get_current_context()
    explicit = {name for name in kwargs
                if ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                                      click.core.ParameterSource.ENVIRONMENT)}
    from training.checkpoint import CheckpointError
    try:
        run(kwargs, explicit)
    except (opt_lib.OptionsError, CheckpointError) as err:   # bad options, an unusable or incompatible state
        raise click.ClickException(first_line(err)) from None


def _convert(ctx: click.Context, values: dict, source: str) -> dict:
    """Option values from a preset or a resumed run's state, converted and checked by the same click parameters
    as flags (types, ranges, choices); a bad value -> one-line ClickException naming `source`."""
    params = {p.name: p for p in ctx.command.params}
    out = dict(values)
    for name, value in values.items():
        if name not in params:
            continue
        if value is None and opt_lib.DEFAULTS[name] is not None:
            raise click.ClickException(f'{source}: {opt_lib.flag(name)} cannot be null.')
        try:
            out[name] = params[name].type_cast_value(ctx, value)
        except click.BadParameter as err:
            raise click.ClickException(f'{source}: {opt_lib.flag(name)}={value!r}: {err.message}') from None
    return out


def run(kwargs: dict, explicit: set[str]) -> None:
    """Everything between the parsed options and the training loop (main words its OptionsError / CheckpointError)."""
    import torch
    from torch_utils import distributed as dist
    from training import checkpoint, preemption, training_loop
    from training.network_io import NetworkLoadError

    # Options: defaults (or the resumed run's) < preset < explicit flags.
    ctx = click.get_current_context()
    given = {k: kwargs[k] for k in explicit if k in opt_lib.DEFAULTS}
    preset = opt_lib.load_preset(kwargs['preset']) if kwargs['preset'] is not None else None
    if preset is not None:
        preset['options'] = _convert(ctx, preset['options'], f'Preset {kwargs["preset"]!r}')
    resume_path, base, header, plan = None, None, None, None
    if kwargs['resume'] is not None:
        if kwargs['transfer'] is not None:
            raise click.ClickException('--transfer and --resume cannot be used together.')
        plan = checkpoint.plan_resume(kwargs['resume'], kwargs['outdir'], bool(kwargs['nosubdir']))
        resume_path, header, plan.header = plan.state, plan.header, None
        given['resume'] = kwargs['resume']
    if header is not None and header.get('options'):   # the resumed run's options replace the defaults
        known = set(opt_lib.DEFAULTS) | {'network_kwargs'}
        base = dict(opt_lib.DEFAULTS, **_convert(ctx, {k: v for k, v in header['options'].items() if k in known},
                                                 f'--resume: {resume_path}'))
    opts = opt_lib.resolve_options(given, preset, base)
    opts['preset'] = kwargs['preset'] if kwargs['preset'] is not None else (base or {}).get('preset')

    # Devices and ranks.
    if opts['device'] == 'cuda' and not torch.cuda.is_available():
        raise click.ClickException('--device cuda was requested, but no CUDA device is available.')
    device = dist.init(None if opts['device'] == 'auto' else opts['device'])
    if opts['threads']:
        torch.set_num_threads(int(opts['threads']))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if device.type == 'cuda' and int(opts['workers']) > 0:
        torch.multiprocessing.set_start_method('spawn', force=True)
    if opts.get('seed') is None:
        opts['seed'] = int(dist.broadcast_object(int(torch.randint(1 << 31, size=[]).item())))
    opt_lib.validate_options(opts)
    try:
        stop_signals = preemption.StopSignals(opts.get('preempt_signals'))
    except ValueError as err:
        raise click.ClickException(f'--preempt-signals: {first_line(err)}') from None

    # Dataset: open once to validate it and learn its shape.
    dataset = _open_dataset(opts)
    config = opt_lib.build_config(opts, dataset, world_size)
    opt_lib.check_network_geometry(config['network_kwargs'], dataset)   # e.g. attention at 16 on 8x8 data
    if resume_path is not None:
        checkpoint.check_compatible(header, config, resume_path, opts)
        if header['cur_nimg'] >= config['total_kimg'] * 1000:
            if plan.run_dir is not None and (os.path.realpath(os.path.dirname(resume_path))
                                             == os.path.realpath(plan.run_dir)):
                # A requeued job whose run had finished (killed after its last state): nothing is left to do.
                if dist.get_rank() == 0:
                    click.echo(f'--resume: the run in {plan.run_dir} is finished ({header["cur_nimg"] / 1000:g} '
                               f'kimg); nothing to do (pass a longer --duration or --kimg to continue it).')
                dist.shutdown()
                return
            raise click.ClickException(f'--resume: {resume_path} is already at {header["cur_nimg"] / 1000:g} kimg, '
                                       f'the full training length; pass a longer --duration or --kimg.')
        config['resume_state'] = resume_path
        del header
    if opts.get('transfer') is not None and resume_path is None:
        if '://' not in opts['transfer'] and not os.path.isfile(opts['transfer']):
            raise click.ClickException(f'--transfer: {opts["transfer"]} does not exist.')
        config['resume_pkl'] = opts['transfer']

    # Run directory: a resumed run directory continues in place (a requeued job reuses its command line).
    desc = opt_lib.run_description(opts, dataset['name'], world_size)
    run_dir = plan.run_dir if plan is not None else None
    if run_dir is None and rank == 0:
        run_dir = _pick_run_dir(kwargs['outdir'], desc, kwargs['nosubdir'] or opts.get('nosubdir'))
    run_dir = dist.broadcast_object(run_dir)
    notes = plan.notes if plan is not None else []

    if rank == 0:
        click.echo(f'Training options:\n{_summary(opts, config, dataset, world_size, run_dir)}')
    if kwargs['dry_run']:
        if rank == 0:
            click.echo('\n'.join(notes + ['Dry run; exiting.']))
        return

    try:
        log_handlers = _setup_logging(run_dir, rank)
    except OSError as err:
        from dnnlib.util import write_cause
        raise click.ClickException(f'Cannot write {os.path.join(run_dir, "log.txt")}: {write_cause(err)}.') from None
    log = logging.getLogger('training')
    for note in notes:
        log.info(note)
    from tqdm import tqdm   # a bar over kimg on rank 0 (disabled when stderr is not a terminal)
    from tqdm.contrib.logging import logging_redirect_tqdm
    bar = tqdm(total=round(config['total_kimg'], 3), unit='kimg', disable=None if rank == 0 else True,
               dynamic_ncols=True, bar_format='{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}]')
    stop_signals.install()   # until the process group is gone: a launcher may forward the signal late
    try:
        with logging_redirect_tqdm(loggers=[log]):   # log lines above the progress bar, not through it
            result = training_loop.training_loop(
                run_dir=run_dir, device=device, options=opts, stop_signals=stop_signals, **config,
                progress_fn=lambda cur_nimg, total_nimg: bar.update(min(cur_nimg, total_nimg) / 1000 - bar.n))
            if result['preempted']:
                log.info(f'Stopped by {result["preempted"]} at {result["cur_nimg"] / 1000:g} kimg with the '
                         f'training state {result["state"]}; run the same command to continue (exit code '
                         f'{preemption.PREEMPTED_EXIT_CODE}: preempted).')
    except (training_loop.TrainingError, checkpoint.CheckpointError, NetworkLoadError) as err:
        log.error(first_line(err))
        raise click.ClickException(first_line(err)) from None
    finally:
        bar.close()
        for handler in log_handlers:
            log.removeHandler(handler)
            handler.close()
        dist.shutdown()
        stop_signals.restore()
    if result['preempted']:
        raise click.exceptions.Exit(preemption.PREEMPTED_EXIT_CODE)


def _open_dataset(opts: dict) -> dict:
    """Open the dataset once; return the facts build_config needs. Bad data -> one-line ClickException."""
    from training.dataset import open_dataset
    kwargs = opt_lib.dataset_kwargs(opts)
    try:
        ds = open_dataset(**kwargs)
    except Exception as err:  # any failure to read user-supplied data is reported, never a traceback
        message = first_line(err)
        if opts['cond']:
            try:
                open_dataset(**dict(kwargs, use_labels=False)).close()
            except Exception:
                pass
            else:
                raise click.ClickException(f'--cond requires class labels in {opts["data"]}: {message}')
        raise click.ClickException(f'--data {opts["data"]}: {message}')
    try:
        facts = opt_lib.dataset_facts(ds)
    except Exception as err:
        raise click.ClickException(f'--data {opts["data"]}: {first_line(err)}')
    finally:
        ds.close()
    return facts


def _pick_run_dir(outdir: str, desc: str, nosubdir: bool) -> str:
    """EDM's numbering: OUTDIR/NNNNN-desc with NNNNN one above the largest existing run id."""
    if nosubdir:
        return outdir
    from training.checkpoint import RUN_DIR_RE, newest_run_dir
    newest = newest_run_dir(outdir)
    run_id = int(RUN_DIR_RE.match(os.path.basename(newest)).group(1)) + 1 if newest is not None else 0
    run_dir = os.path.join(outdir, f'{run_id:05d}-{desc}')
    if os.path.exists(run_dir):
        raise click.ClickException(f'Run directory {run_dir} already exists.')
    return run_dir


def _summary(opts: dict, config: dict, dataset: dict, world_size: int, run_dir: str) -> str:
    net = config['network_kwargs']
    sampler = config['sigma_sampler_kwargs']
    weighting = opt_lib.resolve_weighting(opts)
    if opts['weighting'] == 'uncertainty':
        weighting = f'uncertainty: {weighting} times the learned 1/e^u(σ)'
    lines = [
        f'  Output directory:     {run_dir}',
        f'  Preset:               {opts.get("preset") or "-"}',
        f'  Dataset:              {opts["data"]} ({dataset["size"]} items of shape '
        f'{"x".join(map(str, dataset["shape"]))}, {dataset["endpoint"]}, labels {dataset["label_dim"]})',
        f'  Network:              {net["class_name"].rsplit(".", 1)[-1]} / {net.get("model_type")} '
        f'channels {net.get("model_channels")} x {net.get("channel_mult")}',
        f'  Loss:                 {config["loss_kwargs"]["class_name"].rsplit(".", 1)[-1]} '
        f'(weighting {weighting})',
        f'  σ distribution:       {opts["sigma_dist"]}'
        + (f' ({sampler["class_name"].rsplit(".", 1)[-1]})' if sampler else ' (the loss\'s own)'),
        f'  Training length:      {config["total_kimg"]:g} kimg',
        f'  Batch:                {config["batch_size"]} = {world_size} rank(s) x {config["batch_gpu"]} x '
        f'{config["accumulation_rounds"]} round(s)',
        f'  Seed:                 {config["seed"]}',
        f'  Resume:               {config.get("resume_state") or config.get("resume_pkl") or "-"}',
    ]
    return '\n'.join(lines)


class _LogFileHandler(logging.FileHandler):
    """log.txt: a record the file system refuses (full disk, file-size limit) is dropped without the
    logging module's traceback; the console still shows it, and the failed write that matters (a snapshot
    or state) stops the run with one line."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


def _setup_logging(run_dir: str, rank: int) -> list[logging.Handler]:
    """Rank 0: `training` log to the console and to RUN_DIR/log.txt (appended). Other ranks stay quiet."""
    log = logging.getLogger('training')
    log.setLevel(logging.INFO)
    log.propagate = False
    if rank != 0:
        handler: logging.Handler = logging.NullHandler()
        log.addHandler(handler)
        return [handler]
    os.makedirs(run_dir, exist_ok=True)
    console = logging.StreamHandler(sys.stdout)   # routed through tqdm.write while the bar runs (main)
    console.setFormatter(logging.Formatter('%(message)s'))
    file = _LogFileHandler(os.path.join(run_dir, 'log.txt'), mode='a', encoding='utf-8')
    file.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%Y-%m-%d %H:%M:%S'))
    for handler in (console, file):
        log.addHandler(handler)
    return [console, file]


if __name__ == '__main__':
    from cli_common import run_cli
    run_cli(main)
