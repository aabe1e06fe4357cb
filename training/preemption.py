"""Graceful preemption: a stop signal ends training at one step that every rank agrees on.

Clusters preempt a job with a signal (Slurm: SIGTERM, then SIGKILL after its KillWait, 30 s by default;
`--signal=USR1@SECONDS` warns earlier) and later requeue it with the same command line. `StopSignals`
records the first such signal; `RunGuard` (called by the training loop after every step) reads `signum` and,
with several ranks, agrees on the stop through the small all-reduce it already makes every few steps for the
non-finite-loss check; the loop then dumps a training state and a snapshot, and train.py exits with
`PREEMPTED_EXIT_CODE`. Handlers only set a number (nothing else is safe inside a signal handler); repeats
are ignored, because a launcher that forwards the signal (torchrun) and the cluster (which signals every
process of the job) can deliver it twice.
"""
from __future__ import annotations

import functools
import logging
import signal
import threading
from typing import Any, Callable, Iterable

import torch

from dnnlib import util
from torch_utils import distributed as dist

logger = logging.getLogger('training')

# EX_TEMPFAIL of sysexits.h ("temporary failure; the user is invited to retry"): not 0, which would tell a
# job chain that training finished, and not 1/2 (errors) or 128+N (killed by signal N), so a job script
# can requeue exactly on it: `python train.py ...; [ $? -eq 75 ] && scontrol requeue $SLURM_JOB_ID`.
PREEMPTED_EXIT_CODE = 75

_UNCATCHABLE = ('SIGKILL', 'SIGSTOP')
_POSIX_ONLY = ('SIGUSR1', 'SIGUSR2', 'SIGHUP', 'SIGQUIT', 'SIGALRM')   # skipped where the platform lacks them


def parse_signals(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """'SIGTERM,SIGUSR1' (or 'TERM,usr1', or a list) -> ('SIGTERM', 'SIGUSR1'); 'none' or '' -> ().

    POSIX signals a platform lacks (SIGUSR1 on Windows) are left out. Raises ValueError (one sentence) for
    an unknown name or one that cannot be caught.
    """
    if text is None:
        return ()
    items = text.split(',') if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in (str(i).strip().upper() for i in items):
        if not item or item == 'NONE':
            continue
        name = item if item.startswith('SIG') else 'SIG' + item
        if name in _UNCATCHABLE:
            raise ValueError(f'{name} cannot be caught, so it cannot stop training gracefully; '
                             f'use SIGTERM or SIGUSR1.')
        if not isinstance(getattr(signal, name, None), signal.Signals):
            if name in _POSIX_ONLY:
                continue
            raise ValueError(f'Unknown signal {item!r}; expected names such as SIGTERM,SIGUSR1 (or none).')
        if name not in names:
            names.append(name)
    return tuple(names)


class StopSignals:
    """Records the first of `names` that this process receives between `install` and `restore`.

    `signum` is 0 until then, afterwards that signal's number. Handlers are installed
    only from the main thread (Python's rule); elsewhere `install` logs that preemption is not handled.
    """

    def __init__(self, names: str | Iterable[str] | None) -> None:
        self.names = parse_signals(names)         # Signals to handle, e.g. ('SIGTERM', 'SIGUSR1').
        self.signum = 0                           # First signal received (0: none yet).
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.signum:
            self.signum = signum

    def install(self) -> 'StopSignals':
        if not self.names:
            return self
        if threading.current_thread() is not threading.main_thread():
            logger.warning('Stop signals are handled only in the main thread; this run cannot be '
                           'preempted gracefully.')
            return self
        for name in self.names:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handler)
        return self

    def restore(self) -> None:
        """Put the previous handlers back (a signal received later acts as it did before `install`)."""
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


def signal_name(signum: int) -> str:
    """'SIGTERM' for 15 (the number itself, as text, for one Python does not name)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _ignore_in_worker(names: tuple[str, ...], worker_id: int) -> None:
    for name in names:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def worker_init_fn(stop: StopSignals | None) -> Callable[[int], None] | None:
    """A DataLoader worker_init_fn that makes data workers ignore the stop signals (None: nothing to do).

    A cluster signals every process of a job, data workers included; a worker killed by it would end
    training with a DataLoader error instead of the graceful stop. Workers still exit with their loader,
    or when the main process dies. Picklable, for spawned workers.
    """
    if stop is None or not stop.names:
        return None
    return functools.partial(_ignore_in_worker, stop.names)


class TrainingError(RuntimeError):
    """Training cannot continue; the message is one sentence for the user."""


class RunGuard:
    """Everything that can end training early, agreed by every rank: stop signals, a loss that stays
    non-finite, and rank 0's first failed write (`util.WriteError`: full disk, file-size limit, ...).

    The loop calls it at three points: `after_step` (every optimizer step), `at_tick` (every tick) and
    `finish` (the end). Writes go through `write`: after a failure later writes are skipped (the files on disk
    stay as they were: the last complete snapshot and state) and every rank stops at the next agreement.
    The agreement is one all-reduce (max) of [non-finite loss streak, stop signal number, write failed] every
    few steps and at every tick: the collective the divergence check needs anyway, so preemption and write
    failures add no synchronisation. A single rank checks its own signal and writes after every step.
    """

    def __init__(self,
        stop_signals: StopSignals | None,   # Installed by the caller; None = not preemptible.
        nonfinite_limit: int,               # Consecutive steps with a NaN/Inf loss before training stops.
        device: torch.device,               # Where the loss (and the streak) lives.
    ) -> None:
        self.stop_signals, self.limit = stop_signals, int(nonfinite_limit)
        self.check_every = max(1, min(25, self.limit // 2))
        self.streak = torch.zeros((), dtype=torch.int64, device=device)
        self.message: str | None = None    # rank 0's first failed write
        self.signum = 0                    # the agreed stop signal (0: go on)
        self.steps = 0

    def write(self, fn: Callable, *args: Any, **kwargs: Any) -> bool:
        """fn(*args, **kwargs) unless a write failed already; False when it did not write."""
        if self.message is not None:
            return False
        try:
            fn(*args, **kwargs)
        except util.WriteError as err:
            self.message = str(err)
            return False
        return True

    def after_step(self, step_loss: torch.Tensor, cur_nimg: int) -> int:
        """Count a non-finite step loss (on the device, no sync) and check when due; the agreed stop signal."""
        self.steps += 1
        self.streak = torch.where(torch.isfinite(step_loss), 0, self.streak + 1)
        if self.steps % self.check_every == 0:
            return self.at_tick(cur_nimg)
        if dist.get_world_size() == 1:   # one rank: nothing to agree on, no sync
            if self.message is not None:
                raise TrainingError(self.message)
            self.signum = int(self.stop_signals.signum) if self.stop_signals is not None else 0
        return self.signum

    def at_tick(self, cur_nimg: int) -> int:
        """The check every rank makes at the same step; raises TrainingError (on every rank) for a failed
        write or a loss that stayed NaN/Inf `limit` steps, else returns the agreed stop signal number."""
        signum = int(self.stop_signals.signum) if self.stop_signals is not None else 0
        flags = torch.cat([self.streak.reshape(1), torch.tensor([signum, int(self.message is not None)],
                                                                dtype=self.streak.dtype, device=self.streak.device)])
        dist.all_reduce_(flags, 'max')
        value, self.signum, failed = (int(v) for v in flags.tolist())
        if failed:
            self.finish()
        if value >= self.limit:
            raise TrainingError(f'The training loss was NaN/Inf for {value} consecutive steps '
                                f'(at {cur_nimg / 1000:g} kimg); training diverged, try a lower --lr.')
        return self.signum

    def finish(self) -> None:
        """Every rank waits for rank 0 and raises TrainingError with rank 0's write failure, if any."""
        message = dist.broadcast_object(self.message) if dist.is_initialized() else self.message
        if message is not None:
            raise TrainingError(message)
