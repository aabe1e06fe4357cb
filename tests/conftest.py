import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATA_DIR = os.path.join(ROOT, 'tests', 'data')


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason='needs CUDA')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope='session')
def parity_records():
    import torch
    return torch.load(os.path.join(DATA_DIR, 'edm_parity.pt'), weights_only=True)


@pytest.fixture(scope='module')
def one_torch_thread():
    """Run a module single-threaded: tiny networks are fastest that way, and CI has 2 shared cores."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
