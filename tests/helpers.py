"""Helpers shared by several test modules (the tests directory is on sys.path under pytest)."""
import math
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository root
REPO_ENV = dict(os.environ, PYTHONPATH=ROOT)   # subprocesses run `python -m scripts.NAME` from any folder


def perturb_(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with O(1) random values so that all branches carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif 'norm' in name and name.endswith('weight'):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return net


def assert_clean_error(result, *phrases):
    """A click CLI result failed with exactly one 'Error' line containing every phrase, and no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert 'Traceback' not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith('Error')]
    assert len(errors) == 1, result.output
    for p in phrases:
        assert p in errors[0], errors[0]
