"""Feature detectors for FID: EDM's pinned Inception-v3 pickle, any TorchScript file, or a safe pickle.

A detector is called as `det(images, return_features=True)` with uint8 images [N, 3, H, W] and returns
features [N, D]. Grayscale batches are repeated to three channels first (as EDM's fid.py does).

Loading rules:
- a pinned URL (`torch_utils.persistence.pinned_sha256`: EDM's Inception-v3 `INCEPTION_URL`, matched
  exactly) is a trusted file, reconstructed the way the reference does, by `persistence.load_trusted_pickle`,
  which runs the embedded source; only verified bytes reach it (trust on first download, pinned privately, as
  `pinned_sha256` describes). When its exact cache file (`dnnlib.util.cache_file_path`) is absent, this
  process downloads it itself, runs the downloaded bytes (never a re-read of the cache file) and pins them
  before it writes the cache file; a cached copy whose SHA-256 is not pinned (planted in a shared cache, or
  changed after pinning) is refused with one sentence naming it, before anything runs;
- a TorchScript archive (a zip with a `code/` folder) is loaded with `torch.jit.load`. TorchScript is
  code: it runs with the user's rights (it can read and write files), so pass only files you trust;
- any other pickle goes through the restricted `persistence.load_network_pickle` and is refused unless
  it holds only known classes.
The loaded detector is probed once on a small batch; anything other than a floating [N, D] tensor is
refused with one `DetectorError` sentence.
"""
from __future__ import annotations

import io
import logging
import os
import zipfile

import torch

from dnnlib import util
from torch_utils import persistence

INCEPTION_URL = ('https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/'
                 'inception-2015-12-05.pkl')
PROBE_BATCH = 2
_log = logging.getLogger('training')


class DetectorError(ValueError):
    """The detector could not be loaded or does not return features of shape [N, D]."""


class FeatureDetector:
    """A loaded detector plus its feature dimension; `__call__(uint8 NCHW) -> float features [N, D]`."""

    def __init__(self,
        module: torch.nn.Module,        # The detector network (TorchScript or eager).
        feature_dim: int,               # D, as measured on the probe batch.
        device: torch.device,           # Where the module lives; inputs are moved here.
        name: str = 'detector',         # Path or URL, for messages.
    ) -> None:
        self.module = module
        self.feature_dim = int(feature_dim)
        self.device = torch.device(device)
        self.name = name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        features = _run(self.module, images, self.device)
        if features.ndim != 2 or features.shape[0] != images.shape[0] or features.shape[1] != self.feature_dim:
            raise DetectorError(f'Detector {self.name} returned features of shape {list(features.shape)} for '
                                f'{images.shape[0]} images; expected [{images.shape[0]}, {self.feature_dim}].')
        return features


def _run(module: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f'Detector input must be uint8 [N, C, H, W], got {images.dtype} {list(images.shape)}.')
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    with torch.no_grad():
        return module(images.to(device), return_features=True)


def _reason(exc: BaseException) -> str:
    return util.first_line(exc).rstrip('.')


def _is_torchscript(data: bytes) -> bool:
    if not data.startswith(b'PK'):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any('/code/' in n or n.startswith('code/') for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _pinned_bytes(url: str, cache_dir: str | None) -> bytes:
    """The verified content of the pinned `url`: the cached copy if its digest is pinned, else a fresh download
    (trusted because this process fetched it from the URL itself, and pinned privately for next time)."""
    cache_dir = cache_dir if cache_dir is not None else util.make_cache_dir_path('downloads')
    if persistence.pinned_sha256[url] is None and _inside(persistence.pin_store_path(), cache_dir):
        raise DetectorError(f'The pin store {persistence.pin_store_path()} lies inside the download cache {cache_dir}, '
                            f'which others may write to; point {persistence.PIN_STORE_ENV} at a private file.')
    path = util.cache_file_path(url, cache_dir)
    if os.path.isfile(path):
        with open(path, 'rb') as f:
            data = f.read()
        persistence.check_pinned_content(url, data, path)
        return data
    with util.open_url(url, cache_dir=cache_dir, cache=False) as f:   # the bytes themselves, never a re-read
        data = f.read()
    persistence.accept_downloaded_content(url, data)    # pinned before the cache file appears for other processes
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with util.atomic_write(path) as f:
            f.write(data)
    except OSError as exc:      # an unwritable cache only costs a download next time
        _log.warning('Could not cache %s at %s (%s).', url, path, exc)
    return data


def _load_module(url: str, device: torch.device, cache_dir: str | None) -> torch.nn.Module:
    try:
        if persistence.is_pinned(url):
            # The trusted loader runs code from the file: only verified bytes reach it (see the module docstring).
            return persistence.load_trusted_pickle(io.BytesIO(_pinned_bytes(url, cache_dir))).to(device)
        with util.open_url(url, cache_dir=cache_dir) as f:
            data = f.read()
    except DetectorError:
        raise
    except persistence.PinnedFileError as exc:
        raise DetectorError(str(exc)) from exc
    except Exception as exc:
        raise DetectorError(f'Cannot load detector {url}: {_reason(exc)}.') from exc

    if _is_torchscript(data):
        try:
            return torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as exc:
            raise DetectorError(f'Detector {url} is not a loadable TorchScript archive '
                                f'({type(exc).__name__}).') from exc
    if data[:1] == b'\x80':
        try:
            obj = persistence.load_network_pickle(io.BytesIO(data))
        except Exception as exc:
            raise DetectorError(f'Detector pickle {url} was refused by the safe loader ({_reason(exc)}).') from exc
        if not isinstance(obj, torch.nn.Module):
            raise DetectorError(f'Detector pickle {url} holds a {type(obj).__name__}, not a network.')
        return obj.to(device)
    raise DetectorError(f'Detector {url} is neither a TorchScript archive nor a network pickle.')


def load_detector(url: str = INCEPTION_URL,
                  device: torch.device | str = 'cpu',
                  image_shape: tuple[int, int, int] = (3, 32, 32),
                  cache_dir: str | None = None) -> FeatureDetector:
    """Load a detector from a path or URL and check that it maps uint8 images of `image_shape` to [N, D]."""
    device = torch.device(device)
    module = _load_module(url, device, cache_dir)
    if hasattr(module, 'eval'):
        module.eval()
    gen = torch.Generator().manual_seed(0)
    probe = torch.randint(0, 256, [PROBE_BATCH, *image_shape], generator=gen, dtype=torch.uint8)
    try:
        features = _run(module, probe, device)
    except Exception as exc:
        raise DetectorError(f'Detector {url} failed on a probe batch of {PROBE_BATCH} images of shape '
                            f'{list(image_shape)} ({_reason(exc)}).') from exc
    if not isinstance(features, torch.Tensor) or not features.is_floating_point() or features.ndim != 2 \
            or features.shape[0] != PROBE_BATCH or features.shape[1] < 1:
        got = list(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise DetectorError(f'Detector {url} returned {got} for {PROBE_BATCH} images; '
                            f'expected floating features of shape [{PROBE_BATCH}, D].')
    return FeatureDetector(module, features.shape[1], device, name=url)
