"""training.dataset / training.dataset_discrete on real files written here in the real formats."""
import gzip
import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from dnnlib.util import construct_class_by_name
from training.dataset import (DigitsDataset, ImageFolderDataset, dataset_kwargs_from_spec, load_digits_uint8,
                              open_dataset)
from training.dataset_discrete import BinarizedDataset, DNADataset, decode_dna, encode_dna, one_hot_dna

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DNA_EXCERPT = os.path.join(ROOT, 'tests', 'data', 'dna_excerpt.tsv')   # 60 real rows, see tests/data/README.md
DNA_REAL = os.environ.get('INFONOISE_DNA_TABLES', '')   # DNA-Diffusion's K562 + HepG2 tables (folder), if given


def _png_bytes(hwc):
    buf = io.BytesIO()
    PIL.Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).save(buf, format='png')
    return buf.getvalue()


def _make_images(n=6, res=4, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=[n, res, res, channels], dtype=np.uint8)


def _write_folder(root, images, labels=None, meta_extra=None):
    os.makedirs(root, exist_ok=True)
    names = []
    for i, img in enumerate(images):
        name = f'{i // 4:05d}/img{i:08d}.png'
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(root, name), 'wb') as f:
            f.write(_png_bytes(img))
        names.append(name)
    if labels is not None or meta_extra:
        meta = {'labels': None if labels is None else [[n, int(l)] for n, l in zip(names, labels)]}
        meta.update(meta_extra or {})
        with open(os.path.join(root, 'dataset.json'), 'w') as f:
            json.dump(meta, f)
    return names


def _write_zip(path, images, labels=None):
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        names = []
        for i, img in enumerate(images):
            name = f'00000/img{i:08d}.png'
            z.writestr(name, _png_bytes(img))
            names.append(name)
        if labels is not None:
            z.writestr('dataset.json', json.dumps({'labels': [[n, int(l)] for n, l in zip(names, labels)]}))


@pytest.fixture
def rgb_folder(tmp_path):
    images = _make_images()
    labels = np.array([3, 0, 2, 3, 1, 0])
    root = str(tmp_path / 'rgbset')
    _write_folder(root, images, labels)
    return root, images, labels


# ------------------------------------------------------------------------------------------------
# ImageFolderDataset

def test_folder_pixels_labels_and_shapes(rgb_folder):
    root, images, labels = rgb_folder
    ds = ImageFolderDataset(root, use_labels=True)
    assert len(ds) == 6 and ds.image_shape == [3, 4, 4] and ds.num_channels == 3 and ds.resolution == 4
    assert ds.name == 'rgbset' and ds.endpoint == 'continuous'
    assert ds.label_shape == [4] and ds.label_dim == 4 and ds.has_labels and ds.has_onehot_labels
    for i in range(6):
        img, lab = ds[i]
        assert img.dtype == np.uint8 and np.array_equal(img, images[i].transpose(2, 0, 1))
        assert lab.dtype == np.float32 and np.array_equal(lab, np.eye(4, dtype=np.float32)[labels[i]])
    unlabeled = ImageFolderDataset(root)
    assert unlabeled.label_shape == [0] and not unlabeled.has_labels and unlabeled[0][1].shape == (0,)


def test_zip_matches_folder_and_grayscale_is_one_channel(tmp_path):
    images = _make_images(n=5, res=8, channels=1, seed=1)
    labels = np.arange(5) % 2
    _write_zip(str(tmp_path / 'g.zip'), images, labels)
    ds = ImageFolderDataset(str(tmp_path / 'g.zip'), use_labels=True, resolution=8)
    assert ds.image_shape == [1, 8, 8] and ds.label_dim == 2
    for i in range(5):
        assert np.array_equal(ds[i][0], images[i].transpose(2, 0, 1))
        assert ds[i][1].argmax() == labels[i]


def test_jpeg_grayscale_folder(tmp_path):
    root = tmp_path / 'jpg'
    root.mkdir()
    flat = np.full([16, 16], 100, dtype=np.uint8)
    for i in range(3):
        PIL.Image.fromarray(flat + 20 * i).save(root / f'{i}.jpg', quality=95)
    ds = ImageFolderDataset(str(root))
    assert ds.image_shape == [1, 16, 16]
    for i in range(3):
        assert np.abs(ds[i][0].astype(int) - (100 + 20 * i)).max() <= 2  # lossy codec, flat image


def test_max_size_subset_and_xflip(rgb_folder):
    root, images, _ = rgb_folder
    ds = ImageFolderDataset(root, max_size=4, random_seed=7, xflip=True)
    # Reference rule: shuffle arange(N) with RandomState(seed), keep the first max_size, sorted.
    order = np.arange(6)
    np.random.RandomState(7).shuffle(order)
    expected_raw = np.sort(order[:4])
    assert len(ds) == 8
    for i in range(8):
        d = ds.get_details(i)
        assert d.raw_idx == expected_raw[i % 4] and d.xflip == (i >= 4)
        want = images[d.raw_idx].transpose(2, 0, 1)
        assert np.array_equal(ds[i][0], want[:, :, ::-1] if d.xflip else want)
    assert ImageFolderDataset(root, max_size=100).get_details(5).raw_idx == 5
    other = ImageFolderDataset(root, max_size=4, random_seed=8)
    assert len(other) == 4


def test_pickle_dataset_kwargs_and_dataloader_workers(tmp_path):
    images = _make_images(n=8, res=4, seed=3)
    labels = np.arange(8) % 3
    path = str(tmp_path / 'd.zip')
    _write_zip(path, images, labels)
    ds = ImageFolderDataset(path, use_labels=True, cache=True)
    ds[0]  # opens the zip in this process
    clone = pickle.loads(pickle.dumps(ds))
    rebuilt = construct_class_by_name(**ds.dataset_kwargs)
    assert ds.dataset_kwargs.class_name == 'training.dataset.ImageFolderDataset'
    for other in (clone, rebuilt):
        for i in range(8):
            assert np.array_equal(other[i][0], ds[i][0]) and np.array_equal(other[i][1], ds[i][1])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = [x for x, _ in loader]
    got = torch.cat(batches).numpy()
    assert np.array_equal(got, images.transpose(0, 3, 1, 2))


def test_endpoint_from_dataset_json(tmp_path):
    root = str(tmp_path / 'b')
    _write_folder(root, (_make_images(n=2) > 127).astype(np.uint8) * 255, meta_extra={'endpoint': 'discrete'})
    assert ImageFolderDataset(root).endpoint == 'discrete'


@pytest.mark.parametrize('case', ['missing', 'empty', 'corrupt_zip', 'not_zip', 'mixed_size', 'mixed_channels',
                                  'no_json', 'null_labels', 'incomplete', 'resolution', 'corrupt_image'])
def test_folder_errors(tmp_path, case):
    root = str(tmp_path / 'ds')
    kwargs = {}
    err = ValueError
    if case == 'missing':
        root, err = str(tmp_path / 'nope'), OSError
    elif case == 'empty':
        os.makedirs(root)
        open(os.path.join(root, 'readme.txt'), 'w').close()
        err = OSError
    elif case == 'corrupt_zip':
        _write_zip(str(tmp_path / 'x.zip'), _make_images(n=3))
        data = open(tmp_path / 'x.zip', 'rb').read()
        root = str(tmp_path / 'bad.zip')
        with open(root, 'wb') as f:
            f.write(data[:len(data) // 2] + b'\0' * 64 + data[-22:])  # central directory points at garbage
        err = OSError
    elif case == 'not_zip':
        root = str(tmp_path / 'x.zip')
        open(root, 'wb').write(b'this is not a zip archive at all')
        err = OSError
    elif case == 'mixed_size':
        _write_folder(root, _make_images(n=2, res=4))
        PIL.Image.fromarray(_make_images(n=1, res=8)[0]).save(os.path.join(root, 'zzz.png'))
    elif case == 'mixed_channels':
        _write_folder(root, _make_images(n=2, res=4))
        PIL.Image.fromarray(_make_images(n=1, res=4, channels=1)[0, :, :, 0]).save(os.path.join(root, 'zzz.png'))
    elif case == 'no_json':
        _write_folder(root, _make_images(n=2))
        kwargs = dict(use_labels=True)
    elif case == 'null_labels':
        _write_folder(root, _make_images(n=2), meta_extra={'labels': None})
        kwargs = dict(use_labels=True)
    elif case == 'incomplete':
        names = _write_folder(root, _make_images(n=3), labels=[0, 1, 2])
        json.dump({'labels': [[names[0], 0], [names[1], 1]]}, open(os.path.join(root, 'dataset.json'), 'w'))
        kwargs = dict(use_labels=True)
    elif case == 'resolution':
        _write_folder(root, _make_images(n=2, res=4))
        kwargs = dict(resolution=8)
    elif case == 'corrupt_image':
        _write_folder(root, _make_images(n=2, res=4))
        open(os.path.join(root, 'zzz.png'), 'wb').write(b'\x89PNG\r\n\x1a\n garbage')
        err = OSError
    with pytest.raises(err) as info:
        ImageFolderDataset(root, **kwargs)
    msg = str(info.value)
    assert msg and '\n' not in msg
    if case.startswith('mixed'):
        assert 'zzz.png' in msg


def test_verify_false_defers_mismatch_to_load(tmp_path):
    root = str(tmp_path / 'ds')
    _write_folder(root, _make_images(n=2, res=4))
    PIL.Image.fromarray(_make_images(n=1, res=8)[0]).save(os.path.join(root, 'zzz.png'))
    ds = ImageFolderDataset(root, verify=False)
    ds[0]
    with pytest.raises(ValueError):
        ds[2]


# ------------------------------------------------------------------------------------------------
# Built-in digits and binarisation

def test_builtin_digits_pixel_rule_and_labels():
    from sklearn.datasets import load_digits
    raw = load_digits()
    ds = open_dataset('builtin:digits', use_labels=True)
    assert isinstance(ds, DigitsDataset) and len(ds) == 1797 and ds.image_shape == [1, 8, 8]
    assert ds.label_dim == 10 and ds.endpoint == 'continuous'
    # Documented rule: round(255 v / 16), halves up; the table below is computed by hand.
    table = {0: 0, 1: 16, 2: 32, 3: 48, 4: 64, 8: 128, 15: 239, 16: 255}
    for i in (0, 1, 500, 1796):
        img, lab = ds[i]
        for v, want in table.items():
            assert np.all(img[0][raw.images[i] == v] == want)
        assert lab.argmax() == raw.target[i] and lab.sum() == 1
    images, labels = load_digits_uint8()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)


def test_builtin_digits_binary_threshold_at_half_range():
    from sklearn.datasets import load_digits
    raw = load_digits().images
    ds = open_dataset('builtin:digits-binary', max_size=50, random_seed=3)
    assert isinstance(ds, BinarizedDataset) and ds.endpoint == 'discrete' and len(ds) == 50
    for i in range(50):
        img, _ = ds[i]
        want = np.where(raw[ds.get_details(i).raw_idx] >= 8, 255, 0)
        assert np.array_equal(img[0], want)
    clone = construct_class_by_name(**ds.dataset_kwargs)
    clone2 = pickle.loads(pickle.dumps(ds))
    for other in (clone, clone2):
        assert len(other) == 50 and all(np.array_equal(other[i][0], ds[i][0]) for i in range(50))


def test_binarized_wrapping_an_instance(rgb_folder):
    root, images, labels = rgb_folder
    base = ImageFolderDataset(root, use_labels=True, xflip=True)
    ds = BinarizedDataset(base, threshold=0.25)
    assert len(ds) == 12 and ds.label_dim == 4 and ds.image_shape == [3, 4, 4]
    for i in range(12):
        x, lab = ds[i]
        bx, blab = base[i]
        assert np.array_equal(x, np.where(bx.astype(int) * 4 > 255, 255, 0)) and np.array_equal(lab, blab)
    rebuilt = construct_class_by_name(**ds.dataset_kwargs)
    assert np.array_equal(rebuilt[7][0], ds[7][0])
    with pytest.raises(ValueError):
        BinarizedDataset(base, threshold=1.0)


def test_open_dataset_specs(tmp_path, rgb_folder):
    root, _, _ = rgb_folder
    assert isinstance(open_dataset(root), ImageFolderDataset)
    assert open_dataset('binary:' + root).endpoint == 'discrete'
    kw = dataset_kwargs_from_spec(root, use_labels=True, xflip=False)
    assert kw == dict(class_name='training.dataset.ImageFolderDataset', path=root, use_labels=True, xflip=False)
    assert len(open_dataset(dict(kw))) == 6
    via_spec = open_dataset(dict(spec='builtin:digits-binary', use_labels=True, max_size=10))
    assert via_spec.endpoint == 'discrete' and len(via_spec) == 10 and via_spec.label_dim == 10
    with pytest.raises(ValueError):
        open_dataset(dict(path=root))
    for bad in ('builtin:cifar', 'dna:'):
        with pytest.raises(ValueError):
            open_dataset(bad)
    with pytest.raises(ValueError):
        open_dataset('builtin:digits', resolution=16)


# ------------------------------------------------------------------------------------------------
# DNA

PER_CELL_HEADER = ['dhs_id', 'chr', 'start', 'end', 'DHS_width', 'summit', 'numsamples', 'total_signal', 'component',
                   'proportion', 'sequence', 'GM12878_ENCLB441ZZZ', 'hESCT0_ENCLB449ZZZ', 'K562_ENCLB843GMH',
                   'HepG2_ENCLB029COU', 'TAG', 'addtional_rep_with_this_peak',
                   'other_samples_with_this_peak_not_considering_reps', 'data_label']


def _random_seqs(n, length, seed):
    rng = np.random.default_rng(seed)
    return [''.join(rng.choice(list('ACGT'), size=length)) for _ in range(n)]


def _write_per_cell(path, seqs, tag, splits, header=PER_CELL_HEADER):
    lines = ['\t'.join(header)]
    for i, (s, sp) in enumerate(zip(seqs, splits)):
        row = [f'chr1_{i}', 'chr1', str(i), str(i + 200), '200', str(i + 100), '5', '3.7', '15', '0.56', s,
               '0', '0', '1', '0', tag, '4', '0', sp]
        lines.append('\t'.join(row[:len(header)]))
    open(path, 'w').write('\n'.join(lines) + '\n')


def _excerpt_rows():
    """The excerpt parsed independently of the loader: (sequence, TAG, data_label) in file order."""
    with open(DNA_EXCERPT) as f:
        header = f.readline().rstrip('\n').split('\t')
        rows = [line.rstrip('\n').split('\t') for line in f if line.strip()]
    col = {name: header.index(name) for name in ('sequence', 'TAG', 'data_label')}
    return [(r[col['sequence']], r[col['TAG']], r[col['data_label']]) for r in rows]


def test_dna_excerpt_items_labels_and_splits():
    rows = _excerpt_rows()
    ds = DNADataset(DNA_EXCERPT, use_labels=True)
    assert ds.endpoint == 'discrete' and ds.image_shape == [4, 200] and ds.resolution == 200
    assert ds.cell_types == ['HepG2_ENCLB029COU', 'K562_ENCLB843GMH'] and ds.label_dim == 2
    training = [(s, t) for s, t, split in rows if split == 'training']
    assert len(ds) == len(training) == 40 and ds.num_skipped == 0
    for i, (seq, tag) in enumerate(training):
        x, label = ds[i]
        assert x.dtype == np.uint8 and x.shape == (4, 200)
        want = np.array([[255 if seq[pos] == base else 0 for pos in range(200)] for base in 'ACGT'])
        assert np.array_equal(x, want)
        assert label.tolist() == [float(tag == 'HepG2_ENCLB029COU'), float(tag == 'K562_ENCLB843GMH')]
    x = ds[0][0].astype(np.float32) / 127.5 - 1          # the training loop's mapping gives exact +-1
    assert set(np.unique(x)) == {-1.0, 1.0} and (x.sum(axis=0) == -2).all()
    assert ds.sequences() == [s for s, _ in training] and ds.item_cell_types() == [t for _, t in training]
    for split in ('validation', 'test'):
        part = DNADataset(DNA_EXCERPT, split=split, use_labels=True)
        assert part.sequences() == [s for s, _, sp in rows if sp == split] and part.label_dim == 2
    assert len(DNADataset(DNA_EXCERPT, split=None)) == 60
    # dataset_kwargs reopen the same data and carry the class names.
    kwargs = ds.dataset_kwargs
    assert kwargs['cell_types'] == ds.cell_types
    again = construct_class_by_name(**kwargs)
    assert again.sequences() == ds.sequences() and again.label_dim == 2


def test_dna_folder_spec_and_cell_type_filter(tmp_path):
    folder = tmp_path / 'tables'
    folder.mkdir()
    (folder / 'excerpt.tsv').write_text(open(DNA_EXCERPT).read())
    (folder / 'README.md').write_text('not a table\n')
    ds = open_dataset('dna:' + str(folder), use_labels=True)
    assert isinstance(ds, DNADataset) and len(ds) == 40 and ds.name == 'tables'
    k562 = DNADataset(str(folder), cell_type='K562', use_labels=True)
    assert len(k562) == 20 and k562.label_dim == 2
    assert all(k562[i][1].tolist() == [0.0, 1.0] for i in range(len(k562)))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='no DNA tables'):
        DNADataset(str(empty))


def test_dna_padding_lowercase_n_rows_and_fixed_cell_types(tmp_path):
    seqs = ['ACGTACGTAC', 'acgtt', 'ACNTA', 'GGGGGGGGGG']
    path = str(tmp_path / 'K562_X.txt')
    _write_per_cell(path, seqs, 'K562_ENCLB843GMH', ['training'] * 4)
    ds = DNADataset(path, seq_len=10, use_labels=True, cell_types=['HepG2_ENCLB029COU', 'K562_ENCLB843GMH'])
    assert len(ds) == 3 and ds.num_skipped == 1            # the row with N is skipped, as DNA-Diffusion does
    assert ds.label_dim == 2 and all(ds[i][1].tolist() == [0.0, 1.0] for i in range(3))
    short = ds[1][0]
    assert short[:, :5].sum(axis=0).tolist() == [255] * 5 and not short[:, 5:].any()   # padding: no base
    assert decode_dna(short[:, :5]) == ['ACGTT'] and ds.sequences()[1] == 'ACGTT'
    with pytest.raises(ValueError, match='not among cell_types'):
        DNADataset(path, seq_len=10, cell_types=['HepG2_ENCLB029COU'])


def _excerpt_table():
    """The excerpt's header and rows (all 19 columns), parsed independently of the loader."""
    with open(DNA_EXCERPT) as f:
        header = f.readline().rstrip('\n').split('\t')
        rows = [line.rstrip('\n').split('\t') for line in f if line.strip()]
    return header, rows


def _write_table(path, header, rows):
    text = '\n'.join('\t'.join(r) for r in [header] + rows) + '\n'
    if str(path).endswith('.gz'):
        with gzip.open(path, 'wt') as f:
            f.write(text)
    else:
        open(path, 'w').write(text)
    return str(path)


def test_dna_chromosome_split_and_gzip_tables(tmp_path):
    header, rows = _excerpt_table()
    label = header.index('data_label')
    no_label = _write_table(tmp_path / 'nolabel.tsv', header[:label], [r[:label] for r in rows])
    for split in ('training', 'validation', 'test'):      # chr1 = test, chr2 = validation, as data_label says here
        want = DNADataset(DNA_EXCERPT, split=split).sequences()
        assert DNADataset(no_label, split=split).sequences() == want
    gz = _write_table(tmp_path / 'excerpt.txt.gz', header, rows)
    ds = DNADataset(gz, use_labels=True)
    assert ds.sequences() == DNADataset(DNA_EXCERPT).sequences() and ds.name == 'excerpt'
    folder = tmp_path / 'gzfolder'
    folder.mkdir()
    _write_table(folder / 'a.tsv.gz', header, rows[:30])
    _write_table(folder / 'b.txt', header, rows[30:])
    assert len(open_dataset('dna:' + str(folder), use_labels=True)) == 40


def _refused(path, phrase):
    with pytest.raises(ValueError, match=phrase) as info:
        DNADataset(path)
    message = str(info.value)
    assert str(path) in message and message.count('. ') == 0 and message.endswith('.')   # one sentence, names the file


def test_dna_refuses_tables_that_are_not_training_tables(tmp_path):
    header, rows = _excerpt_table()
    col = {name: header.index(name) for name in header}
    # DNA-Diffusion's 7-column validation table, built from the same real rows.
    seven = [[r[col['chr']], r[col['start']], r[col['end']], r[col['dhs_id']], r[col['TAG']].split('_')[0],
              r[col['sequence']], tag] for r, tag in zip(rows, ['training', 'GENERATED', 'PROMOTERS'] * 20)]
    _refused(_write_table(tmp_path / 'validation.txt',
                          ['chrom', 'start', 'end', 'ID', 'CELL_TYPE', 'SEQUENCE', 'TAG'], seven),
             'validating generated sequences')
    # TAGs that are not cell types: a control name, a split name, a name that is none of the table's cell columns.
    for i, tag in enumerate(('GENERATED', 'RANDOM_GENOME_REGIONS', 'NO', 'training', 'HEPG2')):
        bad = [list(r) for r in rows]
        bad[7][col['TAG']] = tag
        _refused(_write_table(tmp_path / f'tag{i}.txt', header, bad), f"line 9: TAG '{tag}' is not a cell type")
    # data_label outside training / validation / test.
    for i, label in enumerate(('GENERATED', 'train', '')):
        bad = [list(r) for r in rows]
        bad[3][col['data_label']] = label
        _refused(_write_table(tmp_path / f'label{i}.txt', header, bad), f"line 5: data_label '{label}' is not one of")
    # A folder whose tables repeat sequences: the whole excerpt beside its own K562 rows.
    folder = tmp_path / 'twice'
    folder.mkdir()
    _write_table(folder / 'all.txt.gz', header, rows)
    _write_table(folder / 'K562.txt', header, [r for r in rows if r[col['TAG']].startswith('K562')])
    with pytest.raises(ValueError, match='share 30 sequences') as info:
        open_dataset('dna:' + str(folder))
    assert 'all.txt.gz' in str(info.value) and 'K562.txt' in str(info.value) and str(info.value).count('. ') == 0


DNA4_REAL = os.path.join(ROOT, '..', 'shared', 'data', 'dna4')
DNA4_TABLE = os.path.join(DNA4_REAL, 'K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz')


@pytest.mark.skipif(not os.path.isfile(DNA4_TABLE), reason='the four-cell-type table (../shared/data/dna4) is absent')
def test_dna_four_cell_types_from_the_real_table(tmp_path):
    with gzip.open(DNA4_TABLE, 'rt') as f:
        header = f.readline().rstrip('\n').split('\t')
        rows = [line.rstrip('\n').split('\t') for line in f]
    tag, label = header.index('TAG'), header.index('data_label')
    cut = []
    for cell in sorted({r[tag] for r in rows}):
        for split, n in (('training', 6), ('test', 2)):
            cut += [r for r in rows if r[tag] == cell and r[label] == split][:n]
    small = _write_table(tmp_path / 'dna4.txt.gz', header, cut)
    ds = DNADataset(small, use_labels=True)
    assert ds.cell_types == ['GM12878_ENCLB441ZZZ', 'HepG2_ENCLB029COU', 'K562_ENCLB843GMH', 'hESCT0_ENCLB449ZZZ']
    assert len(ds) == 24 and ds.label_dim == 4 and len(DNADataset(small, split='test')) == 8
    assert ds.item_cell_types() == [r[tag] for r in cut if r[label] == 'training']
    # The four-cell table beside a per-cell table of its own rows is refused, never trained twice.
    folder = tmp_path / 'both'
    folder.mkdir()
    _write_table(folder / 'dna4.txt.gz', header, cut)
    _write_table(folder / 'K562_ENCLB843GMH.txt', header, [r for r in cut if r[tag].startswith('K562')])
    with pytest.raises(ValueError, match='share 8 sequences'):
        DNADataset(str(folder))
    full = DNADataset(DNA4_REAL, use_labels=True)                       # the folder itself: README.md is skipped
    assert len(full) == 9903 + 9833 + 9769 + 9749 and full.label_dim == 4 and full.num_skipped == 0


def test_one_hot_decode_round_trip():
    rng = np.random.default_rng(5)
    seqs = [''.join(rng.choice(list('ACGT'), size=200)) for _ in range(5)]
    onehot = one_hot_dna(seqs, 200)
    assert onehot.shape == (5, 4, 200) and set(np.unique(onehot)) == {0, 255}
    assert decode_dna(onehot) == seqs
    x = torch.from_numpy(onehot).float() / 127.5 - 1
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert decode_dna(noisy) == seqs                      # argmax survives noise well below the +-1 gap
    assert encode_dna(['AC', 'gT', 'AN']).tolist() == [[0, 1], [2, 3], [0, 5]]
    with pytest.raises(ValueError):
        one_hot_dna(['ACNT'])
    with pytest.raises(ValueError):
        decode_dna(np.zeros([2, 3, 10]))


def test_dna_errors(tmp_path):
    path = str(tmp_path / 'K562_X.txt')
    _write_per_cell(path, _random_seqs(2, 20, seed=2), 'K562_ENCLB843GMH', ['training'] * 2)
    for kwargs in (dict(xflip=True), dict(cell_type='HepG2'), dict(split='dev'), dict(seq_len=10),
                   dict(resolution=32)):
        with pytest.raises(ValueError):
            DNADataset(path, seq_len=kwargs.pop('seq_len', 20), **kwargs)
    with pytest.raises(FileNotFoundError):
        DNADataset(str(tmp_path / 'missing.txt'))
    # Unknown layouts and letters: one sentence naming the file.
    no_seq = str(tmp_path / 'noseq.txt')
    _write_per_cell(no_seq, _random_seqs(2, 20, seed=3), 'K562_ENCLB843GMH', ['training'] * 2,
                    header=[h if h != 'sequence' else 'seq' for h in PER_CELL_HEADER])
    no_type = str(tmp_path / 'notype.txt')
    _write_per_cell(no_type, _random_seqs(2, 20, seed=3), 'K562_ENCLB843GMH', ['training'] * 2,
                    header=[h if h != 'TAG' else 'label' for h in PER_CELL_HEADER])
    bad_letter = str(tmp_path / 'letters.txt')
    _write_per_cell(bad_letter, ['ACGT' * 5, 'ACGX' * 5], 'K562_ENCLB843GMH', ['training'] * 2)
    for bad, phrase in ((no_seq, 'no sequence column'), (no_type, 'no cell-type column'), (bad_letter, "'X'")):
        with pytest.raises(ValueError, match=phrase) as info:
            DNADataset(bad, seq_len=20)
        assert bad in str(info.value) and str(info.value).count('. ') == 0
    spec_ds = open_dataset('dna:' + path, split=None, seq_len=20)
    assert isinstance(spec_ds, DNADataset) and len(spec_ds) == 2


@pytest.mark.skipif(not os.path.isdir(DNA_REAL), reason='INFONOISE_DNA_TABLES does not name a folder of the DNA-Diffusion tables')
def test_dna_real_tables_folder():
    ds = DNADataset(DNA_REAL, use_labels=True)
    assert len(ds) == 9769 + 9833 and ds.num_skipped == 0 and ds.label_dim == 2   # training rows of both tables
    rows = _excerpt_rows()                  # the excerpt's first rows are the tables' first training rows
    hepg2_first = next(s for s, t, sp in rows if t.startswith('HepG2') and sp == 'training')
    assert ds.sequences()[0] == hepg2_first and ds.item_cell_types()[0] == 'HepG2_ENCLB029COU'
