"""Persistent classes: objects that remember their constructor arguments.

`@persistent_class` records `_init_args` / `_init_kwargs` on every instance so that a snapshot can
store an object as (class name, constructor arguments, parameters) -- the record layout of EDM's
network pickles -- and rebuild it later without executing code from the file.
"""
from __future__ import annotations

import copy
import functools

_persistent_classes: set[type] = set()


def persistent_class(cls: type) -> type:
    """Class decorator: make instances record a deep copy of their constructor arguments."""
    orig_init = cls.__init__

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        self._init_args = copy.deepcopy(args)
        self._init_kwargs = copy.deepcopy(kwargs)

    cls.__init__ = __init__
    _persistent_classes.add(cls)
    return cls


def is_persistent(obj) -> bool:
    """True if `obj` is an instance (or subclass) of a persistent class."""
    t = obj if isinstance(obj, type) else type(obj)
    return any(issubclass(t, c) for c in _persistent_classes)
