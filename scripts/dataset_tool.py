"""Convert image datasets into the EDM / StyleGAN2-ADA archive format read by `train.py --data`.

The archive is a folder or an uncompressed zip of PNGs at 00000/img00000000.png, 00000/img00000001.png, ...
plus dataset.json = {"labels": [["00000/img00000000.png", 6], ...]} (or null without labels); with
--binarize it also records "endpoint": "discrete". `training.dataset.ImageFolderDataset` reads it.

Sources (guessed from --source):
  cifar-10-python.tar.gz           CIFAR-10 python tarball (data_batch_1..5; 50,000 32x32 RGB, labels 0-9)
  DIR with train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz], or the images file itself:
                                   MNIST / FashionMNIST IDX files; 28x28 is zero-padded to 32x32 like EDM
  DIR                              all images below DIR; labels from DIR/dataset.json, else from
                                   top-level folder names when there are several
  FILE.zip                         all images in the zip; labels from its dataset.json
  builtin:digits                   scikit-learn's 8x8 digits (1,797 grayscale images, labels 0-9)
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from typing import Any, Callable, Iterator, Sequence

import click
import numpy as np
import PIL.Image
from tqdm import tqdm

from dnnlib.util import atomic_write
from training.dataset import IMAGE_EXTENSIONS, load_digits_uint8, load_image_array
from training.image_grid import png_bytes

Source = tuple[int, Iterator[tuple[str, np.ndarray, Any]]]   # (count, iterator of (name, HWC uint8, label))


# ----------------------------------------------------------------------------------------------
# Sources. Each returns (number of images, iterator of (name, uint8 HWC image, label or None)).

def _from_arrays(images: np.ndarray, labels: np.ndarray | None, max_images: int | None) -> Source:
    if images.ndim == 3:
        images = images[:, :, :, np.newaxis]
    n = len(images) if max_images is None else min(len(images), max_images)
    return n, ((f'image #{i}', images[i], None if labels is None else int(labels[i])) for i in range(n))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers (never runs other code)."""

    _np_core = getattr(np, '_core', None) or np.core
    _ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'): _np_core.multiarray._reconstruct,
        ('numpy._core.multiarray', '_reconstruct'): _np_core.multiarray._reconstruct,
        ('numpy.core.numeric', '_frombuffer'): _np_core.numeric._frombuffer,
        ('numpy._core.numeric', '_frombuffer'): _np_core.numeric._frombuffer,
        ('numpy', 'ndarray'): np.ndarray,
        ('numpy', 'dtype'): np.dtype,
        ('_codecs', 'encode'): __import__('codecs').encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
        return self._ALLOWED[(module, name)]


def _cifar_field(batch: dict, key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(f'batch has no {key!r} entry')


def open_cifar10(path: str, max_images: int | None) -> Source:
    """CIFAR-10 python tarball: data_batch_1..5 pickles with 'data' (N x 3072 uint8, CHW) and 'labels'."""
    try:
        with tarfile.open(path, 'r:*') as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            names = [f'data_batch_{i}' for i in range(1, 6)]
            if any(n not in members for n in names):
                raise click.ClickException(f'{path} is not a CIFAR-10 python tarball (data_batch_1..5 missing).')
            images, labels = [], []
            for n in names:
                batch = _ArrayUnpickler(tar.extractfile(members[n]), encoding='bytes').load()
                data = np.asarray(_cifar_field(batch, 'data'))
                if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                    raise ValueError(f'{n} data has shape {list(data.shape)} ({data.dtype}), expected [N, 3072] uint8')
                batch_labels = np.asarray(_cifar_field(batch, 'labels'), dtype=np.int64)
                if batch_labels.shape != (data.shape[0],):
                    raise ValueError(f'{n} has {batch_labels.size} labels for {data.shape[0]} images')
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                labels.append(batch_labels)
    except click.ClickException:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, pickle.UnpicklingError, ValueError, KeyError,
            TypeError, AttributeError) as exc:
        raise click.ClickException(f'{path} is a corrupt CIFAR-10 tarball: {exc}.')
    return _from_arrays(np.concatenate(images), np.concatenate(labels), max_images)


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzipped or not); checks the magic number and the size."""
    try:
        raw = pathlib.Path(path).read_bytes()
        if raw[:2] == b'\x1f\x8b':
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise click.ClickException(f'Cannot read IDX file {path}: {exc}.')
    if len(raw) < 4 or raw[:3] != b'\x00\x00\x08' or raw[3] != ndim:
        raise click.ClickException(f'{path} is not an IDX file of {ndim}-D unsigned bytes (bad magic number).')
    header = 4 + 4 * ndim
    dims = [int(d) for d in np.frombuffer(raw, dtype='>u4', count=ndim, offset=4)] if len(raw) >= header else []
    if len(dims) != ndim or len(raw) != header + int(np.prod(dims)):
        raise click.ClickException(f'{path} is truncated or corrupt (its size does not match its header).')
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _first_file(directory: str, names: Sequence[str]) -> str | None:
    """The first of `names` that is a file in `directory` (its path), or None."""
    return next((os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))), None)


def open_idx(images_path: str, max_images: int | None) -> Source:
    """MNIST / FashionMNIST: IDX images (N x H x W) and the matching labels file; 28x28 padded to 32x32."""
    directory, base = os.path.split(images_path)
    stem = re.sub(r'\.gz$', '', base).replace('images-idx3', 'labels-idx1').replace('images.idx3', 'labels.idx1')
    labels_path = _first_file(directory, (stem + '.gz', stem))
    if labels_path is None:
        raise click.ClickException(f'Labels file {stem}[.gz] not found next to {images_path}.')
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if len(labels) != len(images):
        raise click.ClickException(f'{labels_path} has {len(labels)} labels for {len(images)} images.')
    if images.shape[1:] == (28, 28):
        images = np.pad(images, [(0, 0), (2, 2), (2, 2)])
    return _from_arrays(images, labels, max_images)


def open_image_files(path: str, max_images: int | None) -> Source:
    """All images in a folder or a zip (sorted by relative path) with labels from its dataset.json; a folder
    without them is labelled by its top-level folder names when there are several."""
    is_zip = not os.path.isdir(path)
    failure = 'is a corrupt zip file' if is_zip else 'cannot be read'
    try:
        if is_zip:
            with zipfile.ZipFile(path) as z:
                members = z.namelist()
                meta = z.read('dataset.json') if 'dataset.json' in members else None
        else:
            members = [os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
                       for root, _dirs, files in os.walk(path) for f in files]
            meta = pathlib.Path(path, 'dataset.json').read_bytes() if 'dataset.json' in members else None
    except (zipfile.BadZipFile, OSError, zlib.error) as exc:
        raise click.ClickException(f'{path} {failure}: {exc}.')
    try:
        entries = None if meta is None else json.loads(meta.decode('utf-8')).get('labels')
        labels = {str(k).replace('\\', '/'): v for k, v in entries or []}
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise click.ClickException(f'dataset.json in {path} is malformed: {exc}.')
    names = sorted(n for n in members if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    if not names:
        raise click.ClickException(f'No image files found in {path}.')
    if not labels and not is_zip:
        top = {n: n.split('/')[0] if '/' in n else '' for n in names}
        classes = sorted(set(top.values()))
        if len(classes) > 1:
            labels = {n: classes.index(t) for n, t in top.items()}
    names = names if max_images is None else names[:max_images]

    def items() -> Iterator[tuple[str, np.ndarray, Any]]:
        try:
            with zipfile.ZipFile(path) if is_zip else contextlib.nullcontext() as z:
                for n in names:
                    data = z.read(n) if is_zip else pathlib.Path(path, n).read_bytes()
                    try:
                        image = load_image_array(io.BytesIO(data), n)
                    except (OSError, ValueError) as exc:
                        raise click.ClickException(str(exc))
                    yield n, image, labels.get(n)
        except (zipfile.BadZipFile, OSError, zlib.error) as exc:
            raise click.ClickException(f'{path} {failure}: {exc}.')
    return len(names), items()


def open_source(source: str, max_images: int | None) -> Source:
    """Pick the reader for --source (see the module docstring)."""
    if source == 'builtin:digits':
        images, labels = load_digits_uint8()
        return _from_arrays(images, labels, max_images)
    if source.startswith('builtin:'):
        raise click.ClickException(f'Unknown built-in dataset {source!r}; the only one is builtin:digits.')
    if os.path.isdir(source):
        idx_images = _first_file(source, [f'train-images{sep}idx3-ubyte{gz}' for sep in '-.' for gz in ('.gz', '')])
        return open_idx(idx_images, max_images) if idx_images else open_image_files(source, max_images)
    if not os.path.isfile(source):
        raise click.ClickException(f'Source {source} does not exist.')
    base = os.path.basename(source).lower()
    if 'idx3-ubyte' in base:
        return open_idx(source, max_images)
    if base.endswith('.zip') or zipfile.is_zipfile(source):
        return open_image_files(source, max_images)
    if base.endswith(('.tar.gz', '.tgz', '.tar')):
        return open_cifar10(source, max_images)
    raise click.ClickException(f'Unknown source format for {source}; expected a folder, a .zip, '
                               'cifar-10-python.tar.gz, an IDX images file or builtin:digits.')


# ----------------------------------------------------------------------------------------------
# Transforms.

def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    if img.shape[1] == width and img.shape[0] == height:
        return img
    pil = PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
    out = np.asarray(pil.resize((width, height), PIL.Image.Resampling.LANCZOS))
    return out[:, :, np.newaxis] if out.ndim == 2 else out


def make_transform(mode: str | None, size: tuple[int, int] | None) -> Callable[[np.ndarray], np.ndarray | None]:
    """HWC -> HWC (or None to skip the image). Channels are kept (grayscale stays grayscale)."""
    if mode is not None and size is None:
        raise click.UsageError(f'--transform={mode} needs --resolution=WxH.')
    width, height = size if size is not None else (None, None)

    def scale(img: np.ndarray) -> np.ndarray:
        return img if size is None else _resize(img, width, height)

    def center_crop(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return _resize(img[top:top + s, left:left + s], width, height)

    def center_crop_wide(img: np.ndarray) -> np.ndarray | None:
        h, w = img.shape[:2]
        crop_h = int(np.round(width * h / w))
        if w < width or crop_h < height:
            return None
        top = (h - crop_h) // 2
        band = _resize(img[top:top + crop_h], width, height)
        canvas = np.zeros([width, width, img.shape[2]], dtype=np.uint8)
        canvas[(width - height) // 2:(width - height) // 2 + height] = band
        return canvas

    return {None: scale, 'center-crop': center_crop, 'center-crop-wide': center_crop_wide}[mode]


# ----------------------------------------------------------------------------------------------
# Atomic output.

@contextlib.contextmanager
def archive_writer(dest: str) -> Iterator[Callable[[str, bytes], None]]:
    """Yields write(name, data), which writes into a temporary zip (stored, uncompressed) or folder next to dest;
    the archive is moved into place when the block finishes and removed if it raises."""
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    if dest.lower().endswith('.zip'):
        with atomic_write(dest) as f, zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_STORED) as z:
            yield z.writestr
        return
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.normpath(dest))}.tmp-', dir=parent)

    def write(name: str, data: bytes) -> None:
        target = pathlib.Path(tmp, *name.split('/'))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    try:
        yield write
        if os.path.isdir(dest):
            os.rmdir(dest)  # empty (checked before writing)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_dest(dest: str) -> None:
    """Refuse an empty name and an existing non-empty destination."""
    if dest.strip() == '':
        raise click.BadParameter('must not be empty.', param_hint='--dest')
    if os.path.isdir(dest) and os.listdir(dest):
        raise click.ClickException(f'Destination {dest} already exists and is not empty.')
    if os.path.isfile(dest) and (not dest.lower().endswith('.zip') or os.path.getsize(dest) > 0):
        raise click.ClickException(f'Destination {dest} already exists.')


# ----------------------------------------------------------------------------------------------
# Conversion.

def _check_attrs(name: str, img: np.ndarray, first: tuple[int, int, int] | None) -> tuple[int, int, int]:
    h, w, c = img.shape
    if first is None:
        if w != h:
            raise click.ClickException(f'Images must be square after crop/resize, but {name} is {w}x{h}; '
                                       'use --resolution and --transform=center-crop.')
        if c not in (1, 3):
            raise click.ClickException(f'Images must be grayscale or RGB, but {name} has {c} channels.')
        if w & (w - 1):
            raise click.ClickException(f'Image size must be a power of two, but {name} is {w}x{h}; use --resolution.')
        return h, w, c
    if (h, w, c) != first:
        raise click.ClickException(f'Image {name} is {w}x{h} with {c} channel(s) but the first image is '
                                   f'{first[1]}x{first[0]} with {first[2]}; pass --resolution=WxH to resize.')
    return first


def convert_dataset(source: str, dest: str, max_images: int | None = None, transform: str | None = None,
                    resolution: tuple[int, int] | None = None, binarize: float | None = None) -> tuple[int, tuple]:
    """Convert source into an archive at dest atomically; returns (number of images, (H, W, C))."""
    check_dest(dest)
    transform_image = make_transform(transform, resolution)
    count, items = open_source(source, max_images)
    first, labels, written = None, [], 0
    with archive_writer(dest) as write:
        for name, img, label in tqdm(items, total=count, unit='img', disable=None):
            img = transform_image(img)
            if img is None:
                continue
            first = _check_attrs(name, img, first)
            if binarize is not None:
                img = np.where(img > binarize * 255.0, np.uint8(255), np.uint8(0))
            idx = f'{written:08d}'
            arcname = f'{idx[:5]}/img{idx}.png'
            write(arcname, png_bytes(img, compress_level=0))
            labels.append(None if label is None else [arcname, label])
            written += 1
        if written == 0:
            raise click.ClickException(f'No images to write from {source} (all were skipped or none found).')
        meta: dict[str, Any] = {'labels': labels if all(x is not None for x in labels) else None}
        if binarize is not None:
            meta['endpoint'] = 'discrete'
        write('dataset.json', json.dumps(meta).encode('utf-8'))
    return written, first


# ----------------------------------------------------------------------------------------------
# CLI.

def _parse_resolution(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    m = re.fullmatch(r'\s*(\d+)\s*[x,]\s*(\d+)\s*', value)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise click.BadParameter(f'expected WxH with positive integers (e.g. 64x64), got {value!r}.')
    return int(m.group(1)), int(m.group(2))


@click.group()
def cli() -> None:
    """Dataset tools for InfoNoise-EDM (EDM / StyleGAN2-ADA archive format)."""


@cli.command(context_settings={'show_default': True})
@click.option('--source', metavar='PATH', required=True, help='Input folder, archive, IDX file or builtin:digits.')
@click.option('--dest', metavar='PATH', required=True, help='Output folder or .zip (must not exist or be empty).')
@click.option('--max-images', metavar='INT', type=click.IntRange(min=1), default=None,
              help='Keep at most this many images.')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']), default=None,
              help='Crop mode before resizing (needs --resolution).')
@click.option('--resolution', metavar='WxH', callback=_parse_resolution, default=None,
              help='Output size; images are resized with Lanczos.')
@click.option('--binarize', metavar='THRESH', type=click.FloatRange(0, 1, max_open=True), default=None,
              help='Binarise: pixel -> 255 if pixel/255 > THRESH else 0; marks the dataset discrete.')
def convert(source: str, dest: str, max_images: int | None, transform: str | None,
            resolution: tuple[int, int] | None, binarize: float | None) -> None:
    """Convert an image dataset into a zip/folder of PNGs plus dataset.json (see the module docstring).

    \b
    Examples:
      python -m scripts.dataset_tool convert --source=downloads/cifar10/cifar-10-python.tar.gz \\
          --dest=datasets/cifar10-32x32.zip
      python -m scripts.dataset_tool convert --source=downloads/mnist --dest=datasets/mnist-32x32.zip
      python -m scripts.dataset_tool convert --source=downloads/mnist --dest=datasets/bmnist-32x32.zip --binarize=0.5
      python -m scripts.dataset_tool convert --source=downloads/ffhq --dest=datasets/ffhq-64x64.zip \\
          --transform=center-crop --resolution=64x64
      python -m scripts.dataset_tool convert --source=builtin:digits --dest=datasets/digits-8x8.zip
    """
    n, (h, w, c) = convert_dataset(source, dest, max_images=max_images, transform=transform,
                                   resolution=resolution, binarize=binarize)
    click.echo(f'Wrote {n} images ({w}x{h}, {c} channel(s)) to {dest}.')


if __name__ == '__main__':
    cli()
