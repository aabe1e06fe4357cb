"""Small generic utilities: EasyDict, construct-by-name, URL opening with a cache."""
from .util import EasyDict, construct_class_by_name, call_func_by_name, get_obj_by_name, open_url, make_cache_dir_path  # noqa: F401
