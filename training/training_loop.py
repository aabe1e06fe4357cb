"""The training loop: EDM's optimisation schedule with a pluggable σ-sampler (InfoNoise or fixed).

One call of `training_loop(**config)` (config = `training.options.build_config(...)`) trains a network:
Adam with a linear learning-rate ramp-up, an EMA whose half-life ramps up with the images seen,
gradient accumulation over `accumulation_rounds` rounds of `batch_gpu` images per rank (DDP gradient
all-reduce only in the last round), non-finite gradients zeroed, and EDM's tick / snapshot / state-dump
schedule. The σ of every training example is drawn by `loss_fn.sigma_sampler`; each round's unweighted
per-example errors are passed to `sigma_sampler.observe` and `sigma_sampler.step()` runs once per
optimizer step (a refresh appends one line to infonoise.jsonl).

A stop signal (see `training.preemption`) ends training at one step that every rank agrees on, with a state
and a snapshot; a failed write (full disk, file-size limit) stops every rank with rank 0's one-sentence error.

Files in the run directory (rank 0): training_options.json, stats.jsonl (one line per tick),
infonoise.jsonl (one line per σ-sampler refresh), network snapshots and training states (see
`training.checkpoint`), and at the end an optional sample grid (samples.png) and the profile plot
(infonoise-profile.png). Messages go to the `training` logger; the CLI decides where they appear.
"""
from __future__ import annotations

import copy
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

import dnnlib
from dnnlib import util
from torch_utils import distributed as dist
from torch_utils import misc, training_stats
from training import checkpoint, image_grid, preemption
from training.dataset import RESIDENT_MAX_BYTES, ResidentBatches, resident_nbytes
from training.fast_paths import (apply_fast_paths, autocast_network, maybe_compile, nan_to_num_grads_,
                                 optimizer_kwargs_for, resolve_fast_paths, set_optimizer_impl_)

logger = logging.getLogger('training')

NONFINITE_LIMIT = 50   # consecutive optimizer steps with a non-finite loss before training stops


class TrainingError(RuntimeError):
    """Training cannot continue; the message is one sentence for the user."""


# ----------------------------------------------------------------------------------------------
# Plain data -> objects.

def build_sigma_sampler(kwargs: Mapping[str, Any] | None, device: torch.device | None = None) -> Any:
    """Construct a σ-sampler from `training.options.sigma_sampler_kwargs` data (None -> None).

    Nested entries: 'grid' -> infonoise.SigmaGrid(**grid); 'base' -> a sampler built recursively;
    'weighting' + 'sigma_data' -> weight_fn = infonoise.get_weight(weighting, sigma_data).
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
        kwargs['weight_fn'] = infonoise.get_weight(kwargs.pop('weighting'), kwargs.pop('sigma_data', 0.5))
    if 'grid' in kwargs and device is not None:
        kwargs['device'] = device
    return dnnlib.util.construct_class_by_name(class_name=class_name, **kwargs)


def open_training_dataset(dataset_kwargs: Mapping[str, Any]) -> Any:
    """The training dataset from its stored kwargs (class_name + constructor kwargs)."""
    from training.dataset import open_dataset
    return open_dataset(dict(dataset_kwargs))


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
    pivot = profile.get('pivot')
    pivot = float('nan') if pivot is None else float(pivot)
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


def _write_json_atomic(path: str, data: Any) -> None:
    with util.atomic_write(path) as f:
        f.write((json.dumps(data, indent=2, default=str) + '\n').encode('utf-8'))


def _gather(obj: Any) -> list:
    """Every rank's `obj`, indexed by rank (a single-element list without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


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
# The loop.

def training_loop(
    run_dir: str = '.',                 # Output directory (rank 0 writes; other ranks may pass None).
    dataset_kwargs: Mapping = {},       # Dataset: class_name + constructor kwargs (the dataset's own dataset_kwargs).
    data_loader_kwargs: Mapping = {},   # torch DataLoader options: num_workers (prefetch/pinning are set here).
    network_kwargs: Mapping = {},       # Network: class_name + constructor kwargs (resolution/channels/labels added).
    loss_kwargs: Mapping = {},          # Loss: class_name + constructor kwargs.
    sigma_sampler_kwargs: Mapping | None = None,  # σ-sampler data (see build_sigma_sampler); None = the loss's own.
    optimizer_kwargs: Mapping = {},     # Optimizer: class_name + kwargs (lr is the post-ramp-up value).
    augment_kwargs: Mapping | None = None,  # Augment pipe: class_name + kwargs; None = no augmentation.
    seed: int = 0,                      # Run seed (per-rank seeds derive from it).
    batch_size: int = 512,              # Total batch over all ranks and accumulation rounds.
    batch_gpu: int | None = None,       # Images per rank per round; None = batch_size / ranks.
    accumulation_rounds: int | None = None,  # Rounds per step; None = derived (must match batch_size).
    total_kimg: float = 200000,         # Training length in thousands of images.
    ema_halflife_kimg: float = 500,     # EMA half-life.
    ema_rampup_ratio: float | None = 0.05,  # Half-life at most this fraction of the images seen; None = no ramp-up.
    lr_rampup_kimg: float = 10000,      # Linear learning-rate ramp-up length.
    loss_scaling: float = 1,            # Multiplier of the loss before backward.
    kimg_per_tick: float = 50,          # Status-line interval.
    snapshot_ticks: int | None = 50,    # Network snapshot every this many ticks (None = never).
    state_dump_ticks: int | None = 500,  # Training state every this many ticks (None = never).
    cudnn_benchmark: bool = True,       # torch.backends.cudnn.benchmark.
    fast_paths: Mapping | None = None,  # Speed options (training.fast_paths.FAST_PATH_DEFAULTS keys); entries
                                        # missing here come from `options`, then from the defaults.
    deterministic: bool = False,        # torch deterministic algorithms.
    grid_size: int = 0,                 # Images in the final sample grid (0 = none).
    grid_steps: int = 18,               # Heun steps for the sample grid.
    plot_profile: bool = True,          # Plot the InfoNoise profile at the end (infonoise-profile.png).
    resume_pkl: str | None = None,      # Network snapshot to initialise net and EMA from (transfer learning).
    resume_state: str | None = None,    # Training state to continue exactly.
    device: torch.device | str | None = None,  # None = torch_utils.distributed.device().
    options: Mapping | None = None,     # Resolved CLI options (stored in training states for --resume).
    nonfinite_limit: int = NONFINITE_LIMIT,  # Stop after this many consecutive non-finite losses.
    metrics: Sequence[str] = (),        # Metrics of the EMA network during training (metrics.jsonl; see
                                        # training.metrics.tracking); () = none.
    metrics_every_kimg: float = 10,     # Evaluate them every this many kimg (and at the end).
    metrics_num: int = 1000,            # Samples per evaluation.
    metrics_steps: int = 18,            # Heun σ levels per evaluation sample.
    metrics_guidance: float = 1.0,      # Classifier-free guidance weight W of the evaluation samples (1 = none).
    progress_fn: Callable[[int, int], None] | None = None,  # Called as progress_fn(cur_nimg, total_nimg) per step.
    phase_timer: Callable[[str], None] | None = None,  # Benchmark hook, called as phase_timer(name) at the end of
                                        # each part of start-up (startup:data, startup:network, startup:files) and
                                        # of a step (other = the previous step's bookkeeping and tick, then
                                        # optimizer, data, forward, stats, sampler, backward, nonfinite, optimizer,
                                        # sampler, ema): the time since the previous call belongs to `name`.
    stop_signals: Any = None,           # A training.preemption.StopSignals (installed by the caller): once its
                                        # .signum is non-zero, every rank stops at one agreed step, dumps a state
                                        # and a snapshot, and the result says preempted. None = not preemptible.
) -> dict:
    """Train; returns dict(run_dir, cur_nimg, cur_tick, snapshot, state, preempted) describing the last outputs
    (preempted: the name of the stop signal that ended training early, else None)."""
    config = {k: v for k, v in locals().items()
              if k not in ('progress_fn', 'phase_timer', 'device', 'options', 'run_dir', 'stop_signals')}
    start_time = time.time()
    device = torch.device(device) if device is not None else dist.device()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    fast = resolve_fast_paths(fast_paths, options)
    lap = phase_timer if phase_timer is not None else _no_lap
    configure_backends(device, cudnn_benchmark, deterministic)
    misc.seed_all(misc.rank_seed(seed, rank, world_size))

    # Batch geometry.
    per_rank = batch_size // world_size
    batch_gpu = per_rank if batch_gpu is None or batch_gpu > per_rank else int(batch_gpu)
    rounds = per_rank // batch_gpu
    if batch_size != batch_gpu * rounds * world_size or (accumulation_rounds not in (None, rounds)):
        raise TrainingError(f'batch_size={batch_size} is not ranks x batch_gpu x rounds '
                            f'({world_size} x {batch_gpu} x {accumulation_rounds or rounds}).')
    total_nimg = int(round(total_kimg * 1000))

    # Resume: read the state first so that a bad file fails before anything is built.
    state = None
    if resume_state is not None:
        state = checkpoint.load_training_state(resume_state)
        checkpoint.check_compatible(state['config'], config, resume_state)

    # Data.
    logger.info('Loading dataset...')
    dataset = open_training_dataset(dataset_kwargs)
    data_sampler = misc.InfiniteSampler(dataset=dataset, rank=rank, num_replicas=world_size, seed=seed)
    if state is not None:
        data_sampler.load_state_dict(state['data'])
    workers = int(data_loader_kwargs.get('num_workers', 1))
    resident = data_loader_kwargs.get('resident')   # None: a cached dataset that fits is held on the device
    if resident is None:
        resident = bool(dict(dataset_kwargs).get('cache')) and resident_nbytes(dataset) <= RESIDENT_MAX_BYTES
    if resident:   # same batches as the DataLoader below, bitwise; no per-item loading or host copies
        logger.info(f'Holding the dataset on {device.type} ({resident_nbytes(dataset) / 2 ** 20:.1f} MiB)...')
        loader = ResidentBatches(dataset, data_sampler, batch_gpu, device, num_workers=workers)
    else:
        loader = torch.utils.data.DataLoader(
            dataset=dataset, sampler=data_sampler, batch_size=batch_gpu, num_workers=workers,
            pin_memory=device.type == 'cuda', prefetch_factor=2 if workers > 0 else None,
            persistent_workers=workers > 0,
            worker_init_fn=preemption.worker_init_fn(stop_signals) if workers > 0 else None)
    lap('startup:data')

    # Network, loss, σ-sampler, optimizer, augmentation.
    logger.info('Constructing network...')
    net = dnnlib.util.construct_class_by_name(**network_kwargs, img_resolution=dataset.resolution,
                                              img_channels=dataset.num_channels, label_dim=dataset.label_dim)
    net.train().requires_grad_(True).to(device)
    apply_fast_paths(net, sdpa=fast['sdpa'], channels_last=fast['channels_last'])
    num_params = sum(p.numel() for p in net.parameters())
    logger.info(f'Network: {type(net).__name__} with {num_params:,} parameters.')
    loss_fn = dnnlib.util.construct_class_by_name(**loss_kwargs)
    sigma_sampler = build_sigma_sampler(sigma_sampler_kwargs, device)
    if sigma_sampler is not None:
        loss_fn.sigma_sampler = sigma_sampler
    sigma_sampler = getattr(loss_fn, 'sigma_sampler', None)
    optimizer = dnnlib.util.construct_class_by_name(params=net.parameters(),
                                                    **optimizer_kwargs_for(optimizer_kwargs, fast['fused_adam']))
    augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs) if augment_kwargs is not None else None
    ddp = net
    if world_size > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device] if device.type == 'cuda' else None, **_no_buffer_sync_kwargs())
    ema = copy.deepcopy(net).eval().requires_grad_(False)

    # Transfer learning or exact resume.
    if resume_pkl is not None:
        from training.network_io import load_network
        logger.info(f'Loading network weights from "{resume_pkl}"...')
        source = load_network(resume_pkl, device='cpu')['ema']
        copied = checkpoint.copy_params_and_buffers(source, net)
        checkpoint.copy_params_and_buffers(source, ema)
        logger.info(f'Copied {copied} tensors.')
        del source
    cur_nimg, cur_tick = 0, 0
    if state is not None:
        logger.info(f'Resuming from "{resume_state}" at {state["cur_nimg"] / 1000:g} kimg...')
        net.load_state_dict(state['net'])
        ema.load_state_dict(state['ema'])
        optimizer.load_state_dict(state['optimizer'])
        set_optimizer_impl_(optimizer, fast['fused_adam'])   # this run's choice, not the saved run's
        cur_nimg, cur_tick = int(state['cur_nimg']), int(state['cur_tick'])

    compile_kwargs = {} if fast['compile_mode'] is None else dict(mode=fast['compile_mode'])
    train_net = maybe_compile(ddp, fast['compile'], **compile_kwargs)
    amp_dtype = torch.bfloat16 if fast['bf16'] else None
    loss_net = autocast_network(train_net, device, amp_dtype)   # mixed precision for the network alone
    data_iter = iter(loader)
    lap('startup:network')

    # Random state last: everything above may consume random numbers differently on a resume.
    if state is not None:
        saved = state['ranks']
        if len(saved) != world_size:
            logger.warning(f'The state was written by {len(saved)} rank(s), this run has {world_size}; '
                           f'continuing, but not bitwise identically.')
        mine = saved[rank] if rank < len(saved) else None
        if mine is not None:
            misc.set_rng_state(mine['rng'])
            if sigma_sampler is not None and mine.get('sigma_sampler') is not None:
                sigma_sampler.load_state_dict(mine['sigma_sampler'])
        else:
            misc.seed_all(misc.rank_seed(seed + cur_nimg, rank, world_size))
        del state

    if cur_nimg >= total_nimg:
        raise TrainingError(f'The resumed state is already at {cur_nimg / 1000:g} kimg, which reaches the training '
                            f'length of {total_nimg / 1000:g} kimg; pass a longer --duration.')

    # Output files. A failed write (full disk, file-size limit) is recorded by `guard` on rank 0 and skips the
    # later writes; every rank then stops at the next agreement point with its one-line message.
    adaptive = bool(sigma_sampler_kwargs) and 'grid' in sigma_sampler_kwargs
    guard = _WriteGuard()
    stats_jsonl = infonoise_jsonl = None
    if rank == 0:
        os.makedirs(run_dir, exist_ok=True)
        stale = checkpoint.remove_stale_temporaries(run_dir)
        if stale:
            logger.info(f'Removed {len(stale)} temporary file(s) of writes that a kill interrupted.')
        guard.call(_write_json_atomic, os.path.join(run_dir, 'training_options.json'),
                   dict(config, options=dict(options) if options is not None else None))
        stats_jsonl = _Log(os.path.join(run_dir, 'stats.jsonl'), guard)
        if adaptive:
            infonoise_jsonl = _Log(os.path.join(run_dir, 'infonoise.jsonl'), guard)
    tracker = metrics_jsonl = None
    if metrics:
        from training.metrics.tracking import MetricsTracker
        tracker = MetricsTracker(metrics, metrics_every_kimg, metrics_num, dataset_kwargs, seed=seed,
                                 num_steps=metrics_steps, device=device, guidance=metrics_guidance)
        tracker.start(cur_nimg)
        if rank == 0:
            metrics_jsonl = _Log(os.path.join(run_dir, 'metrics.jsonl'), guard)

    training_stats.reset()
    collector = training_stats.Collector(regex='.*')
    start_nimg = cur_nimg
    tick_start_nimg, tick_start_time = cur_nimg, time.time()
    maintenance_time = tick_start_time - start_time
    nonfinite_streak = torch.zeros((), dtype=torch.int64, device=device)
    check_every = max(1, min(25, nonfinite_limit // 2))
    base_lr = float(optimizer_kwargs['lr'])
    params = [p for p in net.parameters()]
    ema_params = [p for p in ema.parameters()]
    param_values = [p.detach() for p in params]   # views of the live parameters (updated in place) for the EMA
    last = dict(run_dir=run_dir, snapshot=None, state=None)
    stop_signum, preempted = 0, False
    batch_gpu_total = batch_gpu * rounds
    logger.info(f'Training for {total_nimg / 1000:g} kimg ({batch_size} images per step, '
                f'{rounds} round(s) of {batch_gpu} per rank, {world_size} rank(s))...')
    if progress_fn is not None:
        progress_fn(cur_nimg, total_nimg)
    lap('startup:files')

    try:
        step_idx = 0
        while True:
            lap('other')   # the previous step's bookkeeping, progress, evaluation and tick
            # Accumulate gradients.
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), dtype=torch.float32, device=device)
            lap('optimizer')
            for round_idx in range(rounds):
                with misc.ddp_sync(ddp, round_idx == rounds - 1):
                    images, labels = next(data_iter)
                    images = images.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1
                    labels = labels.to(device, non_blocking=True)
                    lap('data')
                    terms = loss_fn.compute(net=loss_net, images=images, labels=labels, augment_pipe=augment_pipe)
                    lap('forward')
                    training_stats.report('Loss/loss', terms.loss)
                    lap('stats')
                    if sigma_sampler is not None:
                        sigma_sampler.observe(terms.sigma, terms.error)
                    lap('sampler')
                    loss_sum = terms.loss.sum()
                    loss_sum.mul(loss_scaling / batch_gpu_total).backward()
                    step_loss += loss_sum.detach().float()
                    lap('backward')

            # Optimizer step with learning-rate ramp-up; non-finite gradients zeroed (bitwise as EDM's per-tensor
            # nan_to_num, see training.fast_paths.nan_to_num_grads_).
            nan_to_num_grads_([p.grad for p in params], nan=0, posinf=1e5, neginf=-1e5)
            lap('nonfinite')
            lr = base_lr * min(cur_nimg / max(lr_rampup_kimg * 1000, 1e-8), 1)
            for group in optimizer.param_groups:
                group['lr'] = lr
            optimizer.step()
            lap('optimizer')
            if sigma_sampler is not None and sigma_sampler.step() and infonoise_jsonl is not None:
                _log_refresh(infonoise_jsonl, sigma_sampler, cur_nimg + batch_size)
            lap('sampler')

            # EMA with ramp-up.
            ema_halflife_nimg = ema_halflife_kimg * 1000
            if ema_rampup_ratio is not None:
                ema_halflife_nimg = min(ema_halflife_nimg, cur_nimg * ema_rampup_ratio)
            ema_beta = 0.5 ** (batch_size / max(ema_halflife_nimg, 1e-8))
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, param_values, 1 - ema_beta)
            lap('ema')

            cur_nimg += batch_size
            step_idx += 1
            nonfinite_streak = torch.where(torch.isfinite(step_loss), 0, nonfinite_streak + 1)
            if step_idx % check_every == 0:
                stop_signum = _periodic_check(nonfinite_streak, nonfinite_limit, cur_nimg, stop_signals, guard)
            elif world_size == 1:
                stop_signum = _local_check(stop_signals, guard)   # one rank: nothing to agree on, no sync
            if progress_fn is not None:
                progress_fn(cur_nimg, total_nimg)

            done = cur_nimg >= total_nimg
            if tracker is not None and tracker.due(cur_nimg, done):
                eval_start = time.time()
                if rank == 0:
                    for row in tracker.evaluate(ema, cur_nimg):
                        metrics_jsonl.append(row)
                        logger.info(f'{row["metric"]} {row["value"]:.4g} at {row["kimg"]:g} kimg '
                                    f'({row["seconds"]:.1f} s)')
                else:
                    tracker.start(cur_nimg)
                dist.barrier()
                tick_start_time += time.time() - eval_start   # evaluation time is not training time
            if not done and not stop_signum and cur_tick != 0 and cur_nimg < tick_start_nimg + kimg_per_tick * 1000:
                continue

            # Tick: statistics, status line, checkpoints; a stop signal ends training here with a state and a snapshot.
            stop_signum = _periodic_check(nonfinite_streak, nonfinite_limit, cur_nimg, stop_signals, guard)
            preempted = bool(stop_signum) and not done
            if preempted:
                logger.info(f'{preemption.signal_name(stop_signum)} received: stopping at {cur_nimg / 1000:g} kimg '
                            f'and saving a training state and a snapshot...')
            tick_end_time = time.time()
            profile = _profile(sigma_sampler)
            summary = sampler_summary(profile)
            stats = _report_tick(cur_tick, cur_nimg, start_time, tick_start_time, tick_end_time, tick_start_nimg,
                                 maintenance_time, device, summary)
            collector.update()
            logger.info(_status_line(stats, collector, summary))
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats()
            kimg = cur_nimg // 1000
            profile_json = _profile_json(profile) if adaptive and rank == 0 else None

            if snapshot_ticks is not None and (done or preempted or cur_tick % snapshot_ticks == 0):
                misc.check_ddp_consistency(ema)
                if rank == 0:
                    path = checkpoint.snapshot_path(run_dir, kimg)
                    if guard.call(checkpoint.save_network_snapshot, path, ema=ema, loss_fn=loss_fn,
                                  augment_pipe=augment_pipe, dataset_kwargs=dataset_kwargs, infonoise=profile_json):
                        last['snapshot'] = path

            if state_dump_ticks is not None and (
                    preempted or ((done or cur_tick % state_dump_ticks == 0) and cur_tick != 0)):
                mine = dict(rng=misc.get_rng_state(),
                            sigma_sampler=sigma_sampler.state_dict() if hasattr(sigma_sampler, 'state_dict') else None)
                ranks = _gather(mine)
                data_state = data_sampler.state_dict(num_consumed=(cur_nimg - start_nimg) // world_size)
                if rank == 0:
                    path = checkpoint.state_path(run_dir, kimg)
                    state = checkpoint.make_training_state(
                        net=net, ema=ema, optimizer=optimizer, augment_pipe=augment_pipe, ranks=ranks,
                        cur_nimg=cur_nimg, cur_tick=cur_tick + 1, config=config, options=options,
                        extra=dict(data=data_state))
                    if guard.call(checkpoint.save_training_state, path, state):
                        last['state'] = path
                    del state

            if rank == 0:
                stats_jsonl.append(dict(collector.as_dict(), timestamp=time.time()))

            cur_tick += 1
            tick_start_nimg, tick_start_time = cur_nimg, time.time()
            maintenance_time = tick_start_time - tick_end_time
            if done or preempted:
                break
    finally:
        for f in (stats_jsonl, infonoise_jsonl, metrics_jsonl):
            if f is not None:
                f.close()

    if rank == 0 and not preempted:
        guard.call(_finish, run_dir, ema, sigma_sampler, adaptive and plot_profile, dataset, grid_size, grid_steps,
                   seed, device)
    _final_check(guard)   # every rank leaves together (rank 0 may still be writing), or fails with rank 0's error
    logger.info('Exiting...')
    return dict(last, cur_nimg=cur_nimg, cur_tick=cur_tick,
                preempted=preemption.signal_name(stop_signum) if preempted else None)


# ----------------------------------------------------------------------------------------------
# Helpers of the loop.

def _no_lap(name: str) -> None:
    """The default phase timer: nothing."""


def _profile_json(profile: Mapping[str, Any] | None) -> dict | None:
    if profile is None:
        return None
    import infonoise
    return infonoise.profile_to_json(profile)


def _log_refresh(f: '_Log', sampler: Any, nimg: int) -> None:
    f.append(dict(kimg=nimg / 1000, **_profile_json(sampler.profile())))


class _WriteGuard:
    """Rank 0's first failed write (`util.WriteError`: full disk, file-size limit, ...) as one sentence.

    After a failure, later writes are skipped (the files on disk stay as they were: the last complete
    snapshot and state) and the ranks stop together at the next `_periodic_check` / `_final_check`.
    """

    def __init__(self) -> None:
        self.message: str | None = None

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> bool:
        """fn(*args, **kwargs) unless a write failed already; False when it did not write."""
        if self.message is not None:
            return False
        try:
            fn(*args, **kwargs)
        except util.WriteError as err:
            self.message = str(err)
            return False
        return True


class _Log:
    """A JSON-lines log of rank 0 (stats.jsonl, infonoise.jsonl): whole lines only, failures to the guard."""

    def __init__(self, path: str, guard: _WriteGuard) -> None:
        self.guard, self.file = guard, None
        guard.call(self._open, path)

    def _open(self, path: str) -> None:
        self.file = util.AppendFile(path)

    def append(self, row: Mapping[str, Any]) -> None:
        if self.file is not None:
            self.guard.call(self.file.append, json.dumps(row) + '\n')

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _periodic_check(streak: torch.Tensor, limit: int, cur_nimg: int, stop_signals: Any, guard: _WriteGuard) -> int:
    """The check every rank makes at the same step (every few steps and at every tick); returns the agreed
    stop signal number (0: go on).

    One all-reduce (max) of [non-finite loss streak, stop signal number, rank 0's write failed]: the
    collective the divergence check needs anyway, so preemption and write failures add no synchronisation.
    Raises TrainingError (on every rank) for a failed write or a loss that stayed NaN/Inf `limit` steps.
    """
    signum = int(stop_signals.signum) if stop_signals is not None else 0
    flags = torch.cat([streak.reshape(1), torch.tensor([signum, int(guard.message is not None)],
                                                       dtype=streak.dtype, device=streak.device)])
    dist.all_reduce_(flags, 'max')
    value, signum, failed = (int(v) for v in flags.tolist())
    if failed:
        _final_check(guard)
    if value >= limit:
        raise TrainingError(f'The training loss was NaN/Inf for {value} consecutive steps '
                            f'(at {cur_nimg / 1000:g} kimg); training diverged, try a lower --lr.')
    return signum


def _local_check(stop_signals: Any, guard: _WriteGuard) -> int:
    """`_periodic_check` for one rank between its periodic steps: no collective, no device sync."""
    if guard.message is not None:
        raise TrainingError(guard.message)
    return int(stop_signals.signum) if stop_signals is not None else 0


def _final_check(guard: _WriteGuard) -> None:
    """Every rank waits for rank 0 and raises TrainingError with rank 0's write failure, if any."""
    message = dist.broadcast_object(guard.message) if dist.is_initialized() else guard.message
    if message is not None:
        raise TrainingError(message)


def _report_tick(cur_tick: int, cur_nimg: int, start_time: float, tick_start_time: float, tick_end_time: float,
                 tick_start_nimg: int, maintenance_time: float, device: torch.device, summary: Mapping) -> dict:
    """Report the tick's progress/timing/resource/sampler scalars (rank 0's count) and return them."""
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
    return stats


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
        fields.append(f'pivot {summary["pivot"]:<7.3g} peak {summary["peak"]:<7.3g} H(pi) {summary["entropy"]:.3f}')
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
            plot_profile(sigma_sampler.profile(), path)
            logger.info(f'Saved the InfoNoise profile plot to {path}.')
        except ImportError as exc:
            logger.info(f'No profile plot ({exc}); install matplotlib (the "plot" extra) to get one.')
