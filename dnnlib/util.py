"""Generic utilities: attribute dicts, construct-by-name, atomic file writes, and URL opening.

`open_url` understands local paths, `file://` URLs and `http(s)://` URLs. Downloads are retried with an
exponential back-off, written atomically, and kept in a cache directory under the name
`<md5 of the URL>_<sanitised file name>` (the layout of EDM's dnnlib cache, so an existing
`~/.cache/dnnlib/downloads` is reused). Library code here never prints; progress goes to the
`dnnlib` logger.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import inspect
import io
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any, BinaryIO, Iterator

_log = logging.getLogger('dnnlib')

# Retry policy for downloads: delay before attempt k+1 is min(_BACKOFF_START_S * 2**k, _BACKOFF_MAX_S).
_BACKOFF_START_S = 0.25
_BACKOFF_MAX_S = 10.0
_HTTP_TIMEOUT_S = 60.0
# HTTP statuses worth another attempt; any other 4xx is a permanent answer.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


# ---------------------------------------------------------------------------------------------------
# Attribute dict.

class EasyDict(dict):
    """dict whose items are also attributes: d.key == d['key']."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


# ---------------------------------------------------------------------------------------------------
# Objects by dotted name.

# The one fixed table of classes a stored or preset `class_name` may name: module -> its public classes
# (a class defined in that module, or for the `infonoise` package in one of its submodules). Names come
# from files (training states, snapshots, presets), so nothing outside this table is ever imported or called.
CONSTRUCTIBLE_MODULES: dict[str, str] = {
    'training.networks': 'network',
    'training.networks_dna': 'network',
    'training.loss': 'loss',
    'training.augment': 'augmentation',
    'training.dataset': 'dataset',
    'training.dataset_discrete': 'dataset',
    'training.mnist5k': 'dataset',
    'infonoise': 'σ-sampler',
}
CONSTRUCTIBLE_EXTRA: frozenset[str] = frozenset({'torch.optim.Adam', 'torch.optim.AdamW', 'torch.optim.SGD'})


def resolve_class_name(class_name: Any, kind: str | None = None) -> type:
    """The class a stored `class_name` names, if it is on this project's fixed table; else ValueError.

    The name is checked as a string before anything is imported: its module must be a key of
    `CONSTRUCTIBLE_MODULES` (or the whole name one of `CONSTRUCTIBLE_EXTRA`) and the last part a public
    identifier; the object found must be a class defined there. `kind` ('network', 'dataset', 'loss',
    'augmentation', 'σ-sampler') further restricts the module.
    """
    if not isinstance(class_name, str):
        raise ValueError(f'class_name must be a string naming one of this project\'s classes, got '
                         f'{type(class_name).__name__}.')
    module_name, _, attr = class_name.rpartition('.')
    extra = class_name in CONSTRUCTIBLE_EXTRA
    allowed = extra and kind is None
    if not allowed and module_name in CONSTRUCTIBLE_MODULES and attr.isidentifier() and not attr.startswith('_'):
        allowed = kind is None or CONSTRUCTIBLE_MODULES[module_name] == kind
    if not allowed:
        what = f'{kind} class' if kind else 'class'
        raise ValueError(f'Refusing class_name {class_name!r}: it is not a {what} of this project, and names from '
                         f'files are never imported or called.')
    cls = getattr(importlib.import_module(module_name), attr, None)
    home = getattr(cls, '__module__', '') or ''
    if not (isinstance(cls, type) and (extra or home == module_name
                                       or (module_name == 'infonoise' and home.startswith('infonoise.')))):
        raise ValueError(f'Refusing class_name {class_name!r}: it is not a class defined in {module_name}.')
    return cls


def check_constructor_kwargs(cls: type, args: tuple = (), kwargs: dict | None = None) -> None:
    """ValueError (one sentence) unless `cls(*args, **kwargs)` matches the constructor's parameters."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **(kwargs or {}))
    except TypeError as exc:
        raise ValueError(f'{cls.__name__} does not take these arguments: {exc}.') from None


def construct_class_by_name(*args: Any, class_name: str, **kwargs: Any) -> Any:
    """Instantiate the class named by `class_name` with the remaining arguments.

    Only classes on this project's fixed table (`resolve_class_name`) can be named, because stored
    configurations (training states, snapshots' dataset_kwargs, presets) reach this function; the
    arguments are checked against the constructor's parameters before it is called.
    """
    cls = resolve_class_name(class_name)
    check_constructor_kwargs(cls, args, kwargs)
    return cls(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Small formatting helper (used by training logs).

def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty): one sentence for
    a user, without the details a multi-line message carries below it."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def jsonable(obj: Any, strict: bool = False, **dumps_kwargs: Any) -> Any:
    """What `obj` reads back as after a JSON round trip (tuples become lists; `json.dumps` kwargs such as
    sort_keys or default=str apply).

    strict: also fit for strict JSON (`allow_nan=False`): numpy scalars and arrays become Python numbers and
            lists (unless `default` is given), NaN and ±Inf become None.
    """
    if not strict:
        return json.loads(json.dumps(obj, **dumps_kwargs))
    dumps_kwargs.setdefault('default', lambda x: x.tolist())
    return json.loads(json.dumps(obj, **dumps_kwargs), parse_constant=lambda _: None)


def format_time(seconds: float) -> str:
    """Human-readable duration: '42s', '3m 05s', '2h 07m 09s', '1d 02h 03m'."""
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 86400:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'


# ---------------------------------------------------------------------------------------------------
# Atomic writes and append-only logs.

# Temporary files of `atomic_write`: '.<name>.<12 hex digits>.tmp' next to the target '<name>'.
TEMP_FILE_RE = re.compile(r'^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp$')

# errno -> the cause as users know it (os.strerror wording, lower case) plus a hint where one helps.
_WRITE_CAUSES = {
    errno.ENOSPC: 'no space left on device',
    errno.EFBIG: 'file too large (a file-size limit was reached; see ulimit -f)',
    errno.EDQUOT: 'disk quota exceeded',
    errno.EROFS: 'read-only file system',
    errno.EACCES: 'permission denied',
    errno.EIO: 'input/output error',
}


class WriteError(OSError):
    """A file could not be written; str() is one sentence naming the file and the cause.

    `errno` and `filename` are set as for OSError; the original error is the exception's __cause__.
    """

    def __init__(self, path: str | os.PathLike, cause: OSError) -> None:
        super().__init__(cause.errno, write_cause(cause), os.fspath(path))

    def __str__(self) -> str:
        return f'Cannot write {self.filename}: {self.strerror}.'


def write_cause(err: OSError) -> str:
    """The cause of a failed write in a few lower-case words ('no space left on device', 'file too large ...')."""
    if err.errno in _WRITE_CAUSES:
        return _WRITE_CAUSES[err.errno]
    text = err.strerror or (os.strerror(err.errno) if err.errno else str(err)) or type(err).__name__
    return text[:1].lower() + text[1:]


def _fsync_directory(directory: str) -> None:
    """Best effort: make a rename durable by syncing its directory (not possible on every platform)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _RecordingFileIO(io.FileIO):
    """FileIO that remembers the first OSError of a write: writers such as torch.save turn a failed write
    into their own exception ('unexpected pos ...'), and the real cause would otherwise be lost."""

    first_error: OSError | None = None

    def write(self, b: Any) -> int | None:
        try:
            return super().write(b)
        except OSError as exc:
            if self.first_error is None:
                self.first_error = exc
            raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: int = 0o666) -> Iterator[BinaryIO]:
    """Context manager yielding a binary file that replaces `path` only if the body finishes.

    The data goes to a hidden temporary file in the same directory (named as `TEMP_FILE_RE` describes), is
    flushed and fsync'ed, and is then renamed over `path` with `os.replace` (atomic on POSIX and Windows). If
    anything fails, the temporary file is removed and any existing `path` is left untouched. A failure of
    the file system itself (full disk, file-size limit, quota, read-only, I/O error) raises `WriteError`,
    one sentence naming `path` and the cause, even where the body's writer (torch.save, pickle) reported it
    as an exception of its own. The file is created with permissions `mode` less the umask (0o600: private
    from its first byte).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), mode)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    raw = _RecordingFileIO(fd, 'wb')
    f = io.BufferedWriter(raw)
    body_done = False
    try:
        yield f
        body_done = True
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(OSError, ValueError):
            f.close()           # may retry the failed flush; the file is discarded either way
        with contextlib.suppress(OSError, ValueError):
            raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        # The file system's own error: one recorded by a write, or one of flush/fsync/close/replace. Any
        # other exception of the body (a pickling error, a file it reads) passes through unchanged.
        cause = raw.first_error if raw.first_error is not None else (exc if body_done else None)
        if isinstance(cause, OSError) and not isinstance(cause, WriteError) and cause.errno is not None:
            raise WriteError(path, cause) from exc
        raise
    _fsync_directory(directory)


def write_json(path: str | os.PathLike, data: Any, indent: int = 1, **dumps_kwargs: Any) -> None:
    """`data` as JSON text plus a newline, written atomically (`atomic_write`); `json.dumps` kwargs apply."""
    with atomic_write(path) as f:
        f.write((json.dumps(data, indent=indent, **dumps_kwargs) + '\n').encode('utf-8'))


class AppendFile:
    """A log file that grows by whole records (JSON lines): every `append` is written completely or not at all.

    A failed append (full disk, file-size limit, ...) is rolled back by truncating the file to its previous
    length, so the file never ends in a partial record, and raises `WriteError`. A file that an earlier
    crash left without a final newline gets one before the first new record. Use as a context manager or
    call `close()`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            size = os.fstat(self._fd).st_size
            self._needs_newline = size > 0 and _last_byte(self.path, size) != b'\n'
        except OSError as exc:
            self.close()
            raise WriteError(self.path, exc) from exc

    def append(self, text: str) -> None:
        """Append `text` (one or more complete records, usually ending in a newline) as one unit."""
        if self._fd is None:
            raise ValueError(f'{self.path} is closed.')
        data = (b'\n' if self._needs_newline else b'') + text.encode('utf-8')
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)   # shrinking a file needs no space
            raise WriteError(self.path, exc) from exc
        self._needs_newline = False

    def close(self) -> None:
        fd = getattr(self, '_fd', None)
        self._fd = None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> 'AppendFile':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _last_byte(path: str, size: int) -> bytes:
    with open(path, 'rb') as f:
        f.seek(size - 1)
        return f.read(1)


# ---------------------------------------------------------------------------------------------------
# Cache directory.

def make_cache_dir_path(*paths: str) -> str:
    """Path inside the dnnlib cache: $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib (else a temp-dir fallback)."""
    root = os.environ.get('DNNLIB_CACHE_DIR')
    if not root:
        home = os.environ.get('HOME') or os.environ.get('USERPROFILE')
        root = os.path.join(home or tempfile.gettempdir(), '.cache', 'dnnlib')
    return os.path.join(root, *paths)


def cache_file_path(url: str, cache_dir: str | None = None) -> str:
    """The exact cache file of an http(s) URL: `<cache_dir>/<md5 of the URL>_<sanitised file name>`."""
    name = re.sub(r'[^0-9a-zA-Z._-]', '_', os.path.basename(urllib.parse.urlparse(url).path) or 'download')[:128]
    md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    return os.path.join(make_cache_dir_path('downloads') if cache_dir is None else cache_dir, f'{md5}_{name}')


# ---------------------------------------------------------------------------------------------------
# Opening URLs.

class DownloadError(OSError):
    """A URL could not be downloaded (after the allowed number of attempts, or with a permanent error)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable  # whether another attempt could succeed (used by the retry loop)


def _download_once(session: Any, url: str) -> bytes:
    """One HTTP GET; raises DownloadError on a bad status or a truncated body."""
    with session.get(url, timeout=_HTTP_TIMEOUT_S) as res:
        if res.status_code >= 400:
            raise DownloadError(f'HTTP status {res.status_code} {res.reason or ""}'.rstrip(),
                                retryable=res.status_code in _RETRYABLE_STATUS)
        data = res.content
        expected = res.headers.get('Content-Length')
        encoded = res.headers.get('Content-Encoding', 'identity') not in ('', 'identity')
        if expected is not None and not encoded and len(data) != int(expected):
            raise DownloadError(f'truncated body: got {len(data)} of {expected} bytes', retryable=True)
        return data


def _download(url: str, num_attempts: int) -> bytes:
    import requests
    last_error: BaseException | None = None
    with requests.Session() as session:
        for attempt in range(num_attempts):
            if attempt > 0:
                time.sleep(min(_BACKOFF_START_S * 2 ** (attempt - 1), _BACKOFF_MAX_S))
            try:
                return _download_once(session, url)
            except DownloadError as exc:
                last_error = exc
                if not exc.retryable:
                    raise DownloadError(f'Cannot download {url}: {exc}.') from None
            except requests.RequestException as exc:
                last_error = exc
            _log.info('download of %s failed (attempt %d/%d): %s', url, attempt + 1, num_attempts, last_error)
    raise DownloadError(f'Cannot download {url} after {num_attempts} attempts: {last_error}.') from last_error


def open_url(
    url: str,                       # Local path, file:// URL, or http(s):// URL.
    cache_dir: str | None = None,   # Download cache; default make_cache_dir_path('downloads').
    num_attempts: int = 10,         # Attempts per download (transient errors only; 4xx fail at once).
    verbose: bool = False,          # Log progress at INFO instead of DEBUG level (never prints).
    return_filename: bool = False,  # Return the local file name instead of an open file (needs a file).
    cache: bool = True,             # Keep downloads in (and serve them from) the cache directory.
) -> Any:
    """Open `url` and return a binary file object (or, with return_filename=True, a local file name).

    http(s) downloads are served from the cache when present; otherwise they are downloaded with retries
    and written atomically into the cache. With cache=False the download is returned as an in-memory
    file. Raises FileNotFoundError for a missing local file, DownloadError (an OSError) when a download
    fails, and ValueError for unsupported URLs or argument combinations.
    """
    if not isinstance(url, (str, os.PathLike)):
        raise ValueError(f'open_url expects a path or URL string, got {type(url).__name__}.')
    url = os.fspath(url)
    if not isinstance(num_attempts, int) or num_attempts < 1:
        raise ValueError(f'num_attempts must be a positive integer, got {num_attempts!r}.')
    if return_filename and not cache:
        raise ValueError('open_url(return_filename=True) needs cache=True: an uncached download has no file name.')

    parsed = urllib.parse.urlparse(url if '://' in url else '')    # a plain path is never parsed as a URL
    scheme = parsed.scheme.lower()
    if scheme in ('', 'file'):
        if scheme and parsed.netloc not in ('', 'localhost'):
            raise ValueError(f'Unsupported file URL {url!r}: only local files (file:///path) can be opened.')
        path = urllib.request.url2pathname(parsed.path) if scheme else url
        if not os.path.isfile(path):
            raise FileNotFoundError(f'No such file: {path} (from {url!r}).')
        return path if return_filename else open(path, 'rb')
    if scheme not in ('http', 'https'):
        raise ValueError(f'Unsupported URL scheme {scheme!r} in {url!r}: '
                         f'expected a path, file://, http:// or https://.')

    level = logging.INFO if verbose else logging.DEBUG
    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    target = cache_file_path(url, cache_dir)
    # Only the exact name is served: any other '<md5>_*' file in a shared folder could shadow the download.
    if cache and os.path.isfile(target):
        _log.log(level, 'using cached %s for %s', target, url)
        return target if return_filename else open(target, 'rb')

    _log.log(level, 'downloading %s', url)
    data = _download(url, num_attempts)
    if not cache:
        return io.BytesIO(data)

    os.makedirs(cache_dir, exist_ok=True)
    with atomic_write(target) as f:
        f.write(data)
    _log.log(level, 'saved %s (%d bytes)', target, len(data))
    return target if return_filename else open(target, 'rb')
