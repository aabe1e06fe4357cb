"""Small generic utilities: EasyDict, construct-by-name, atomic writes, URL opening with a cache."""
from . import util  # noqa: F401
from .util import (  # noqa: F401
    DownloadError,
    EasyDict,
    atomic_write,
    construct_class_by_name,
    make_cache_dir_path,
    open_url,
)
