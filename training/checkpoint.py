"""Checkpoint files of a training run: network snapshots, training states, resume discovery.

Run-directory layout (rank 0 writes; every write is atomic: temporary file, fsync, os.replace, so a
kill during a write leaves the previous files intact and never a truncated one):

  network-snapshot-{kimg:06d}.pkl  EDM's layout: dict(ema, loss_fn, augment_pipe, dataset_kwargs) plus
                                   `infonoise` (the latest σ-sampler profile as `profile_to_json` data,
                                   or None), pickled with `torch_utils.persistence.dump_network_pickle`.
  training-state-{kimg:06d}.pt     `torch.save` of plain data (tensors, numbers, strings, lists, dicts;
                                   loadable with weights_only=True): see `make_training_state`.

RNG states and data-stream positions of *every* rank are gathered to rank 0 and stored in the one
state file (key `ranks`, a list indexed by rank), so a state is a single self-contained file and
resuming on the same number of ranks restores every rank exactly. What `--resume` means: `plan_resume`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import os
import re
from typing import Any, Mapping

import torch

from dnnlib import util

SNAPSHOT_RE = re.compile(r'^network-snapshot-(\d+)\.pkl$')
STATE_RE = re.compile(r'^training-state-(\d+)\.pt$')
RUN_DIR_RE = re.compile(r'^(\d+)')       # numbered run directories: NNNNN-description (EDM's numbering)
AUTO = 'auto'                            # --resume auto: see plan_resume
STATE_FORMAT = 'infonoise-edm.training-state'
STATE_VERSION = 1

# Config entries that must match for a resumed run to continue the same training.
COMPAT_KEYS = ('network_kwargs', 'loss_kwargs', 'sigma_sampler_kwargs', 'optimizer_kwargs', 'augment_kwargs',
               'dataset_kwargs', 'batch_size', 'seed', 'lr_rampup_kimg', 'ema_halflife_kimg',
               'ema_rampup_ratio', 'loss_scaling')
# Dataset kwargs that change speed, not content.
_DATASET_IGNORED = ('cache',)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or belongs to a different configuration."""


def snapshot_path(run_dir: str, kimg: int) -> str:
    return os.path.join(run_dir, f'network-snapshot-{int(kimg):06d}.pkl')


def state_path(run_dir: str, kimg: int) -> str:
    return os.path.join(run_dir, f'training-state-{int(kimg):06d}.pt')


# ----------------------------------------------------------------------------------------------
# Network snapshots.

def save_network_snapshot(path: str, ema: torch.nn.Module, loss_fn: Any, augment_pipe: Any,
                          dataset_kwargs: Mapping[str, Any], infonoise: dict | None) -> None:
    """Write an EDM-layout network snapshot atomically (see module docstring); `ema` is stored as a CPU copy in
    eval mode without gradients."""
    from torch_utils import persistence
    data = dict(ema=copy.deepcopy(ema).eval().requires_grad_(False).cpu(), loss_fn=loss_fn, augment_pipe=augment_pipe,
                dataset_kwargs=dict(dataset_kwargs), infonoise=infonoise)
    with util.atomic_write(path) as f:
        persistence.dump_network_pickle(data, f)


# ----------------------------------------------------------------------------------------------
# Training states.

def make_training_state(*, net: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        augment_pipe: Any, ranks: list, cur_nimg: int, cur_tick: int,
                        config: Mapping[str, Any], options: Mapping[str, Any] | None,
                        extra: Mapping[str, Any] | None = None) -> dict:
    """The plain-data training state (what `save_training_state` writes).

    ranks:   per-rank dicts (index = rank) with that rank's RNG state, data-stream position and
             σ-sampler state (each rank observes its own losses, so sampler buffers differ per rank).
    config:  the `training_loop` kwargs; its compatibility view is stored.
    options: the resolved CLI options (lets `train.py --resume` reuse them).
    """
    return dict(
        format=STATE_FORMAT, version=STATE_VERSION,
        cur_nimg=int(cur_nimg), cur_tick=int(cur_tick), world_size=len(ranks),
        net=_cpu(net.state_dict()), ema=_cpu(ema.state_dict()), optimizer=_cpu(optimizer.state_dict()),
        augment_pipe=None if augment_pipe is None   # its constructor kwargs (AugmentPipe has no other state)
        else util.jsonable(getattr(augment_pipe, '_init_kwargs', {}), default=str),
        ranks=[_cpu(r) for r in ranks],
        config=compat_view(config), options=util.jsonable(options) if options is not None else None,
        **(extra or {}),
    )


def _cpu(obj: Any) -> Any:
    """Recursively move tensors to CPU (state dicts may live on the GPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_training_state(path: str, state: Mapping[str, Any]) -> None:
    """torch.save `state` to `path` atomically."""
    with util.atomic_write(path) as f:
        torch.save(dict(state), f)


def load_training_state(path: str, mmap: bool = False) -> dict:
    """Load and check a training state written by `save_training_state` (no code is executed).

    mmap=True maps tensors lazily (cheap when only the header entries are needed).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f'Training state {path} does not exist.')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated file, wrong format, refused by the weights-only unpickler
        first = safe_reason(exc)
        raise _unreadable(f'Cannot read training state {path}: {first}', first) from exc
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise _unreadable(f'{path} is not a training state written by this project\'s train.py.',
                          'not a training state of this project')
    version = state.get('version', -1)
    if not isinstance(version, int) or isinstance(version, bool) or version > STATE_VERSION:
        raise _unreadable(f'{path} has training-state version {version!r}, newer than this '
                          f'code understands ({STATE_VERSION}).', f'version {version!r} is not understood')
    problem = _state_problem(state)
    if problem is not None:
        raise _unreadable(f'{path} is a malformed training state ({problem}).', f'malformed: {problem}')
    return state


def safe_reason(exc: BaseException) -> str:
    """First line of an error message, never passing on a library's advice to load a file unsafely
    (PyTorch's weights_only=False, NumPy's allow_pickle=True)."""
    if re.search(r'weights_only|allow_pickle|unsafe|trust the source', str(exc), re.IGNORECASE):
        return ('it holds Python objects other than plain data (tensors, numbers, strings, lists, dicts), which '
                'are refused because loading them could run code from the file')
    return util.first_line(exc).rstrip('.')


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rng_problem(rng: Any) -> str | None:
    """Why a per-rank RNG state (misc.get_rng_state layout) cannot be restored; None when it can.
    Checked on throwaway generators, so the process's own streams are untouched."""
    import random
    import numpy as np
    if not isinstance(rng, dict):
        return 'an RNG state is not a dict'
    try:
        version, internal, gauss = rng['python']
        random.Random().setstate((int(version), tuple(int(v) for v in internal), gauss))
        npst = rng['numpy']
        keys = np.asarray(torch.as_tensor(npst['keys']).numpy(), dtype=np.uint32)
        np.random.RandomState().set_state((npst['kind'], keys, int(npst['pos']), int(npst['has_gauss']),
                                           float(npst['cached_gaussian'])))
        torch.Generator().set_state(torch.as_tensor(rng['torch'], dtype=torch.uint8).cpu())
    except Exception as exc:
        return f'an RNG state cannot be restored: {safe_reason(exc)}'
    return None


def _state_problem(state: dict) -> str | None:
    """What is missing or of the wrong kind in a loaded training state (None: the layout is sound)."""
    for key in ('cur_nimg', 'cur_tick'):
        if not _is_int(state.get(key)) or state[key] < 0:
            return f'{key} is not a non-negative integer'
    if not isinstance(state.get('config'), dict):
        return 'config is missing or not a dict'
    if state.get('options') is not None and not isinstance(state['options'], dict):
        return 'options is not a dict'
    for key in ('net', 'ema'):
        value = state.get(key)
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in value.items()):
            return f'{key} is missing or not a dict of tensors'
    optimizer = state.get('optimizer')
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get('state'), dict) \
            or not isinstance(optimizer.get('param_groups'), list):
        return 'optimizer is missing or not an optimizer state'
    ranks = state.get('ranks')
    if not isinstance(ranks, list) or not ranks or not all(isinstance(r, dict) for r in ranks):
        return 'ranks is missing or not a list of per-rank dicts'
    for rank_state in ranks:
        problem = _rng_problem(rank_state.get('rng'))
        if problem is not None:
            return problem
    data = state.get('data')
    if data is not None:
        if not isinstance(data, dict) or not all(_is_int(data.get(k)) and data[k] >= 0
                                                 for k in ('position', 'pass_start', 'size')):
            return 'the data-stream state is not a dict with non-negative position, pass_start and size'
        order = data.get('order')
        if order is not None and not (isinstance(order, torch.Tensor) and order.ndim == 1
                                      and not order.is_floating_point()):
            return 'the data-stream order is not a 1-D integer tensor'
        rng = data.get('rng')
        if rng is not None:
            try:
                from torch_utils.misc import _rng_state_from_plain
                import numpy as np
                np.random.RandomState().set_state(_rng_state_from_plain(rng))
            except Exception as exc:
                return f'the data-stream RNG state cannot be restored: {safe_reason(exc)}'
    return None


def _unreadable(message: str, reason: str) -> CheckpointError:
    err = CheckpointError(message)
    err.reason = reason   # the cause without the path, for "skipped X (reason)" lines
    return err


def list_states(run_dir: str) -> list[tuple[int, str]]:
    """(kimg, path) of every finished training state in `run_dir`, oldest first.

    Only exact names `training-state-NNNNNN.pt` count; temporary files of interrupted writes do not.
    """
    return sorted((int(m.group(1)), os.path.join(run_dir, name)) for name in os.listdir(run_dir)
                  if (m := STATE_RE.match(name)) and os.path.isfile(os.path.join(run_dir, name)))


@dataclasses.dataclass
class ResumePlan:
    """What `--resume` means for one invocation of train.py (see `plan_resume`)."""
    state: str | None = None        # Training-state file to continue from (None: start a new run).
    header: dict | None = None      # That state, loaded with mmap=True (tensors mapped lazily).
    run_dir: str | None = None      # Directory the run writes to (None: a new numbered one in the outdir).
    notes: list[str] = dataclasses.field(default_factory=list)  # Sentences for the log (skips, fresh start).


def newest_run_dir(outdir: str) -> str | None:
    """The highest-numbered run directory (NNNNN-*) in `outdir` (None: there is none)."""
    runs = [(int(m.group(1)), name) for name in (os.listdir(outdir) if os.path.isdir(outdir) else [])
            if (m := RUN_DIR_RE.match(name)) and os.path.isdir(os.path.join(outdir, name))]
    return os.path.join(outdir, max(runs)[1]) if runs else None


def plan_resume(resume: str, outdir: str, nosubdir: bool = False) -> ResumePlan:
    """Decide where a run with `--resume RESUME --outdir OUTDIR` continues from and writes to.

    RESUME is one of
      a training-state file: that state, which must load; the run writes to OUTDIR (nosubdir) or to a new
          numbered directory in it (EDM's behaviour);
      a directory, or a path that does not exist yet and does not end in .pt: its newest state that loads
          (each newer one that does not is skipped and named in `notes`); without any state a new run
          starts (and `notes` says so). The run writes to that directory (to OUTDIR with nosubdir), so the
          same command line continues the same run after every preemption;
      'auto': the directory above is OUTDIR itself with nosubdir, else OUTDIR's highest-numbered run
          directory; with none yet, a new run starts in a new numbered directory.
    Raises CheckpointError (one sentence) for a file that is not a loadable training state, or a directory
    whose states all fail to load (starting over there would silently discard them).
    """
    if resume == AUTO:
        directory = outdir if nosubdir else newest_run_dir(outdir)
        if directory is None:
            return ResumePlan(notes=[f'--resume auto: {outdir} holds no run yet; starting a new run.'])
    elif os.path.isfile(resume) or (not os.path.exists(resume) and resume.endswith('.pt')):
        if not os.path.exists(resume):
            raise CheckpointError(f'--resume: {resume} does not exist.')
        if not STATE_RE.match(os.path.basename(resume)):
            raise CheckpointError(f'--resume must name a training-state-*.pt file or a run directory, not {resume}.')
        return ResumePlan(state=resume, header=load_training_state(resume, mmap=True),
                          run_dir=outdir if nosubdir else None)
    else:
        directory = resume
    run_dir = outdir if nosubdir else directory
    states = list_states(directory) if os.path.isdir(directory) else []
    if not states:
        where = 'there' if os.path.abspath(run_dir) == os.path.abspath(directory) else f'in {run_dir}'
        return ResumePlan(run_dir=run_dir, notes=[f'--resume: {directory} holds no training state yet; '
                                                  f'starting a new run {where}.'])
    notes = []
    for _, path in reversed(states):
        try:
            header = load_training_state(path, mmap=True)
        except CheckpointError as err:
            notes.append(f'--resume: skipped {path}, which does not load ({getattr(err, "reason", err)}).')
            continue
        return ResumePlan(state=path, header=header, run_dir=run_dir, notes=notes)
    raise CheckpointError(f'--resume: none of the {len(states)} training state(s) in {directory} loads '
                          f'(newest: {states[-1][1]}); remove them to start over.')


def remove_stale_temporaries(run_dir: str) -> list[str]:
    """Delete temporary files that killed writes of snapshots and states left in `run_dir` (they can be as
    large as a state each); returns their paths. Only call this while no other process writes to run_dir."""
    removed = []
    for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
        m = util.TEMP_FILE_RE.match(name)
        if m and (SNAPSHOT_RE.match(m.group('name')) or STATE_RE.match(m.group('name'))):
            path = os.path.join(run_dir, name)
            with contextlib.suppress(FileNotFoundError):   # gone already
                os.remove(path)
                removed.append(path)
    return removed


# ----------------------------------------------------------------------------------------------
# Configuration compatibility.

def compat_view(config: Mapping[str, Any]) -> dict:
    """The part of a training config that a resumed run must share (JSON-normalised)."""
    view = {k: config.get(k) for k in COMPAT_KEYS}
    if isinstance(view.get('dataset_kwargs'), Mapping):
        view['dataset_kwargs'] = {k: v for k, v in view['dataset_kwargs'].items() if k not in _DATASET_IGNORED}
    return util.jsonable(view, sort_keys=True, default=str)


def first_difference(a: Any, b: Any, prefix: str = '') -> str | None:
    """Dotted path of the first entry where two JSON-like values differ (None if equal)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            diff = first_difference(a.get(key), b.get(key), f'{prefix}{key}.')
            if diff is not None:
                return diff
        return None
    if a != b:
        return f'{prefix.rstrip(".")} ({json.dumps(a)} vs {json.dumps(b)})'
    return None


def with_constructor_defaults(saved: Any, current: Any) -> Any:
    """`saved` (a stored config, JSON-like) plus every entry that only `current` has, where both name the same
    `class_name` and that class's constructor takes the entry with `current`'s value as its default. A state
    saved before a constructor parameter existed trained with its default, so it stays resumable at that
    default and nowhere else. The class is resolved by `dnnlib.util.resolve_class_name` (this project's table)."""
    if not (isinstance(saved, Mapping) and isinstance(current, Mapping)):
        return saved
    out = {k: with_constructor_defaults(v, current.get(k)) for k, v in saved.items()}
    name = saved.get('class_name')
    if name is None or name != current.get('class_name'):
        return out
    try:
        parameters = inspect.signature(util.resolve_class_name(name)).parameters
    except (TypeError, ValueError):
        return out
    for key in current.keys() - saved.keys():
        default = getattr(parameters.get(key), 'default', inspect.Parameter.empty)
        if default is not inspect.Parameter.empty and util.jsonable(default) == current[key]:
            out[key] = current[key]
    return out


def check_compatible(state: Mapping[str, Any], config: Mapping[str, Any], path: str,
                     options: Mapping[str, Any] | None = None) -> None:
    """The one resume rule: a resumed run trains what the saved run trained; CheckpointError otherwise.

    With train.py's resolved `options` on both sides, every recipe option (kind 'recipe' in
    `training.options.OPTIONS`: what is trained; execution options and the training length may change) must
    equal the saved one, and the first that differs is named as a flag. Then the config entries those options
    build (`COMPAT_KEYS`, JSON-normalised) must equal the saved view, which also covers runs started without
    train.py (`state['options']` None); an entry the saved view lacks counts as its constructor's default
    (`with_constructor_defaults`).
    """
    saved = state.get('options')
    if options is not None and saved:
        from training.options import OPTIONS, flag
        for o in OPTIONS:
            if o.kind != 'recipe' or o.name not in saved:
                continue
            if util.jsonable(saved[o.name]) != util.jsonable(options.get(o.name)):
                raise CheckpointError(f'--resume: {path} was trained with {flag(o.name)}={saved[o.name]!r}, not '
                                      f'{options.get(o.name)!r}; pass the same value or start a new run.')
    view = compat_view(config)
    diff = first_difference(with_constructor_defaults(dict(state['config']), view), view)
    if diff is not None:
        raise CheckpointError(f'--resume: {path} was trained with a different configuration '
                              f'(first difference: {diff}); pass matching options or start a new run.')


# ----------------------------------------------------------------------------------------------
# Transfer learning.

@torch.no_grad()
def copy_params_and_buffers(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    """Copy parameters and buffers with equal names and shapes from `src` into `dst`; returns how many."""
    src_tensors = dict([*src.named_parameters(), *src.named_buffers()])
    copied = 0
    for name, tensor in list(dst.named_parameters()) + list(dst.named_buffers()):
        other = src_tensors.get(name)
        if other is not None and other.shape == tensor.shape:
            tensor.copy_(other.detach().to(tensor.device, tensor.dtype))
            copied += 1
    return copied
