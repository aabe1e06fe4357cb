"""The training loop: EDM's optimisation schedule with a pluggable σ-sampler (InfoNoise or fixed).

One call of `training_loop(**config)` (config = `training.options.build_config(...)`) trains a network:
Adam with a linear learning-rate ramp-up, an EMA whose half-life ramps up with the images seen,
gradient accumulation over `accumulation_rounds` rounds of `batch_gpu` images per rank (DDP gradient
all-reduce only in the last round), non-finite gradients zeroed, and EDM's tick / snapshot / state-dump
schedule. The σ of every training example is drawn by `loss_fn.sigma_sampler`; each round's unweighted
per-example errors are passed to `sigma_sampler.observe` and `sigma_sampler.step()` runs once per
optimizer step (a refresh appends one line to infonoise.jsonl).

The loop reads as the data path: `build_run` builds the objects, `train_step` performs one optimizer step,
`write_checkpoints` writes snapshots and states; everything that can end training early (stop signals, a loss
that stays NaN/Inf, a failed write) sits behind `training.preemption.RunGuard`.

Files in the run directory (rank 0): training_options.json, stats.jsonl (one line per tick),
infonoise.jsonl (one line per σ-sampler refresh), network snapshots and training states (see
`training.checkpoint`), and at the end an optional sample grid (samples.png) and the profile plot
(infonoise-profile.png). Messages go to the `training` logger; the CLI decides where they appear.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import psutil
import torch
from torch.profiler import record_function

import dnnlib
from dnnlib import util
from torch_utils import distributed as dist
from torch_utils import misc, training_stats
from training import checkpoint, image_grid, preemption
from training.dataset import RESIDENT_MAX_BYTES, ResidentBatches, open_dataset, resident_nbytes
from training.fast_paths import (apply_fast_paths, autocast_network, maybe_compile, nan_to_num_grads_,
                                 optimizer_kwargs_for, resolve_fast_paths, set_optimizer_impl_)
from training.options import schedule_name
from training.preemption import TrainingError

logger = logging.getLogger('training')

NONFINITE_LIMIT = 50   # consecutive optimizer steps with a non-finite loss before training stops


# ----------------------------------------------------------------------------------------------
# Plain data -> objects.

def build_sigma_sampler(kwargs: Mapping[str, Any] | None, device: torch.device | None = None) -> Any:
    """Construct a σ-sampler from `training.options.sigma_sampler_kwargs` data (None -> None).

    Nested entries: 'grid' -> infonoise.SigmaGrid(**grid); 'base' -> a sampler built recursively;
    'weighting' + 'sigma_data' (+ 'min_snr_gamma') -> weight_fn = infonoise.get_weight(...).
    """
    if kwargs is None:
        return None
    import infonoise
    kwargs = dict(kwargs)
    class_name = kwargs.pop('class_name')
    if 'grid' in kwargs:
        kwargs['grid'] = infonoise.SigmaGrid(**kwargs['grid'])
    if 'base' in kwargs:
        kwargs['base'] = build_sigma_sampler(kwargs['base'])
    if 'weighting' in kwargs:
        kwargs['weight_fn'] = infonoise.get_weight(kwargs.pop('weighting'), kwargs.pop('sigma_data', 0.5),
                                                   kwargs.pop('min_snr_gamma', 5.0))
    if 'grid' in kwargs and device is not None:
        kwargs['device'] = device
    return dnnlib.util.construct_class_by_name(class_name=class_name, **kwargs)


def sampler_summary(profile: Mapping[str, Any] | None) -> dict:
    """pivot, σ at the peak of π per unit log σ (the bin of largest mass; bins are log-spaced), the
    entropy of π's bin masses normalised by log K (1 = log-uniform, 0 = one bin), and the number of
    starved bins (below min_count at the last refresh attempt; 0 when not starved)."""
    if not profile or profile.get('pi') is None:
        return dict(pivot=float('nan'), peak=float('nan'), entropy=float('nan'), starved=0)
    starved = int(profile.get('starved_bins', 0)) if profile.get('starved') else 0
    pi = np.asarray(profile.get('pi'), dtype=np.float64)
    sigma = np.asarray(profile.get('sigma'), dtype=np.float64)
    edges = np.asarray(profile.get('edges'), dtype=np.float64)
    pivot = float('nan') if profile.get('pivot') is None else float(profile['pivot'])
    if pi.size == 0 or not np.all(np.isfinite(pi)):
        return dict(pivot=pivot, peak=float('nan'), entropy=float('nan'), starved=starved)
    mass = pi * np.diff(edges)
    mass = mass / mass.sum() if mass.sum() > 0 else mass
    nz = mass[mass > 0]
    entropy = float(-(nz * np.log(nz)).sum() / math.log(len(mass))) if len(mass) > 1 else float('nan')
    return dict(pivot=pivot, peak=float(sigma[int(np.argmax(mass))]), entropy=entropy, starved=starved)


def _profile(sampler: Any) -> dict | None:
    fn = getattr(sampler, 'profile', None)
    return fn() if callable(fn) else None


def _no_buffer_sync_kwargs() -> dict:
    """DDP kwargs that skip per-forward buffer broadcasts (EDM's broadcast_buffers=False; newer torch
    spells it forward_sync_buffers). Our buffers are constants, so their sync at construction is harmless."""
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    return dict(forward_sync_buffers=False) if 'forward_sync_buffers' in params else dict(broadcast_buffers=False)


def configure_backends(device: torch.device, cudnn_benchmark: bool, deterministic: bool) -> None:
    """The backend settings of a training run (cuDNN benchmark, no TF32 or reduced-precision matmuls,
    deterministic algorithms on request); scripts/bench_train.py applies the same to its network-only step."""
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark) and not deterministic
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True


# ----------------------------------------------------------------------------------------------
# The run: everything built from the config, one training step, checkpoints.

@dataclasses.dataclass
class Run:
    """The objects of a training run (see `build_run`) and its position."""
    dataset: Any                 # The training dataset.
    data_sampler: Any            # misc.InfiniteSampler over it (its position goes into training states).
    data_iter: Any               # Batches of (uint8 images, labels), batch_gpu per rank.
    net: torch.nn.Module         # The trained network (its parameters are what Adam updates).
    loss_net: Any                # What the loss calls: net, wrapped by DDP / torch.compile / autocast as asked.
    ema: torch.nn.Module         # The EMA copy of net.
    loss_fn: Any                 # The loss; its σ-sampler is `sigma_sampler`.
    sigma_sampler: Any           # The σ-sampler (None when the loss draws σ itself).
    optimizer: torch.optim.Optimizer
    augment_pipe: Any            # None = no augmentation.
    ddp: torch.nn.Module         # net, or its DistributedDataParallel wrapper (gradient sync control).
    loss_params: list = dataclasses.field(default_factory=list)   # The loss's own trained parameters (EDM2's
                                 # u(σ) of --weighting uncertainty), optimised with the network, kept in states.
    cur_nimg: int = 0            # Images trained on so far.
    cur_tick: int = 0            # Ticks so far.

    def __post_init__(self) -> None:
        self.params = list(self.net.parameters())
        self.ema_params = list(self.ema.parameters())
        self.param_values = [p.detach() for p in self.params]   # views of the live parameters, for the EMA


def build_run(config: Mapping[str, Any], *, batch_gpu: int, fast: Mapping[str, Any], device: torch.device,
              options: Mapping[str, Any] | None = None, stop_signals: Any = None) -> Run:
    """Dataset and data stream, network, loss, σ-sampler, optimizer, augmentation and EMA of a run (config: the
    `training_loop` kwargs), with the network weights of `resume_pkl` or everything of the training state
    `resume_state` (read first, so that a bad file fails before anything is built; the random state is restored
    last, as the set-up may consume random numbers differently on a resume). Profiler ranges: startup:data,
    startup:network."""
    state, seed = None, config['seed']
    if config.get('resume_state') is not None:
        state = checkpoint.load_training_state(config['resume_state'])
        checkpoint.check_compatible(state, config, config['resume_state'], options)
        if int(state['cur_nimg']) >= int(round(config['total_kimg'] * 1000)):
            raise TrainingError(f'The resumed state is already at {int(state["cur_nimg"]) / 1000:g} kimg, which '
                                f'reaches the training length of {config["total_kimg"]:g} kimg; pass a longer '
                                f'--duration.')
    rank, world_size = dist.get_rank(), dist.get_world_size()
    with record_function('startup:data'):
        logger.info('Loading dataset...')
        dataset = open_dataset(dict(config['dataset_kwargs']))
        data_sampler = misc.InfiniteSampler(dataset=dataset, rank=rank, num_replicas=world_size, seed=seed)
        if state is not None:
            data_sampler.load_state_dict(state['data'])
        loader = _data_loader(dataset, data_sampler, config['dataset_kwargs'], config['data_loader_kwargs'],
                              batch_gpu, device, stop_signals)
    with record_function('startup:network'):
        logger.info('Constructing network...')
        net = dnnlib.util.construct_class_by_name(**config['network_kwargs'], img_resolution=dataset.resolution,
                                                  img_channels=dataset.num_channels, label_dim=dataset.label_dim)
        net.train().requires_grad_(True).to(device)
        apply_fast_paths(net, sdpa=fast['sdpa'], channels_last=fast['channels_last'])
        logger.info(f'Network: {type(net).__name__} with {sum(p.numel() for p in net.parameters()):,} parameters.')
        loss_fn = dnnlib.util.construct_class_by_name(**config['loss_kwargs'])
        sigma_sampler = build_sigma_sampler(config['sigma_sampler_kwargs'], device)
        if sigma_sampler is not None:
            loss_fn.sigma_sampler = sigma_sampler
        optimizer_kwargs = optimizer_kwargs_for(config['optimizer_kwargs'], fast['fused_adam'])
        loss_params = loss_fn.trainable_parameters(device) if hasattr(loss_fn, 'trainable_parameters') else []
        optimizer = dnnlib.util.construct_class_by_name(params=list(net.parameters()) + loss_params,
                                                        **optimizer_kwargs)
        augment = config['augment_kwargs']
        augment_pipe = dnnlib.util.construct_class_by_name(**augment) if augment is not None else None
        ddp = net
        if world_size > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device] if device.type == 'cuda' else None, **_no_buffer_sync_kwargs())
        ema = copy.deepcopy(net).eval().requires_grad_(False)
        run = Run(dataset=dataset, data_sampler=data_sampler, data_iter=None, net=net, loss_net=None, ema=ema,
                  loss_fn=loss_fn, sigma_sampler=getattr(loss_fn, 'sigma_sampler', None), optimizer=optimizer,
                  augment_pipe=augment_pipe, ddp=ddp, loss_params=loss_params)
        if config.get('resume_pkl') is not None:   # transfer learning: the weights only
            from training.network_io import load_network
            logger.info(f'Loading network weights from "{config["resume_pkl"]}"...')
            source = load_network(config['resume_pkl'], device='cpu')['ema']
            logger.info(f'Copied {checkpoint.copy_params_and_buffers(source, net)} tensors.')
            checkpoint.copy_params_and_buffers(source, ema)
            del source
        if state is not None:
            logger.info(f'Resuming from "{config["resume_state"]}" at {state["cur_nimg"] / 1000:g} kimg...')
            try:
                net.load_state_dict(state['net'])
                ema.load_state_dict(state['ema'])
                with torch.no_grad():
                    for p, saved_p in zip(loss_params, state.get('loss_params') or []):
                        p.copy_(saved_p)
                optimizer.load_state_dict(state['optimizer'])
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:   # a malformed state
                raise checkpoint.CheckpointError(f'--resume: the network or optimizer state in '
                                                 f'{config["resume_state"]} does not fit this network '
                                                 f'({dnnlib.util.first_line(exc)}).') from exc
            set_optimizer_impl_(optimizer, fast['fused_adam'])   # this run's choice, not the saved run's
            run.cur_nimg, run.cur_tick = int(state['cur_nimg']), int(state['cur_tick'])
        compile_kwargs = {} if fast['compile_mode'] is None else dict(mode=fast['compile_mode'])
        train_net = maybe_compile(ddp, fast['compile'], **compile_kwargs)
        run.loss_net = autocast_network(train_net, device, torch.bfloat16 if fast['bf16'] else None)
        run.data_iter = iter(loader)
        if state is not None:
            _restore_random_state(state['ranks'], run, seed, rank, world_size)
    return run


def _data_loader(dataset: Any, data_sampler: Any, dataset_kwargs: Mapping, data_loader_kwargs: Mapping,
                 batch_gpu: int, device: torch.device, stop_signals: Any) -> Any:
    """A cached dataset that fits is held on the device (`ResidentBatches`: the same batches as the
    DataLoader, bitwise, without per-item loading or host copies); otherwise torch's DataLoader."""
    workers = int(data_loader_kwargs.get('num_workers', 1))
    resident = data_loader_kwargs.get('resident')
    if resident is None:
        resident = bool(dict(dataset_kwargs).get('cache')) and resident_nbytes(dataset) <= RESIDENT_MAX_BYTES
    if resident:
        logger.info(f'Holding the dataset on {device.type} ({resident_nbytes(dataset) / 2 ** 20:.1f} MiB)...')
        return ResidentBatches(dataset, data_sampler, batch_gpu, device, num_workers=workers)
    return torch.utils.data.DataLoader(
        dataset=dataset, sampler=data_sampler, batch_size=batch_gpu, num_workers=workers,
        pin_memory=device.type == 'cuda', prefetch_factor=2 if workers > 0 else None,
        persistent_workers=workers > 0,
        worker_init_fn=preemption.worker_init_fn(stop_signals) if workers > 0 else None)


def _restore_random_state(saved: Sequence[Mapping], run: Run, seed: int, rank: int, world_size: int) -> None:
    if len(saved) != world_size:
        logger.warning(f'The state was written by {len(saved)} rank(s), this run has {world_size}; '
                       f'continuing, but not bitwise identically.')
    mine = saved[rank] if rank < len(saved) else None
    if mine is None:
        misc.seed_all(misc.rank_seed(seed + run.cur_nimg, rank, world_size))
        return
    misc.set_rng_state(mine['rng'])
    if run.sigma_sampler is not None and mine.get('sigma_sampler') is not None:
        run.sigma_sampler.load_state_dict(mine['sigma_sampler'])


def train_step(run: Run, *, rounds: int, batch_gpu: int, batch_size: int, loss_scaling: float, lr: float,
               ema_beta: float, device: torch.device) -> tuple[torch.Tensor, bool]:
    """One optimizer step: `rounds` accumulation rounds of `batch_gpu` images (the DDP gradient all-reduce in
    the last), non-finite gradients zeroed, Adam at `lr`, the σ-sampler's step, the EMA update.

    Returns (the step's summed loss on the device, whether the σ-sampler refreshed its table). Profiler ranges
    (torch.profiler.record_function, free when no profiler runs): data, forward, stats, sampler, backward,
    nonfinite, optimizer, ema.
    """
    with record_function('optimizer'):
        run.optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), dtype=torch.float32, device=device)
    for round_idx in range(rounds):
        with misc.ddp_sync(run.ddp, round_idx == rounds - 1):
            with record_function('data'):
                images, labels = next(run.data_iter)
                images = images.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1
                labels = labels.to(device, non_blocking=True)
            with record_function('forward'):
                terms = run.loss_fn.compute(net=run.loss_net, images=images, labels=labels,
                                            augment_pipe=run.augment_pipe)
            with record_function('stats'):
                training_stats.report('Loss/loss', terms.loss)
            with record_function('sampler'):
                if run.sigma_sampler is not None:
                    run.sigma_sampler.observe(terms.sigma, terms.error)
            with record_function('backward'):
                loss_sum = terms.loss.sum()
                loss_sum.mul(loss_scaling / (batch_gpu * rounds)).backward()
                step_loss += loss_sum.detach().float()
    with record_function('nonfinite'):   # bitwise as EDM's per-tensor nan_to_num
        if run.loss_params and dist.get_world_size() > 1:   # u(σ) lives outside DDP: average its gradients here
            for p in run.loss_params:
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(dist.get_world_size())
        nan_to_num_grads_([p.grad for p in run.params + run.loss_params], nan=0, posinf=1e5, neginf=-1e5)
    with record_function('optimizer'):
        for group in run.optimizer.param_groups:
            group['lr'] = lr
        run.optimizer.step()
    with record_function('sampler'):
        refreshed = run.sigma_sampler is not None and bool(run.sigma_sampler.step())
    with record_function('ema'), torch.no_grad():
        torch._foreach_lerp_(run.ema_params, run.param_values, 1 - ema_beta)
    run.cur_nimg += batch_size
    return step_loss, refreshed


def write_checkpoints(run: Run, guard: preemption.RunGuard, *, run_dir: str, snapshot: bool, state: bool,
                      profile_json: dict | None, config: Mapping, options: Mapping | None, start_nimg: int,
                      last: dict) -> None:
    """A network snapshot (ema, loss_fn, augment_pipe, dataset_kwargs, infonoise profile) and/or a training
    state (every rank's RNG and σ-sampler state gathered), written by rank 0 through `guard`; `last` gets
    the paths written."""
    rank, world_size, kimg = dist.get_rank(), dist.get_world_size(), run.cur_nimg // 1000
    if snapshot:
        misc.check_ddp_consistency(run.ema)
        if rank == 0:
            path = checkpoint.snapshot_path(run_dir, kimg)
            if guard.write(checkpoint.save_network_snapshot, path, ema=run.ema, loss_fn=run.loss_fn,
                           augment_pipe=run.augment_pipe, dataset_kwargs=config['dataset_kwargs'],
                           infonoise=profile_json):
                last['snapshot'] = path
    if state:
        sampler = run.sigma_sampler
        mine = dict(rng=misc.get_rng_state(),
                    sigma_sampler=sampler.state_dict() if hasattr(sampler, 'state_dict') else None)
        ranks = [mine] * world_size   # every rank's, indexed by rank
        if world_size > 1:
            torch.distributed.all_gather_object(ranks, mine)
        data_state = run.data_sampler.state_dict(num_consumed=(run.cur_nimg - start_nimg) // world_size)
        if rank == 0:
            path = checkpoint.state_path(run_dir, kimg)
            saved = checkpoint.make_training_state(
                net=run.net, ema=run.ema, optimizer=run.optimizer, augment_pipe=run.augment_pipe, ranks=ranks,
                cur_nimg=run.cur_nimg, cur_tick=run.cur_tick + 1, config=config, options=options,
                extra=dict(data=data_state, loss_params=[p.detach().cpu() for p in run.loss_params]))
            if guard.write(checkpoint.save_training_state, path, saved):
                last['state'] = path


# ----------------------------------------------------------------------------------------------
# The loop.

def training_loop(
    run_dir: str = '.',                 # Output directory (rank 0 writes; other ranks may pass None).
    dataset_kwargs: Mapping = {},       # Dataset: class_name + constructor kwargs (the dataset's own dataset_kwargs).
    data_loader_kwargs: Mapping = {},   # num_workers; resident (None: auto, True/False: force the device copy).
    network_kwargs: Mapping = {},       # Network: class_name + constructor kwargs (resolution/channels/labels added).
    loss_kwargs: Mapping = {},          # Loss: class_name + constructor kwargs.
    sigma_sampler_kwargs: Mapping | None = None,  # σ-sampler data (see build_sigma_sampler); None = the loss's own.
    optimizer_kwargs: Mapping = {},     # Optimizer: class_name + kwargs (lr is the post-ramp-up value).
    augment_kwargs: Mapping | None = None,  # Augment pipe: class_name + kwargs; None = no augmentation.
    seed: int = 0,                      # Run seed (per-rank seeds derive from it).
    batch_size: int = 512,              # Total batch over all ranks and accumulation rounds.
    batch_gpu: int = 512,               # Images per rank per round (computed by training.options.batch_per_rank).
    accumulation_rounds: int = 1,       # Rounds per step (idem); batch_size = ranks x batch_gpu x rounds.
    total_kimg: float = 200000,         # Training length in thousands of images.
    ema_halflife_kimg: float = 500,     # EMA half-life.
    ema_rampup_ratio: float | None = 0.05,  # Half-life at most this fraction of the images seen; None = no ramp-up.
    lr_rampup_kimg: float = 10000,      # Linear learning-rate ramp-up length.
    loss_scaling: float = 1,            # Multiplier of the loss before backward.
    kimg_per_tick: float = 50,          # Status-line interval.
    snapshot_ticks: int | None = 50,    # Network snapshot every this many ticks (None = never).
    state_dump_ticks: int | None = 500,  # Training state every this many ticks (None = never).
    cudnn_benchmark: bool = True,       # torch.backends.cudnn.benchmark.
    fast_paths: Mapping | None = None,  # Speed settings (keys of training.fast_paths.FAST_PATH_DEFAULTS).
    deterministic: bool = False,        # torch deterministic algorithms.
    grid_size: int = 0,                 # Images in the final sample grid (0 = none).
    grid_steps: int = 18,               # Heun steps for the sample grid.
    plot_profile: bool = True,          # Plot the InfoNoise profile at the end (infonoise-profile.png).
    resume_pkl: str | None = None,      # Network snapshot to initialise net and EMA from (transfer learning).
    resume_state: str | None = None,    # Training state to continue exactly.
    device: torch.device | str | None = None,  # None = torch_utils.distributed.device().
    options: Mapping | None = None,     # Resolved CLI options (stored in training states for --resume).
    nonfinite_limit: int = NONFINITE_LIMIT,  # Stop after this many consecutive non-finite losses.
    metrics: Sequence[str] = (),        # EMA-network metrics during training (metrics.jsonl); () = none.
    metrics_every_kimg: float = 10,     # Evaluate them every this many kimg (and at the end).
    metrics_num: int = 1000,            # Samples per evaluation.
    metrics_steps: int = 18,            # Heun σ levels per evaluation sample.
    metrics_guidance: float = 1.0,      # Classifier-free guidance weight W of the evaluation samples (1 = none).
    progress_fn: Callable[[int, int], None] | None = None,  # Called as progress_fn(cur_nimg, total_nimg) per step.
    stop_signals: Any = None,           # Installed training.preemption.StopSignals (see RunGuard); None = none.
) -> dict:
    """Train; returns dict(run_dir, cur_nimg, cur_tick, snapshot, state, preempted) describing the last outputs
    (preempted: the name of the stop signal that ended training early, else None)."""
    config = {k: v for k, v in locals().items()
              if k not in ('progress_fn', 'device', 'options', 'run_dir', 'stop_signals')}
    start_time = time.time()
    device = torch.device(device) if device is not None else dist.device()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    fast = resolve_fast_paths(fast_paths)
    configure_backends(device, cudnn_benchmark, deterministic)
    misc.seed_all(misc.rank_seed(seed, rank, world_size))
    _check_geometry(batch_size, batch_gpu, accumulation_rounds, world_size)
    total_nimg = int(round(total_kimg * 1000))
    run = build_run(config, batch_gpu=batch_gpu, fast=fast, device=device, options=options,
                    stop_signals=stop_signals)
    adaptive = bool(sigma_sampler_kwargs) and 'grid' in sigma_sampler_kwargs
    guard = preemption.RunGuard(stop_signals, nonfinite_limit, device)
    with record_function('startup:files'):
        logs = _open_logs(run_dir, guard, config, options, adaptive, bool(metrics))
        tracker = _metrics_tracker(config, run.cur_nimg, device)
        training_stats.reset()
        collector = training_stats.Collector(regex='.*')
    start_nimg = tick_start_nimg = run.cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    last, preempted = dict(run_dir=run_dir, snapshot=None, state=None), False
    logger.info(f'Training for {total_nimg / 1000:g} kimg ({batch_size} images per step, {accumulation_rounds} '
                f'round(s) of {batch_gpu} per rank, {world_size} rank(s))...')
    if progress_fn is not None:
        progress_fn(run.cur_nimg, total_nimg)
    try:
        while True:
            lr, ema_beta = _schedule(run.cur_nimg, batch_size, float(optimizer_kwargs['lr']), lr_rampup_kimg,
                                     ema_halflife_kimg, ema_rampup_ratio)
            step_loss, refreshed = train_step(run, rounds=accumulation_rounds, batch_gpu=batch_gpu,
                                              batch_size=batch_size, loss_scaling=loss_scaling, lr=lr,
                                              ema_beta=ema_beta, device=device)
            if refreshed:
                logs['infonoise'].append(lambda: _profile_json(_profile(run.sigma_sampler), kimg=run.cur_nimg / 1000))
            stop_signum = guard.after_step(step_loss, run.cur_nimg)
            if progress_fn is not None:
                progress_fn(run.cur_nimg, total_nimg)
            done = run.cur_nimg >= total_nimg
            if tracker is not None and tracker.due(run.cur_nimg, done):
                tick_start_time += _evaluate_metrics(tracker, run, logs['metrics'])   # not training time
            if not (done or stop_signum or run.cur_tick == 0 or run.cur_nimg >= tick_start_nimg + kimg_per_tick * 1e3):
                continue

            # Tick: statistics, status line, checkpoints; a stop signal ends training here with a state and a snapshot.
            stop_signum = guard.at_tick(run.cur_nimg)
            preempted = bool(stop_signum) and not done
            if preempted:
                logger.info(f'{preemption.signal_name(stop_signum)} received: stopping at {run.cur_nimg / 1000:g} '
                            f'kimg and saving a training state and a snapshot...')
            tick_end_time = time.time()
            profile = _profile(run.sigma_sampler)
            _tick_report(run, collector, profile, start_time, tick_start_time, tick_end_time, tick_start_nimg,
                         maintenance_time, device)
            write_checkpoints(
                run, guard, run_dir=run_dir, config=config, options=options, start_nimg=start_nimg, last=last,
                snapshot=snapshot_ticks is not None and (done or preempted or run.cur_tick % snapshot_ticks == 0),
                state=state_dump_ticks is not None and (
                    preempted or ((done or run.cur_tick % state_dump_ticks == 0) and run.cur_tick != 0)),
                profile_json=_profile_json(profile) if adaptive and rank == 0 else None)
            logs['stats'].append(dict(collector.as_dict(), timestamp=time.time()))
            run.cur_tick += 1
            tick_start_nimg, tick_start_time = run.cur_nimg, time.time()
            maintenance_time = tick_start_time - tick_end_time
            if done or preempted:
                break
    finally:
        for f in logs.values():
            f.close()
    if rank == 0 and not preempted:
        guard.write(_finish, run_dir, run.ema, run.sigma_sampler, adaptive and plot_profile, run.dataset, grid_size,
                    grid_steps, seed, device)
    guard.finish()   # every rank leaves together (rank 0 may still be writing), or fails with rank 0's error
    logger.info('Exiting...')
    return dict(last, cur_nimg=run.cur_nimg, cur_tick=run.cur_tick,
                preempted=preemption.signal_name(stop_signum) if preempted else None)


# ----------------------------------------------------------------------------------------------
# Helpers of the loop.

def _check_geometry(batch_size: int, batch_gpu: int, rounds: int, world_size: int) -> None:
    """TrainingError when the config's batch geometry does not make up `batch_size` on this many ranks (a config
    built for another world size)."""
    if batch_size != batch_gpu * rounds * world_size:
        raise TrainingError(f'batch_size={batch_size} is not ranks x batch_gpu x rounds '
                            f'({world_size} x {batch_gpu} x {rounds}).')


def _schedule(cur_nimg: int, batch_size: int, base_lr: float, lr_rampup_kimg: float, ema_halflife_kimg: float,
              ema_rampup_ratio: float | None) -> tuple[float, float]:
    """(learning rate, EMA decay β) of the step that starts at `cur_nimg`: a linear learning-rate ramp-up, and
    an EMA half-life of at most `ema_rampup_ratio` of the images seen."""
    lr = base_lr * min(cur_nimg / max(lr_rampup_kimg * 1000, 1e-8), 1)
    ema_halflife_nimg = ema_halflife_kimg * 1000
    if ema_rampup_ratio is not None:
        ema_halflife_nimg = min(ema_halflife_nimg, cur_nimg * ema_rampup_ratio)
    return lr, 0.5 ** (batch_size / max(ema_halflife_nimg, 1e-8))


def _open_logs(run_dir: str, guard: preemption.RunGuard, config: Mapping, options: Mapping | None,
               adaptive: bool, metrics: bool) -> dict[str, '_Log']:
    """Rank 0: the run directory (stale temporaries removed), training_options.json and the JSON-lines logs
    stats / infonoise / metrics (a log that is not written, as on the other ranks, ignores its rows)."""
    rank0 = dist.get_rank() == 0
    if rank0:
        os.makedirs(run_dir, exist_ok=True)
        stale = checkpoint.remove_stale_temporaries(run_dir)
        if stale:
            logger.info(f'Removed {len(stale)} temporary file(s) of writes that a kill interrupted.')
        guard.write(util.write_json, os.path.join(run_dir, 'training_options.json'),
                    dict(config, options=dict(options) if options is not None else None), indent=2, default=str)
    return {name: _Log(os.path.join(run_dir, f'{name}.jsonl') if wanted and rank0 else None, guard)
            for name, wanted in (('stats', True), ('infonoise', adaptive), ('metrics', metrics))}


def _metrics_tracker(config: Mapping[str, Any], cur_nimg: int, device: torch.device) -> Any:
    """The `--metrics` schedule (training.metrics.tracking), started at `cur_nimg`; None without metrics."""
    if not config['metrics']:
        return None
    from training.metrics.tracking import MetricsTracker
    tracker = MetricsTracker(config['metrics'], config['metrics_every_kimg'], config['metrics_num'],
                             config['dataset_kwargs'], seed=config['seed'], num_steps=config['metrics_steps'],
                             device=device, guidance=config.get('metrics_guidance', 1.0))
    tracker.start(cur_nimg)
    return tracker


def _evaluate_metrics(tracker: Any, run: Run, metrics_jsonl: '_Log') -> float:
    """Evaluate the due metrics of the EMA network on rank 0 (the others wait); returns the seconds taken."""
    eval_start = time.time()
    if dist.get_rank() == 0:
        try:
            rows = tracker.evaluate(run.ema, run.cur_nimg)
        except Exception as exc:   # an evaluation never costs the run: one line, training goes on
            rows = []
            tracker.start(run.cur_nimg)   # retried at the next --metrics-every point
            logger.warning(f'--metrics evaluation at {run.cur_nimg / 1000:g} kimg failed '
                           f'({dnnlib.util.first_line(exc)}); training goes on and tries again at the next '
                           f'evaluation point.')
        for row in rows:
            metrics_jsonl.append(row)
            logger.info(f'{row["metric"]} {row["value"]:.4g} at {row["kimg"]:g} kimg ({row["seconds"]:.1f} s)')
    else:
        tracker.start(run.cur_nimg)
    dist.barrier()
    return time.time() - eval_start


def _profile_json(profile: Mapping[str, Any] | None, **first: Any) -> dict | None:
    """`infonoise.profile_to_json(profile)` after the entries `first` (None without a profile)."""
    if profile is None:
        return None
    import infonoise
    return dict(first, **infonoise.profile_to_json(profile))


class _Log:
    """A JSON-lines log of rank 0 (stats, infonoise, metrics): whole lines only, failures to the guard; with
    path None nothing is written."""

    def __init__(self, path: str | None, guard: preemption.RunGuard) -> None:
        self.guard, self.file = guard, None
        if path is not None:
            guard.write(self._open, path)

    def _open(self, path: str) -> None:
        self.file = util.AppendFile(path)

    def append(self, row: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> None:
        """Append `row` (or `row()`, computed only when this log is written)."""
        if self.file is not None:
            self.guard.write(self.file.append, json.dumps(row() if callable(row) else row) + '\n')

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _tick_report(run: Run, collector: Any, profile: Mapping | None, start_time: float, tick_start_time: float,
                 tick_end_time: float, tick_start_nimg: int, maintenance_time: float, device: torch.device) -> None:
    """Report the tick's progress/timing/resource/sampler scalars (rank 0's count) and log the status line."""
    cur_tick, cur_nimg, summary = run.cur_tick, run.cur_nimg, sampler_summary(profile)
    tick_nimg = max(cur_nimg - tick_start_nimg, 1)
    stats = {
        'Progress/tick': cur_tick,
        'Progress/kimg': cur_nimg / 1e3,
        'Timing/total_sec': tick_end_time - start_time,
        'Timing/sec_per_tick': tick_end_time - tick_start_time,
        'Timing/sec_per_kimg': (tick_end_time - tick_start_time) / tick_nimg * 1e3,
        'Timing/maintenance_sec': maintenance_time,
        'Resources/cpu_mem_gb': psutil.Process(os.getpid()).memory_info().rss / 2 ** 30,
        'Resources/peak_gpu_mem_gb': (torch.cuda.max_memory_allocated(device) / 2 ** 30
                                      if device.type == 'cuda' else 0.0),
        'Sampler/pivot': summary['pivot'],
        'Sampler/peak_sigma': summary['peak'],
        'Sampler/entropy': summary['entropy'],
        'Sampler/starved_bins': summary['starved'],
    }
    for name, value in stats.items():
        training_stats.report0(name, value)
    collector.update()
    logger.info(_status_line(stats, collector, summary))
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()


def _status_line(stats: Mapping[str, float], collector: Any, summary: Mapping[str, float]) -> str:
    fields = [
        f'tick {int(stats["Progress/tick"]):<5d}',
        f'kimg {stats["Progress/kimg"]:<9.1f}',
        f'time {util.format_time(stats["Timing/total_sec"]):<12s}',
        f'sec/tick {stats["Timing/sec_per_tick"]:<7.1f}',
        f'sec/kimg {stats["Timing/sec_per_kimg"]:<7.2f}',
        f'maint {stats["Timing/maintenance_sec"]:<6.1f}',
        f'loss {collector.mean("Loss/loss"):<8.4f}',
        f'cpumem {stats["Resources/cpu_mem_gb"]:<6.2f}',
    ]
    if stats['Resources/peak_gpu_mem_gb']:
        fields.append(f'gpumem {stats["Resources/peak_gpu_mem_gb"]:<6.2f}')
    if math.isfinite(summary['peak']):
        if math.isfinite(summary['pivot']):   # rival schedules have no pivot
            fields.append(f'pivot {summary["pivot"]:<7.3g}')
        fields.append(f'peak {summary["peak"]:<7.3g} H(pi) {summary["entropy"]:.3f}')
    if summary.get('starved'):
        fields.append(f'starved {summary["starved"]} bins')
    return ' '.join(fields)


def _finish(run_dir: str, ema: torch.nn.Module, sigma_sampler: Any, adaptive: bool, dataset: Any,
            grid_size: int, grid_steps: int, seed: int, device: torch.device) -> None:
    """End-of-run extras on rank 0: sample grid (samples.png) and profile plot (infonoise-profile.png)."""
    if grid_size > 0:
        if ema.img_channels in image_grid.SUPPORTED_CHANNELS:
            images = image_grid.sample_images(ema, grid_size, seed=seed, num_steps=grid_steps, device=device)
            path = os.path.join(run_dir, 'samples.png')
            pad = 1 if ema.img_resolution <= 16 else 0   # tiny images are easier to tell apart with borders
            scale = max(1, 32 // ema.img_resolution)      # show at least 32 px per image
            image_grid.save_image_grid(images, path, image_grid.grid_width(ema, grid_size), pad=pad, scale=scale)
            logger.info(f'Saved a grid of {grid_size} samples to {path}.')
        else:
            logger.info(f'No sample grid: {ema.img_channels}-channel data is not an image.')
    if adaptive:
        try:
            from training.metrics.plotting import plot_profile
            path = os.path.join(run_dir, 'infonoise-profile.png')
            schedule = schedule_name(sigma_sampler)
            plot_profile(sigma_sampler.profile(), path, schedule=schedule)
            logger.info(f'Saved the {schedule} profile plot to {path}.')
        except ImportError as exc:
            logger.info(f'No profile plot ({exc}); install matplotlib (the "plot" extra) to get one.')
