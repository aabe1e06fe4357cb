"""scripts/dataset_tool.py on small files written here in the real source formats."""
import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import PIL.Image
from click.testing import CliRunner

from scripts.dataset_tool import cli
from training.dataset import ImageFolderDataset, load_digits_uint8, open_dataset
from helpers import REPO_ENV



def run(*args):
    result = CliRunner().invoke(cli, ['convert', *args])
    assert 'Traceback' not in result.output
    return result


def assert_fails(result, *needles):
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a click error, not a crash
    text = result.output.lower()
    for needle in needles:
        assert needle.lower() in text, result.output


def load(dest, **kwargs):
    ds = ImageFolderDataset(dest, **kwargs)
    return np.stack([ds[i][0] for i in range(len(ds))]), ds


# ------------------------------------------------------------------------------------------------
# Source files in their real formats

def write_cifar_tarball(path, per_batch=2, seed=0):
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    with tarfile.open(path, 'w:gz') as tar:
        def add(name, obj):
            # Protocol 2 with numpy's pre-2.0 module path, as in the original (Python 2 written) files.
            data = pickle.dumps(obj, protocol=2)
            data = data.replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')
            assert b'data' not in obj or b'cnumpy.core.multiarray\n_reconstruct' in data
            info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for b in range(1, 6):
            data = rng.integers(0, 256, size=[per_batch, 3072], dtype=np.uint8)
            lab = [int(v) for v in rng.integers(0, 10, size=per_batch)]
            add(f'data_batch_{b}', {b'batch_label': f'training batch {b} of 5'.encode(), b'labels': lab,
                                    b'data': data, b'filenames': [b'x.png'] * per_batch})
            rows.append(data)
            labels += lab
        add('test_batch', {b'labels': [0], b'data': np.zeros([1, 3072], np.uint8)})
        add('batches.meta', {b'label_names': [b'airplane'] * 10, b'num_vis': 3072})
    return np.concatenate(rows).reshape(-1, 3, 32, 32), np.array(labels)


def idx_bytes(array):
    dims = array.shape
    return struct.pack('>BBBB', 0, 0, 8, len(dims)) + struct.pack(f'>{len(dims)}I', *dims) + array.tobytes()


def write_mnist(folder, n=5, prefix='train', compress=True, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=[n, 28, 28], dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    os.makedirs(folder, exist_ok=True)
    ext = '.gz' if compress else ''
    opener = gzip.open if compress else open
    with opener(os.path.join(folder, f'{prefix}-images-idx3-ubyte{ext}'), 'wb') as f:
        f.write(idx_bytes(images))
    with opener(os.path.join(folder, f'{prefix}-labels-idx1-ubyte{ext}'), 'wb') as f:
        f.write(idx_bytes(labels))
    return images, labels


def write_png_folder(root, n=4, res=8, channels=3, labels=None, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=[n, res, res, channels], dtype=np.uint8)
    names = []
    for i, img in enumerate(images):
        name = f'sub{i % 2}/im{i}.png'
        os.makedirs(os.path.join(root, f'sub{i % 2}'), exist_ok=True)
        PIL.Image.fromarray(img[:, :, 0] if channels == 1 else img).save(os.path.join(root, name))
        names.append(name)
    if labels is not None:
        with open(os.path.join(root, 'dataset.json'), 'w') as f:
            json.dump({'labels': [[nm, int(l)] for nm, l in zip(names, labels)]}, f)
    order = np.argsort(names)  # the tool reads files sorted by relative path
    return images[order], (None if labels is None else np.asarray(labels)[order])


# ------------------------------------------------------------------------------------------------
# Conversions

def test_cifar10_tarball_to_zip(tmp_path):
    src = str(tmp_path / 'cifar-10-python.tar.gz')
    chw, labels = write_cifar_tarball(src)
    dest = str(tmp_path / 'out' / 'cifar10-32x32.zip')
    result = run('--source', src, '--dest', dest)
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(dest) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        assert '00000/img00000000.png' in z.namelist() and '00000/img00000009.png' in z.namelist()
        meta = json.loads(z.read('dataset.json'))
    assert meta['labels'][3] == ['00000/img00000003.png', int(labels[3])]
    got, ds = load(dest, use_labels=True)
    assert np.array_equal(got, chw) and ds.label_dim == labels.max() + 1
    assert [int(ds[i][1].argmax()) for i in range(len(ds))] == labels.tolist()
    assert not [f for f in os.listdir(tmp_path / 'out') if f.startswith('.')]  # no temp files left


def test_mnist_idx_folder_and_file(tmp_path):
    images, labels = write_mnist(str(tmp_path / 'mnist'))
    dest = str(tmp_path / 'mnist.zip')
    assert run('--source', str(tmp_path / 'mnist'), '--dest', dest).exit_code == 0
    got, ds = load(dest, use_labels=True)
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2)])  # EDM's MNIST layout: 28x28 centred in 32x32
    assert got.shape == (5, 1, 32, 32) and np.array_equal(got[:, 0], padded)
    assert [int(ds[i][1].argmax()) for i in range(5)] == labels.tolist()
    # The images file itself, uncompressed, a t10k prefix and --max-images.
    images2, labels2 = write_mnist(str(tmp_path / 'raw'), n=4, prefix='t10k', compress=False, seed=1)
    dest2 = str(tmp_path / 'raw-out')
    res = run('--source', str(tmp_path / 'raw' / 't10k-images-idx3-ubyte'), '--dest', dest2, '--max-images', '3')
    assert res.exit_code == 0, res.output
    got2, ds2 = load(dest2, use_labels=True)
    assert np.array_equal(got2[:, 0], np.pad(images2[:3], [(0, 0), (2, 2), (2, 2)]))
    assert [int(ds2[i][1].argmax()) for i in range(3)] == labels2[:3].tolist()


def test_png_folder_with_labels_and_binarize(tmp_path):
    images, labels = write_png_folder(str(tmp_path / 'src'), labels=[1, 0, 2, 1])
    dest = str(tmp_path / 'png.zip')
    assert run('--source', str(tmp_path / 'src'), '--dest', dest).exit_code == 0
    got, ds = load(dest, use_labels=True)
    assert np.array_equal(got, images.transpose(0, 3, 1, 2)) and ds.endpoint == 'continuous'
    assert [int(ds[i][1].argmax()) for i in range(4)] == labels.tolist()
    bdest = str(tmp_path / 'bin')
    assert run('--source', str(tmp_path / 'src'), '--dest', bdest, '--binarize', '0.25').exit_code == 0
    bgot, bds = load(bdest, use_labels=True)
    assert bds.endpoint == 'discrete'
    assert np.array_equal(bgot, np.where(images.transpose(0, 3, 1, 2).astype(int) * 4 > 255, 255, 0))


def test_folder_labels_from_top_level_dirs(tmp_path):
    images, _ = write_png_folder(str(tmp_path / 'src'), n=4, channels=1)
    dest = str(tmp_path / 'out.zip')
    assert run('--source', str(tmp_path / 'src'), '--dest', dest).exit_code == 0
    got, ds = load(dest, use_labels=True)
    assert got.shape == (4, 1, 8, 8) and np.array_equal(got[:, 0], images[:, :, :, 0])
    assert [int(ds[i][1].argmax()) for i in range(4)] == [0, 0, 1, 1]  # sub0/im0, sub0/im2, sub1/im1, sub1/im3


def test_zip_source_to_folder_and_jpeg(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=[3, 4, 4, 3], dtype=np.uint8)
    src = str(tmp_path / 'src.zip')
    with zipfile.ZipFile(src, 'w') as z:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='png')
            z.writestr(f'a/{i}.png', buf.getvalue())
        z.writestr('dataset.json', json.dumps({'labels': [[f'a/{i}.png', i] for i in range(3)]}))
    dest = str(tmp_path / 'folder-out')
    os.makedirs(dest)  # an existing empty folder is fine
    assert run('--source', src, '--dest', dest).exit_code == 0
    got, ds = load(dest, use_labels=True)
    assert np.array_equal(got, images.transpose(0, 3, 1, 2)) and ds.label_dim == 3
    jroot = tmp_path / 'jpg'
    jroot.mkdir()
    for i in range(2):
        PIL.Image.fromarray(np.full([16, 16, 3], 60 * (i + 1), np.uint8)).save(jroot / f'{i}.jpg', quality=95)
    assert run('--source', str(jroot), '--dest', str(tmp_path / 'j.zip')).exit_code == 0
    jgot, _ = load(str(tmp_path / 'j.zip'))
    assert jgot.shape == (2, 3, 16, 16) and np.abs(jgot[1].astype(int) - 120).max() <= 2


def test_resize_and_crops(tmp_path):
    src = tmp_path / 'mixed'
    src.mkdir()
    rng = np.random.default_rng(4)
    big = rng.integers(0, 256, size=[16, 16, 3], dtype=np.uint8)
    small = rng.integers(0, 256, size=[8, 8, 3], dtype=np.uint8)
    PIL.Image.fromarray(big).save(src / 'a.png')
    PIL.Image.fromarray(small).save(src / 'b.png')
    assert_fails(run('--source', str(src), '--dest', str(tmp_path / 'x.zip')), 'b.png', '--resolution')
    assert not (tmp_path / 'x.zip').exists()
    assert run('--source', str(src), '--dest', str(tmp_path / 'r.zip'), '--resolution', '8x8').exit_code == 0
    got, _ = load(str(tmp_path / 'r.zip'))
    want = np.asarray(PIL.Image.fromarray(big).resize((8, 8), PIL.Image.Resampling.LANCZOS))
    assert np.array_equal(got[0], want.transpose(2, 0, 1)) and np.array_equal(got[1], small.transpose(2, 0, 1))
    # center-crop of a 12x8 (WxH) image to 8x8: columns 2..9, no resampling needed.
    wide = rng.integers(0, 256, size=[8, 12], dtype=np.uint8)
    (tmp_path / 'wide').mkdir()
    PIL.Image.fromarray(wide).save(tmp_path / 'wide' / 'w.png')
    assert run('--source', str(tmp_path / 'wide'), '--dest', str(tmp_path / 'c.zip'),
               '--transform', 'center-crop', '--resolution', '8x8').exit_code == 0
    cgot, _ = load(str(tmp_path / 'c.zip'))
    assert np.array_equal(cgot[0, 0], wide[:, 2:10])
    # center-crop-wide 12x8 -> 8x4 band: rows of a 5-row-tall crop resized, placed in an 8x8 canvas.
    assert run('--source', str(tmp_path / 'wide'), '--dest', str(tmp_path / 'cw.zip'),
               '--transform', 'center-crop-wide', '--resolution', '8x4').exit_code == 0
    wgot, _ = load(str(tmp_path / 'cw.zip'))
    band = np.asarray(PIL.Image.fromarray(wide[1:6]).resize((8, 4), PIL.Image.Resampling.LANCZOS))
    assert wgot.shape == (1, 1, 8, 8) and np.array_equal(wgot[0, 0, 2:6], band)
    assert not wgot[0, 0, :2].any() and not wgot[0, 0, 6:].any()


def test_builtin_digits(tmp_path):
    dest = str(tmp_path / 'digits.zip')
    assert run('--source', 'builtin:digits', '--dest', dest, '--max-images', '20').exit_code == 0
    got, ds = load(dest, use_labels=True)
    images, labels = load_digits_uint8()
    assert np.array_equal(got[:, 0], images[:20]) and ds.label_dim == 10
    assert [int(ds[i][1].argmax()) for i in range(20)] == labels[:20].tolist()
    bdest = str(tmp_path / 'bdigits.zip')
    assert run('--source', 'builtin:digits', '--dest', bdest, '--max-images', '20', '--binarize', '0.5').exit_code == 0
    bgot, bds = load(bdest)
    builtin = open_dataset('builtin:digits-binary', max_size=None)
    assert bds.endpoint == builtin.endpoint == 'discrete'
    assert np.array_equal(bgot, np.stack([builtin[i][0] for i in range(20)]))


# ------------------------------------------------------------------------------------------------
# Bad input: one sentence, non-zero exit, no traceback, nothing half-written

def test_errors(tmp_path):
    dest = str(tmp_path / 'o.zip')
    assert_fails(run('--source', str(tmp_path / 'missing'), '--dest', dest), 'does not exist')
    (tmp_path / 'notes.txt').write_text('hello')
    assert_fails(run('--source', str(tmp_path / 'notes.txt'), '--dest', dest), 'unknown source format')
    # IDX with a bad magic number and a truncated one.
    bad = tmp_path / 'badidx'
    write_mnist(str(bad))
    with gzip.open(bad / 'train-images-idx3-ubyte.gz', 'wb') as f:
        f.write(b'\x00\x00\x09\x03' + b'\x00' * 100)
    assert_fails(run('--source', str(bad), '--dest', dest), 'magic number')
    with gzip.open(bad / 'train-images-idx3-ubyte.gz', 'wb') as f:
        f.write(idx_bytes(np.zeros([5, 28, 28], np.uint8))[:-10])
    assert_fails(run('--source', str(bad), '--dest', dest), 'truncated')
    os.remove(bad / 'train-labels-idx1-ubyte.gz')
    assert_fails(run('--source', str(bad), '--dest', dest), 'labels file')
    # Corrupt tarball and corrupt zip.
    src = str(tmp_path / 'cifar-10-python.tar.gz')
    write_cifar_tarball(src)
    data = open(src, 'rb').read()
    open(src, 'wb').write(data[:len(data) // 3])
    assert_fails(run('--source', src, '--dest', dest), 'corrupt cifar-10 tarball')
    # A tarball whose pickle would call a function: refused without running it.
    evil = str(tmp_path / 'evil' / 'cifar-10-python.tar.gz')
    os.makedirs(os.path.dirname(evil))
    with tarfile.open(evil, 'w:gz') as tar:
        for b in range(1, 6):
            payload = b'\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.'
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{b}')
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert_fails(run('--source', evil, '--dest', dest), 'refusing to load os.system')
    zbad = tmp_path / 'bad.zip'
    zbad.write_bytes(b'PK\x03\x04' + b'\x00' * 40)
    assert_fails(run('--source', str(zbad), '--dest', dest))
    # Destination already there and not empty, bad options.
    write_png_folder(str(tmp_path / 'src'))
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'keep.txt').write_text('x')
    assert_fails(run('--source', str(tmp_path / 'src'), '--dest', str(tmp_path / 'full')), 'not empty')
    assert os.listdir(tmp_path / 'full') == ['keep.txt']
    assert_fails(run('--source', str(tmp_path / 'src'), '--dest', dest, '--resolution', '8by8'), 'wxh')
    assert_fails(run('--source', str(tmp_path / 'src'), '--dest', dest, '--transform', 'center-crop'), '--resolution')
    assert_fails(run('--source', str(tmp_path / 'src'), '--dest', dest, '--binarize', '1.5'))
    assert_fails(run('--source', str(tmp_path / 'src'), '--dest', dest, '--resolution', '6x6'), 'power of two')
    assert not os.path.exists(dest)


def test_failure_midway_leaves_nothing(tmp_path):
    src = tmp_path / 'src'
    write_png_folder(str(src), n=4)
    (src / 'sub1' / 'zz_broken.png').write_bytes(b'\x89PNG\r\n\x1a\nnot really a png')
    for dest in (tmp_path / 'out.zip', tmp_path / 'outdir'):
        assert_fails(run('--source', str(src), '--dest', str(dest)), 'zz_broken.png')
        assert not dest.exists()
    assert sorted(os.listdir(tmp_path)) == ['src']


def test_script_entry_point_runs():
    out = subprocess.run([sys.executable, '-m', 'scripts.dataset_tool', 'convert', '--help'],
                         capture_output=True, text=True, cwd='/', env=REPO_ENV, timeout=60)
    assert out.returncode == 0 and '--binarize' in out.stdout and 'Examples' in out.stdout
