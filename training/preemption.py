"""Graceful preemption: a stop signal ends training at one step that every rank agrees on.

Clusters preempt a job with a signal (Slurm: SIGTERM, then SIGKILL after its KillWait, 30 s by default;
`--signal=USR1@SECONDS` warns earlier) and later requeue it with the same command line. `StopSignals`
records the first such signal; the training loop reads `signum` after every step and, with several ranks,
agrees on the stop through the small all-reduce it already makes every few steps (see
`training.training_loop`), dumps a training state and a snapshot, and train.py exits with
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

logger = logging.getLogger('training')

# EX_TEMPFAIL of sysexits.h ("temporary failure; the user is invited to retry"): not 0, which would tell a
# job chain that training finished, and not 1/2 (errors) or 128+N (killed by signal N), so a job script
# can requeue exactly on it: `python train.py ...; [ $? -eq 75 ] && scontrol requeue $SLURM_JOB_ID`.
PREEMPTED_EXIT_CODE = 75

DEFAULT_SIGNALS = ('SIGTERM', 'SIGUSR1')
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
    """Records the first of `names` that this process receives while installed (a context manager).

    `signum` is 0 until then, afterwards that signal's number (`name` its name). Handlers are installed
    only from the main thread (Python's rule); elsewhere `install` logs that preemption is not handled.
    """

    def __init__(self, names: Iterable[str] = DEFAULT_SIGNALS) -> None:
        self.names = parse_signals(list(names))   # Signals to handle, e.g. ('SIGTERM', 'SIGUSR1').
        self.signum = 0                           # First signal received (0: none yet).
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str | None:
        """Name of the received signal (None: none yet)."""
        return signal_name(self.signum) if self.signum else None

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

    def __enter__(self) -> 'StopSignals':
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()


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
