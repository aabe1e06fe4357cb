"""A thread-safe build-once cache: the metrics keep classifiers, reference data and statistics in memory."""
from __future__ import annotations

import threading
from typing import Any, Callable, Hashable


class Memo:
    """`memo(key, build)` returns the value cached under `key`, calling `build()` the first time only.

    Builds run outside the lock (they may take long); when two threads build the same key at once, the
    first value stored wins and both return it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Hashable, Any] = {}

    def __call__(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
        value = build()
        with self._lock:
            return self._values.setdefault(key, value)
