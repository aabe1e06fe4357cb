"""Generic utilities (placeholder: EasyDict only; the rest lands with issue 2's dnnlib work)."""
from __future__ import annotations

import importlib
from typing import Any


class EasyDict(dict):
    """dict whose items are also attributes: d.key == d['key']."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


def get_obj_by_name(name: str) -> Any:
    module_name, _, attr = name.rpartition('.')
    return getattr(importlib.import_module(module_name), attr)


def call_func_by_name(*args, func_name: str, **kwargs) -> Any:
    return get_obj_by_name(func_name)(*args, **kwargs)


def construct_class_by_name(*args, class_name: str, **kwargs) -> Any:
    return get_obj_by_name(class_name)(*args, **kwargs)


def open_url(*args, **kwargs):  # replaced by the full implementation
    raise NotImplementedError


def make_cache_dir_path(*paths: str) -> str:  # replaced by the full implementation
    raise NotImplementedError
