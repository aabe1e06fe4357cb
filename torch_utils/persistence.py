"""Persistent classes and network pickles in EDM's record format, loaded without running their code.

Writing. `@persistent_class` makes every instance record a deep copy of its constructor arguments
(`_init_args`, `_init_kwargs`) and makes pickling produce EDM's record: the object reduces to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with

    meta = dict(type='class', version=6, module_src=<source of the class's module, or ''>,
                class_name=<class name>, state=<obj.__dict__ minus the class's `_persistence_exclude`>)

so our snapshots have the layout of EDM's network pickles (an nn.Module's state holds `_parameters`,
`_buffers`, `_modules`, ...; children are pickled, and therefore rebuilt, before their parents).

Reading, safely: `load_network_pickle(f)` uses a restricted unpickler. Only a fixed set of globals can
be named by the file (tensor/storage/parameter rebuild functions, torch dtypes/devices/Size,
OrderedDict, EasyDict, a few builtins, NumPy array and scalar reconstruction, the persistent-record hook,
and torch.nn container classes, which are only ever turned into inert placeholders); anything else
raises `pickle.UnpicklingError` naming the global. Embedded `module_src` is never executed: each
persistent record becomes a placeholder, and each top-level record is rebuilt by calling the class
of the same name in the caller's `class_map` (default: every class decorated with `@persistent_class`
in this process, i.e. those of the modules the caller imported) with the recorded constructor
arguments, after which every parameter and persistent buffer gathered from the placeholder tree is
copied in (strictly: key sets and shapes must match). Class names outside the map are refused. This
module never imports the modules that define the classes: the caller supplies them.

Reading, trusted: `load_trusted_pickle(f)` is the reference's reconstruction path and DOES EXECUTE the
source embedded in the file. Use it only for pinned files whose content was verified (EDM's Inception-v3
detector pickle; `pinned_sha256` says how a pinned file earns trust).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import json
import logging
import os
import pickle
import re
import sys
import types
from typing import Any, BinaryIO, Mapping

import numpy as np
import torch

from dnnlib.util import EasyDict, atomic_write, check_constructor_kwargs

_log = logging.getLogger('training')
_FORMAT_VERSION = 6                     # EDM's persistence format version
_RECONSTRUCT = ('torch_utils.persistence', '_reconstruct_persistent_obj')

# Pinned files the trusted path may run: URL -> SHA-256 of the file's content (lower-case hex). Every pinned URL
# is an https:// URL (its content is trusted because the server proved who it is).
#
# How a pinned file earns trust (trust on first download, pinned privately):
# - a file this process downloads itself from the exact pinned URL may be run: the trust is the URL's. If a
#   digest is recorded here, the download must match it; otherwise its digest is recorded in the user's
#   private pin store (`pin_store_path()`; written atomically, mode 0600), never in the download cache, which
#   may be shared;
# - a file found in the download cache is run only if its digest is the one recorded here (when set; it then
#   wins over everything else), or, when none is recorded here, the user's private pin or a digest the user
#   vouches for in $INFONOISE_TRUSTED_SHA256 (comma-separated). So a file planted in a shared cache by
#   someone else, or a cached file changed after it was pinned, is refused before anything runs.
# The Inception-v3 detector's digest could not be obtained where this was written (no network, no published
# digest found), so it is None: the first download pins it privately.
pinned_sha256: dict[str, str | None] = {
    'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl':
        None,
}
pinned_urls = frozenset(pinned_sha256)    # the built-in table's URLs (tests may extend `pinned_sha256`)
TRUSTED_SHA256_ENV = 'INFONOISE_TRUSTED_SHA256'
PIN_STORE_ENV = 'INFONOISE_PIN_STORE'


class PinnedFileError(ValueError):
    """A pinned file's content does not have the recorded SHA-256 (or none is recorded); one sentence."""


def is_pinned(url: str) -> bool:
    """True if `url` is, exactly, a pinned URL (a file the trusted, code-running path may load once verified)."""
    return isinstance(url, str) and url in pinned_sha256


def pin_store_path() -> str:
    """The user's private pin store: $INFONOISE_PIN_STORE, else $XDG_CONFIG_HOME/infonoise/pins.json, else
    ~/.config/infonoise/pins.json. It lives outside the download cache on purpose (a cache folder may be shared)."""
    override = os.environ.get(PIN_STORE_ENV)
    if override:
        return os.path.abspath(override)
    config = os.environ.get('XDG_CONFIG_HOME') or os.path.join(os.path.expanduser('~'), '.config')
    return os.path.abspath(os.path.join(config, 'infonoise', 'pins.json'))


def _read_pin_store(path: str) -> dict[str, str]:
    """{url: digest} from the pin store; {} when it is missing, unreadable, malformed, or could have been written
    by someone else (not owned by this user, or writable by group or others): such pins are not the user's."""
    try:
        with open(path, 'rb') as f:
            info = os.fstat(f.fileno())
            if hasattr(os, 'getuid') and (info.st_uid != os.getuid() or info.st_mode & 0o022):
                return {}
            table = json.loads(f.read(1 << 20).decode('utf-8'))
    except (OSError, ValueError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {url: digest.lower() for url, digest in table.items()
            if isinstance(url, str) and isinstance(digest, str) and _HEX64.fullmatch(digest.lower())}


def private_pin(url: str) -> str | None:
    """The SHA-256 recorded for `url` in the user's private pin store, or None."""
    return _read_pin_store(pin_store_path()).get(url)


def record_private_pin(url: str, digest: str) -> str:
    """Record `digest` for `url` in the private pin store (atomically, mode 0600, folder 0700); returns the path.

    Raises OSError (one sentence naming the store) when it cannot be written."""
    if not _HEX64.fullmatch(digest):
        raise ValueError(f'{digest!r} is not a SHA-256 hex digest.')
    path = pin_store_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    table = {**_read_pin_store(path), url: digest}
    with atomic_write(path, mode=0o600) as f:       # private from its first byte
        f.write(json.dumps(table, indent=1, sort_keys=True).encode('utf-8'))
    return path


def check_pinned_content(url: str, data: bytes, name: str | None = None) -> None:
    """Raise PinnedFileError unless `data` (a file found on disk, e.g. in the download cache) is the pinned
    content of `url` (the rule above `pinned_sha256`). Only after this check may `load_trusted_pickle` run the
    file. `name` (the local file) is named in the message."""
    if not is_pinned(url):
        raise PinnedFileError(f'{url} is not a pinned file; it cannot be loaded with the trusted (code-running) path.')
    digest = hashlib.sha256(data).hexdigest()
    builtin = pinned_sha256[url]
    vouched = {d.strip().lower() for d in os.environ.get(TRUSTED_SHA256_ENV, '').split(',') if d.strip()}
    wanted = {builtin.lower()} if builtin else vouched | ({private_pin(url)} - {None})
    if digest in wanted:
        return
    where = name or url
    fix = (f'delete it to download it again from {url}, or, if you obtained it yourself from that URL, '
           f'set {TRUSTED_SHA256_ENV}={digest}')
    if builtin:
        raise PinnedFileError(f'Refusing to run {where}: its SHA-256 {digest} is not the digest recorded for {url} '
                              f'in this project (the file was altered or planted; delete it to download it again).')
    if not wanted:
        raise PinnedFileError(f'Refusing to run {where}: this user never downloaded it (no private pin in '
                              f'{pin_store_path()}), so its content (SHA-256 {digest}) cannot be verified; {fix}.')
    raise PinnedFileError(f'Refusing to run {where}: its SHA-256 {digest} is not the pinned digest of {url} '
                          f'(the file was altered or planted); {fix}.')


def accept_downloaded_content(url: str, data: bytes) -> str:
    """Trust on first download: `data` was just downloaded by this process from the pinned URL `url` itself.

    If `pinned_sha256` records a digest, `data` must match it (PinnedFileError otherwise). If none is recorded,
    the digest is written to the user's private pin store, so that later runs accept the cached copy only while
    it is unchanged. Returns the digest. An unwritable pin store is not an error: the bytes in hand may still
    be used; the cached copy will then be refused next time (with a message saying how to pin it).
    """
    if not is_pinned(url):
        raise PinnedFileError(f'{url} is not a pinned file; it cannot be loaded with the trusted (code-running) path.')
    digest = hashlib.sha256(data).hexdigest()
    builtin = pinned_sha256[url]
    if builtin:
        if digest != builtin.lower():
            raise PinnedFileError(f'Refusing to run the file just downloaded from {url}: its SHA-256 {digest} is '
                                  f'not the digest recorded for it in this project.')
        return digest
    previous = private_pin(url)
    if previous is not None and previous != digest:
        _log.warning('The content of %s changed since it was pinned (SHA-256 %s, now %s); pinning the new download.',
                     url, previous, digest)
    if previous != digest:
        try:
            record_private_pin(url, digest)
        except OSError as exc:
            _log.warning('Could not record the digest of %s in the pin store %s (%s); the cached copy will be '
                         'refused until you set %s=%s.', url, pin_store_path(), exc.strerror or exc,
                         TRUSTED_SHA256_ENV, digest)
    return digest


_HEX64 = re.compile(r'[0-9a-f]{64}')

_persistent_classes: list[type] = []           # in the order they were decorated
_module_sources: dict[str, str] = {}            # module name -> source text ('' when unavailable)
_trusted_modules: dict[str, types.ModuleType] = {}  # source text -> module created by the trusted path


# ===================================================================================================
# Writing: the decorator and the reduce.

def persistent_class(cls: type) -> type:
    """Class decorator: instances record a deep copy of their constructor arguments and pickle as
    EDM persistent records. Idempotent; the class itself is returned (no wrapper subclass)."""
    if not isinstance(cls, type):
        raise TypeError('persistent_class decorates classes.')
    if cls in _persistent_classes:
        return cls
    orig_init = cls.__init__

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        self._init_args = copy.deepcopy(args)
        self._init_kwargs = copy.deepcopy(kwargs)

    cls.__init__ = __init__
    cls.__reduce__ = _reduce_persistent
    _persistent_classes.append(cls)
    return cls


def is_persistent(obj: Any) -> bool:
    """True if `obj` is an instance (or subclass) of a persistent class."""
    t = obj if isinstance(obj, type) else type(obj)
    return any(issubclass(t, c) for c in _persistent_classes)


def _module_source(cls: type) -> str:
    """Source text of the module defining `cls` (cached), or '' when it cannot be read."""
    name = cls.__module__
    src = _module_sources.get(name)
    if src is None:
        try:
            src = inspect.getsource(sys.modules[name])
        except (KeyError, OSError, TypeError):
            src = ''
        _module_sources[name] = src
    return src


def _reduce_persistent(self: Any) -> tuple:
    state = self.__getstate__() if hasattr(self, '__getstate__') else self.__dict__
    if not isinstance(state, dict):
        raise TypeError(f'{type(self).__name__}: persistent objects must keep their state in __dict__.')
    excluded = set(getattr(type(self), '_persistence_exclude', ()))
    state = {key: value for key, value in state.items() if key not in excluded}
    meta = dict(type='class', version=_FORMAT_VERSION, module_src=_module_source(type(self)),
                class_name=type(self).__name__, state=state)
    return _reconstruct_persistent_obj, (meta,)


def _check_meta(meta: Any) -> dict:
    if not isinstance(meta, dict) or meta.get('type') != 'class':
        raise pickle.UnpicklingError('malformed persistent record (expected a dict with type="class").')
    version = meta.get('version')
    if not isinstance(version, int) or not 1 <= version <= _FORMAT_VERSION:
        raise pickle.UnpicklingError(f'persistent record has unsupported format version {version!r} '
                                     f'(this loader reads versions up to {_FORMAT_VERSION}).')
    if not isinstance(meta.get('class_name'), str) or not isinstance(meta.get('state'), dict):
        raise pickle.UnpicklingError('malformed persistent record (class_name must be a str and state a dict).')
    if not isinstance(meta.get('module_src', ''), str):
        raise pickle.UnpicklingError('malformed persistent record (module_src must be a str).')
    return meta


def _instantiate(cls: type, state: dict) -> Any:
    """Rebuild an instance of a live class from its pickled state (the reference's semantics).

    A class with `_persistence_exclude` is constructed from its recorded arguments first, so excluded
    attributes get their constructor defaults; the pickled state then overrides everything else.
    """
    if getattr(cls, '_persistence_exclude', ()) and isinstance(state.get('_init_kwargs'), dict):
        obj = cls(*state.get('_init_args') or (), **state['_init_kwargs'])
        obj.__dict__.update(state)
        return obj
    obj = cls.__new__(cls)
    setstate = getattr(obj, '__setstate__', None)
    if callable(setstate):
        setstate(state)
    else:
        obj.__dict__.update(state)
    return obj


def _reconstruct_persistent_obj(meta: dict) -> Any:
    """Pickle hook for persistent records met by a *plain* unpickler (and by copy.deepcopy).

    Only records whose embedded source equals the source of a class loaded in this process are
    rebuilt (the deepcopy / same-code case). Anything else is refused: use `load_network_pickle`
    (safe) or, for pinned files, `load_trusted_pickle`.
    """
    meta = _check_meta(meta)
    cls = next((c for c in reversed(_persistent_classes)     # the latest class of that name and source
                if c.__name__ == meta['class_name'] and _module_source(c) == meta.get('module_src', '')), None)
    if cls is None:
        raise pickle.UnpicklingError(
            f'persistent class {meta["class_name"]} was pickled from source that is not loaded in this process; '
            f'load the file with torch_utils.persistence.load_network_pickle (safe) or, for pinned files only, '
            f'load_trusted_pickle.')
    return _instantiate(cls, meta['state'])


def dump_network_pickle(obj: Any, f: BinaryIO | str | os.PathLike) -> None:
    """Write `obj` (usually the snapshot dict) as a network pickle; a path is written atomically."""
    with atomic_write(f) if isinstance(f, (str, os.PathLike)) else contextlib.nullcontext(f) as out:
        pickle.dump(obj, out, protocol=4)


# ===================================================================================================
# Class maps: which record class names the safe loader may rebuild, and with which class.

def persistent_classes() -> dict[str, type]:
    """Every class decorated with @persistent_class in this process, by name (the latest one of a name).

    This is `load_network_pickle`'s default class map: the caller decides what it holds by what it imports.
    Classes created by the trusted path (source executed from a file) are never included.
    """
    executed = {module.__name__ for module in _trusted_modules.values()}
    return {cls.__name__: cls for cls in _persistent_classes if cls.__module__ not in executed}


# ===================================================================================================
# Safe loading: placeholders, whitelist, rebuild.

@dataclasses.dataclass(eq=False)
class _PersistentRecord:
    """Inert stand-in for a persistent object read from a file: its class name and pickled state."""
    class_name: str
    state: dict


class _TorchModuleRecord:
    """Inert stand-in for a plain torch.nn module (e.g. ModuleDict) inside a persistent network.

    The unpickler creates it with __new__ and fills it with __setstate__; the real class never runs.
    """
    torch_class = 'torch.nn.Module'

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f'malformed state for {self.torch_class}.')
        self.state = state

    def __repr__(self) -> str:
        return f'<placeholder {self.torch_class}>'


@functools.cache
def _torch_module_record_type(module: str, name: str) -> type | None:
    """Placeholder type for `module.name` if that names a torch.nn module class (one per class), else None."""
    if not module.startswith('torch.nn.modules.'):
        return None
    try:
        target = getattr(importlib.import_module(module), name, None)
    except (ImportError, ValueError):
        return None
    if not (isinstance(target, type) and issubclass(target, torch.nn.Module)):
        return None
    return type(f'_Placeholder_{name}', (_TorchModuleRecord,), {'torch_class': f'{module}.{name}'})


def _no_hooks(hooks: Any) -> None:
    if hooks:
        raise pickle.UnpicklingError('refusing a tensor with backward hooks (they would be code from the file).')


def _safe_rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                         metadata=None):
    """torch._utils._rebuild_tensor and _rebuild_tensor_v2, refusing backward hooks and non-storages."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError('malformed tensor record (its storage is not a torch storage).')
    _no_hooks(backward_hooks)
    if metadata is not None and not isinstance(metadata, dict):
        raise pickle.UnpicklingError('malformed tensor record (metadata).')
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, bool(requires_grad),
                                           collections.OrderedDict(), metadata)


def _safe_rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """torch._utils._rebuild_parameter and _rebuild_parameter_with_state (whose extra Python state is refused)."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError('malformed parameter record (data is not a tensor).')
    _no_hooks(backward_hooks)
    if state:
        raise pickle.UnpicklingError('refusing a parameter with extra Python state.')
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _safe_codecs_encode(text, encoding='utf-8'):
    if not isinstance(text, str) or encoding != 'latin1':
        raise pickle.UnpicklingError('refusing _codecs.encode other than the latin1 form pickle uses for bytes.')
    return text.encode('latin1')


def _safe_copyreg_reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, _TorchModuleRecord) and base is object and state is None):
        raise pickle.UnpicklingError('refusing copyreg._reconstructor outside torch.nn placeholders.')
    return cls.__new__(cls)


def _safe_bytearray(data: Any = b'', encoding: str | None = None) -> bytearray:
    """bytearray from the bytes (or latin-1 text) stored in the file, never from a size: a 32-byte file must not
    allocate half a gigabyte."""
    if isinstance(data, bytes) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ('latin-1', 'latin1'):
        return bytearray(data, 'latin-1')
    raise pickle.UnpicklingError('refusing a bytearray built from anything but the bytes stored in the file.')


def _numpy_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}
    for module_name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        table[(module_name, '_reconstruct')] = np.ndarray.__reduce__(np.zeros(0))[0]
        table[(module_name, 'scalar')] = np.float64(0).__reduce__()[0]
    return table


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('builtins', 'slice'): slice,
    ('builtins', 'complex'): complex,
    ('builtins', 'bytearray'): _safe_bytearray,
    ('_codecs', 'encode'): _safe_codecs_encode,
    ('copyreg', '_reconstructor'): _safe_copyreg_reconstructor,
    ('dnnlib.util', 'EasyDict'): EasyDict,
    ('torch', 'Size'): torch.Size,
    ('torch', 'device'): torch.device,
    ('torch._utils', '_rebuild_tensor'): _safe_rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _safe_rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _safe_rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _safe_rebuild_parameter,
    **_numpy_globals(),
}


# Objects whose attributes are shared by the whole process: a BUILD opcode must never target them (setattr on
# the EasyDict class, a safe-listed function or a placeholder class would change every later load and use).
_SHARED_OBJECT_TYPES = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType,
                        functools.partial)


class _SafeUnpickler(pickle._Unpickler):
    """Unpickler that resolves only whitelisted globals and turns persistent records into placeholders.

    The pure-Python unpickler is used so that BUILD can be checked: its target must be an instance created
    by this load, never a class or a function from the safe list.
    """
    dispatch = dict(pickle._Unpickler.dispatch)

    def _load_build_checked(self) -> None:
        target = self.stack[-2] if len(self.stack) >= 2 else None
        if isinstance(target, _SHARED_OBJECT_TYPES) or target is None:
            name = getattr(target, '__qualname__', type(target).__name__)
            raise pickle.UnpicklingError(f'refusing to set attributes on {name}: the file may only fill in objects '
                                         f'it creates, never shared classes or functions.')
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = _load_build_checked

    def __init__(self, f: BinaryIO, map_location: torch.device, class_map: Mapping[str, type]) -> None:
        super().__init__(f)
        self._map_location = map_location
        self._class_map = class_map

    def _record_from_meta(self, meta: Any) -> _PersistentRecord:
        meta = _check_meta(meta)
        if meta['class_name'] not in self._class_map:
            raise pickle.UnpicklingError(f'unknown persistent class {meta["class_name"]} (refusing to execute code '
                                         f'from the file).')
        return _PersistentRecord(meta['class_name'], meta['state'])

    def _load_storage_from_bytes(self, data: Any) -> Any:
        if not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError('malformed storage record (expected bytes).')
        try:
            storage = torch.load(io.BytesIO(data), weights_only=True, map_location=self._map_location)
        except Exception as exc:   # reworded: torch's message advises loading the bytes unsafely
            raise pickle.UnpicklingError('malformed storage record (its bytes are not a plain torch storage).') from exc
        if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
            raise pickle.UnpicklingError('malformed storage record (it does not hold a torch storage).')
        return storage

    def find_class(self, module: str, name: str) -> Any:
        if module == '__builtin__':     # protocol 2 names builtins by their Python 2 module
            module = 'builtins'
        key = (module, name)
        if key == _RECONSTRUCT:
            return self._record_from_meta
        if key == ('torch.storage', '_load_from_bytes'):
            return self._load_storage_from_bytes
        if key in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[key]
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        placeholder = _torch_module_record_type(module, name)
        if placeholder is not None:
            return placeholder
        raise pickle.UnpicklingError(f'refusing to load global {module}.{name}: it is not on the safe list '
                                     f'of torch_utils.persistence.load_network_pickle.')


def _gather_tensors(record: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """state_dict-style {name: tensor} of a placeholder tree (parameters and persistent buffers)."""
    state = record.state
    skip = set(state.get('_non_persistent_buffers_set') or ())
    for kind, table in (('parameter', state.get('_parameters') or {}), ('buffer', state.get('_buffers') or {})):
        for key, value in table.items():
            if value is None or (kind == 'buffer' and key in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise pickle.UnpicklingError(f'{kind} {prefix}{key} in the file is not a tensor.')
            out[prefix + key] = value
    for key, child in (state.get('_modules') or {}).items():
        if child is None:
            continue
        if not isinstance(child, (_PersistentRecord, _TorchModuleRecord)):
            raise pickle.UnpicklingError(f'submodule {prefix}{key} in the file is not a module record.')
        _gather_tensors(child, f'{prefix}{key}.', out)


def _is_module_record(record: _PersistentRecord) -> bool:
    return isinstance(record.state.get('_parameters'), dict) and isinstance(record.state.get('_modules'), dict)


def _short(items: list[str], limit: int = 8) -> str:
    return ', '.join(items[:limit]) + (f', ... ({len(items)} in all)' if len(items) > limit else '')


def _check_tensors_match(own: Mapping[str, torch.Tensor], tensors: dict[str, torch.Tensor], class_name: str) -> None:
    """UnpicklingError unless the file's tensors have exactly the keys and shapes of the rebuilt network."""
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    parts = ([f'missing from the file: {_short(missing)}'] if missing else []) + \
            ([f'not in {class_name}: {_short(unexpected)}'] if unexpected else [])
    if parts:
        raise pickle.UnpicklingError(f'{class_name} rebuilt from its recorded arguments does not match the file '
                                     f'({"; ".join(parts)}).')
    wrong = [f'{k} {list(tensors[k].shape)} vs {list(own[k].shape)}' for k in own if tensors[k].shape != own[k].shape]
    if wrong:
        raise pickle.UnpicklingError(f'{class_name}: tensor shapes in the file differ from the rebuilt network '
                                     f'(file vs ours: {_short(wrong)}).')


@torch.no_grad()
def _load_tensors_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], class_name: str) -> None:
    own = module.state_dict(keep_vars=True)
    _check_tensors_match(own, tensors, class_name)
    params = {id(p) for p in module.parameters()}
    for key, target in own.items():
        target.copy_(tensors[key])
        if id(target) in params:
            target.requires_grad_(tensors[key].requires_grad)


def _check_argument_sizes(name: str, args: list, kwargs: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse recorded integers (widths, block counts, ...) far beyond what the file's tensors can hold, before
    even the meta-device build: 1e6 blocks would cost minutes and gigabytes of Python objects to lay out."""
    largest = max((int(d) for t in tensors.values() for d in t.shape), default=0)
    limit = max(4096, 4 * largest, 4 * len(tensors))

    def walk(key: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
            raise pickle.UnpicklingError(f'{name}: recorded argument {key}={value} is far larger than the file\'s '
                                         f'tensors allow (at most {limit}); refusing to build it.')
        if isinstance(value, (list, tuple)):
            for item in value:
                walk(key, item)
    for key, value in [*((f'#{index}', value) for index, value in enumerate(args)), *kwargs.items()]:
        walk(key, value)


def _construct(cls: type, name: str, args: list, kwargs: dict, device: str | None = None) -> Any:
    """`cls(*args, **kwargs)`, built under `device` when given ('meta': no memory for its tensors), without
    disturbing the caller's random stream; UnpicklingError (one sentence) when it fails."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device) if device else contextlib.nullcontext():
            return cls(*args, **kwargs)
    except Exception as exc:
        raise pickle.UnpicklingError(f'cannot rebuild {name} from its recorded arguments: '
                                     f'{type(exc).__name__}: {exc}') from exc


def _build(record: _PersistentRecord, memo: dict[int, Any], device: torch.device,
           class_map: Mapping[str, type]) -> Any:
    name = record.class_name
    args, kwargs = record.state.get('_init_args'), record.state.get('_init_kwargs')
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise pickle.UnpicklingError(f'persistent record {name} lacks its recorded constructor arguments.')
    if not all(isinstance(key, str) for key in kwargs):
        raise pickle.UnpicklingError(f'persistent record {name} has constructor argument names that are not strings.')
    args = _materialize(list(args), memo, device, class_map)
    kwargs = _materialize(dict(kwargs), memo, device, class_map)
    cls = class_map[name]
    try:        # the recorded arguments must fit the constructor's parameters before anything is built
        check_constructor_kwargs(cls, args, kwargs)
    except ValueError as exc:
        raise pickle.UnpicklingError(f'cannot rebuild {name} from its recorded arguments: {exc}') from None
    module_record = isinstance(cls, type) and issubclass(cls, torch.nn.Module) and _is_module_record(record)
    tensors: dict[str, torch.Tensor] = {}
    if module_record:   # recorded arguments that do not fit the file's tensors are refused before the real build
        _gather_tensors(record, '', tensors)
        _check_argument_sizes(name, args, kwargs, tensors)
        _check_tensors_match(_construct(cls, name, args, kwargs, 'meta').state_dict(keep_vars=True), tensors, name)
    obj = _construct(cls, name, args, kwargs)
    if module_record:
        _load_tensors_strict(obj, tensors, name)
        obj.train(bool(record.state.get('training', True)))
        obj.to(device)
    return obj


def _materialize(obj: Any, memo: dict[int, Any], device: torch.device, class_map: Mapping[str, type]) -> Any:
    """Replace placeholder records in a freshly unpickled structure by rebuilt objects."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _PersistentRecord):
        result = _build(obj, memo, device, class_map)
    elif isinstance(obj, _TorchModuleRecord):
        raise pickle.UnpicklingError(f'a bare {obj.torch_class} outside a persistent network cannot be rebuilt safely.')
    elif isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _materialize(obj[key], memo, device, class_map)
        result = obj
    elif isinstance(obj, list):
        obj[:] = [_materialize(item, memo, device, class_map) for item in obj]
        result = obj
    elif isinstance(obj, tuple):
        result = tuple(_materialize(item, memo, device, class_map) for item in obj)
    else:
        result = obj
    memo[id(obj)] = result
    return result


def _opened(f: BinaryIO | str | os.PathLike) -> Any:
    """A context manager for reading `f`: a path is opened (and closed), an open file is left open."""
    return open(f, 'rb') if isinstance(f, (str, os.PathLike)) else contextlib.nullcontext(f)


def load_network_pickle(f: BinaryIO | str | os.PathLike, allow_trusted: bool = False,
                        map_location: str | torch.device = 'cpu', class_map: Mapping[str, type] | None = None) -> Any:
    """Load a network pickle (ours or an official EDM one) without executing code from the file.

    Returns the unpickled object, usually a dict with 'ema', 'loss_fn', 'augment_pipe',
    'dataset_kwargs' (and our optional 'infonoise' profile), where every persistent object has been
    rebuilt with this project's class of the same name. Tensors and rebuilt networks are placed on
    `map_location` (a device). `class_map` (record class name -> class) names the classes the file may
    use; None means every @persistent_class imported in this process (`persistent_classes()`).

    Raises pickle.UnpicklingError (one sentence) for globals off the safe list, unknown persistent
    classes, malformed records, and networks whose tensors do not match their recorded arguments.

    allow_trusted=True: if the safe loader refuses the file, read it again with load_trusted_pickle,
    which EXECUTES code embedded in the file. Only for pinned files you trust.
    """
    device = torch.device(map_location)
    with _opened(f) as handle:
        if allow_trusted:   # held in memory, so that the trusted path can read the same bytes again
            handle = io.BytesIO(handle.read())
        try:
            classes = dict(persistent_classes() if class_map is None else class_map)
            raw = _SafeUnpickler(handle, device, classes).load()
            return _materialize(raw, {}, device, classes)
        except pickle.UnpicklingError:
            if not allow_trusted:
                raise
        handle.seek(0)
        return load_trusted_pickle(handle)


# ===================================================================================================
# Trusted loading (executes embedded source; pinned files only).

def _module_for_source(src: str) -> types.ModuleType:
    """The loaded module whose source is `src`, or a fresh module created by executing `src`."""
    for cls in _persistent_classes:
        if src and _module_source(cls) == src:
            return sys.modules[cls.__module__]
    module = _trusted_modules.get(src)
    if module is None:
        module_name = '_imported_module_' + hashlib.sha256(src.encode('utf-8')).hexdigest()[:16]
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module
        _module_sources[module_name] = src
        _trusted_modules[src] = module
        exec(compile(src, f'<{module_name}>', 'exec'), module.__dict__)  # trusted path: runs file code by design
    return module


def _trusted_reconstruct(meta: Any) -> Any:
    meta = _check_meta(meta)   # read by key: attributes of a shared class (e.g. EasyDict) are never consulted
    module = _module_for_source(meta.get('module_src', ''))
    cls = module.__dict__.get(meta['class_name'])
    if not isinstance(cls, type):
        raise pickle.UnpicklingError(f'the embedded source defines no class {meta["class_name"]}.')
    return _instantiate(persistent_class(cls), meta['state'])


class _TrustedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _RECONSTRUCT:
            return _trusted_reconstruct
        return super().find_class(module, name)


def load_trusted_pickle(f: BinaryIO | str | os.PathLike) -> Any:
    """Load a pickle the way EDM's reference does: persistent records EXECUTE their embedded source.

    WARNING: this runs arbitrary code from the file, like plain pickle.load. Use it only for pinned
    files whose content you trust (see `pinned_urls`, e.g. EDM's Inception-v3 detector). Every other
    file goes through load_network_pickle.
    """
    with _opened(f) as handle:
        return _TrustedUnpickler(handle).load()
