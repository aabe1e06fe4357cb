"""train.py's command line: presets, option precedence, and one-line errors on bad input.

Every bad-input case checks the same contract: non-zero exit, one 'Error: ...' line naming the
problem, no traceback, and no run directory left behind.
"""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import click
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import train
from training import options as O

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Parameter counts of EDM's full-size networks (those of NVlabs/edm's networks), built from our presets.
PRESET_PARAMS = [
    ('cifar10-uncond', 32, 3, 0, 55_733_891),
    ('cifar10-cond', 32, 3, 10, 55_735_299),
    ('ffhq64', 64, 3, 0, 61_805_571),
    ('afhqv2-64', 64, 3, 0, 61_805_571),
    ('imagenet64', 64, 3, 1000, 295_899_267),
    ('mnist', 32, 1, 0, 15_429_889),
]


def invoke(args):
    return CliRunner().invoke(train.main, [str(a) for a in args])


def assert_one_line_error(result, *fragments, outdir=None):
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert 'Traceback' not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith('Error: '), result.output
    errors = [ln for ln in lines if ln.startswith('Error: ')]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    if outdir is not None:
        assert not os.path.exists(outdir) or os.listdir(outdir) == [], os.listdir(outdir)


def dataset_facts(resolution, channels, label_dim, endpoint='continuous'):
    return dict(name='x', resolution=resolution, num_channels=channels, label_dim=label_dim,
                has_labels=label_dim > 0, endpoint=endpoint, size=10, dataset_kwargs={'class_name': 'x'})


def write_png(path, size, channels=1, value=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = (size, size) if channels == 1 else (size, size, channels)
    PIL.Image.fromarray(np.full(shape, value, np.uint8)).save(path)


# ------------------------------------------------------------------------------------------------
# Presets and option precedence.

def test_help_lists_options_defaults_and_examples():
    result = invoke(['--help'])
    assert result.exit_code == 0
    for text in ('--sigma-dist', '--infonoise-endpoint', '--preset', '--resume', 'Examples:',
                 'python train.py --preset digits-demo --outdir runs', 'default: 512'):
        assert text in result.output, text


@pytest.mark.parametrize('name,res,channels,labels,expected', PRESET_PARAMS)
def test_image_presets_build_edm_networks_with_reference_parameter_counts(name, res, channels, labels, expected):
    opts = O.resolve_options({}, O.load_preset(name))
    config = O.build_config(opts, dataset_facts(res, channels, labels))
    with torch.device('meta'):
        net = dnnlib.util.construct_class_by_name(**config['network_kwargs'], img_resolution=res,
                                                  img_channels=channels, label_dim=labels)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_every_preset_loads_and_builds():
    names = O.list_presets()
    assert {'cifar10-uncond', 'cifar10-cond', 'ffhq64', 'afhqv2-64', 'imagenet64', 'mnist', 'fashionmnist',
            'bmnist', 'bfashionmnist', 'dna', 'digits-demo'} <= set(names)
    for name in names:
        dna = name.startswith('dna')
        opts = O.resolve_options({'data': 'dna:x.txt'} if dna else {}, O.load_preset(name))
        facts = dataset_facts(16, 4, 10, 'discrete')
        if dna:
            facts['dataset_kwargs'] = {'class_name': 'training.dataset_discrete.DNADataset'}
        config = O.build_config(opts, facts)
        assert config['batch_size'] == opts['batch']


def test_discrete_presets_differ_only_in_sigma_dist():
    base = O.resolve_options({}, O.load_preset('bmnist'))
    rows = {}
    for dist in ('loguniform', 'infonoise', 'lognormal'):
        opts = O.resolve_options({'sigma_dist': dist}, O.load_preset('bmnist'))
        config = O.build_config(opts, dataset_facts(32, 1, 0, 'discrete'))
        rows[dist] = config
        assert config['loss_kwargs']['weighting'] == 'unit'
    assert base['sigma_dist'] == 'loguniform'
    sampler = rows['infonoise']['sigma_sampler_kwargs']
    assert sampler['endpoint'] == 'discrete' and sampler['weighting'] == 'unit'
    assert sampler['base']['class_name'] == 'infonoise.LogUniformSampler'
    for key in rows['loguniform']:
        if key != 'sigma_sampler_kwargs':
            assert rows['loguniform'][key] == rows['infonoise'][key] == rows['lognormal'][key], key
    # The EDM transfer baseline is log-normal *and* w_EDM; every discrete preset's description says so.
    transfer = O.build_config(O.resolve_options({'sigma_dist': 'lognormal', 'weighting': 'edm'},
                                                O.load_preset('bmnist')), dataset_facts(32, 1, 0, 'discrete'))
    assert transfer['loss_kwargs']['weighting'] == 'edm'
    assert transfer['sigma_sampler_kwargs']['class_name'] == 'infonoise.LogNormalSampler'
    for name in ('bmnist', 'bfashionmnist', 'dna', 'bmnist5k-cpu', 'dna-cpu'):
        assert '--sigma-dist lognormal --weighting edm' in O.load_preset(name)['description'], name


def test_every_preset_scales_the_infonoise_warmup_to_its_length():
    # InfoNoise's warm-up is 2,000 steps at most, and presets scale it: at most 15% of the run's optimizer steps,
    # with a refresh interval no longer than the warm-up, so that InfoNoise adapts for most of the run.
    for name in O.list_presets():
        opts = O.resolve_options({}, O.load_preset(name))
        steps = O.total_kimg(opts) * 1000 / opts['batch']
        assert opts['infonoise_warmup'] <= min(2000, 0.15 * steps), (name, opts['infonoise_warmup'], steps)
        assert opts['infonoise_refresh'] <= max(opts['infonoise_warmup'], 1), name


def test_explicit_flags_override_preset_and_preset_overrides_defaults(tmp_path):
    result = invoke(['--outdir', tmp_path, '--preset', 'digits-demo', '--batch', 64, '--kimg', 3, '-n'])
    assert result.exit_code == 0, result.output
    assert 'Batch:                64 = 1 rank(s) x 64 x 1 round(s)' in result.output
    assert 'Training length:      3 kimg' in result.output
    assert 'channels 32 x [1, 2]' in result.output          # from the preset, not EDM's 128 x [2, 2, 2]
    assert os.listdir(tmp_path) == []                         # dry run writes nothing
    # --duration given explicitly replaces the preset's kimg.
    result = invoke(['--outdir', tmp_path, '--preset', 'digits-demo', '--duration', 0.012, '-n'])
    assert 'Training length:      12 kimg' in result.output


def test_flag_equal_to_default_still_overrides_preset():
    preset = O.load_preset('digits-demo')          # sets augment 0, cbase 32
    opts = O.resolve_options({'augment': O.DEFAULTS['augment']}, preset)
    assert opts['augment'] == 0.12 and opts['cbase'] == 32


def test_preset_file_path_and_unknown_keys(tmp_path):
    good = tmp_path / 'mine.json'
    good.write_text('{"options": {"batch": 32}, "network_kwargs": {"num_blocks": 1}}')
    preset = O.load_preset(str(good))
    assert preset['options'] == {'batch': 32} and preset['network_kwargs'] == {'num_blocks': 1}
    bad = tmp_path / 'bad.json'
    bad.write_text('{"options": {"batchsize": 32}}')
    with pytest.raises(O.OptionsError, match='batchsize'):
        O.load_preset(str(bad))
    # Values are converted and checked by the CLI's own click parameters, as flags are.
    for text, phrase in (('{"options": {"batch": "many"}}', "--batch='many'"),
                         ('{"options": {"infonoise_min_count": 0}}', 'x>=1'),
                         ('{"options": {"cres": [1, 0]}}', 'positive integers'),
                         ('{"options": {"arch": "unet"}}', "'unet' is not one of"),
                         ('{"options": {"lr": null}}', '--lr cannot be null')):
        bad.write_text(text)
        result = invoke(['--outdir', tmp_path / 'o', '--data', 'builtin:digits', '--preset', str(bad), '-n'])
        assert_one_line_error(result, f"Preset '{bad}'", phrase, outdir=tmp_path / 'o')
    bad.write_text('{"options": {"batch": 32.0, "cres": [1, 2], "xflip": true}, '
                   '"network_kwargs": {"attn_resolutions": []}}')   # 8x8 data: no 16x16 attention
    result = invoke(['--outdir', tmp_path / 'o', '--data', 'builtin:digits', '--preset', str(bad), '-n'])
    assert result.exit_code == 0 and 'Batch:                32 = 1 rank(s)' in result.output, result.output


def test_batch_geometry():
    assert O.batch_per_rank(512, None, 8) == (64, 1)
    assert O.batch_per_rank(512, 16, 8) == (16, 4)
    assert O.batch_per_rank(512, 1000, 2) == (256, 1)        # batch_gpu capped at the per-rank batch
    with pytest.raises(O.OptionsError, match='ranks'):
        O.batch_per_rank(100, None, 3)
    with pytest.raises(O.OptionsError, match='--batch-gpu'):
        O.batch_per_rank(96, 20, 2)


def test_auto_resolution_of_endpoint_weighting_and_infonoise_base():
    opts = O.resolve_options({'data': 'x', 'sigma_dist': 'infonoise'})
    cont = O.build_config(opts, dataset_facts(8, 1, 0, 'continuous'))['sigma_sampler_kwargs']
    disc = O.build_config(opts, dataset_facts(8, 1, 0, 'discrete'))['sigma_sampler_kwargs']
    assert cont['endpoint'] == 'continuous' and cont['base']['class_name'] == 'infonoise.LogNormalSampler'
    assert disc['endpoint'] == 'discrete' and disc['base']['class_name'] == 'infonoise.LogUniformSampler'
    assert cont['weighting'] == 'edm'
    ve = O.build_config(dict(opts, precond='ve'), dataset_facts(8, 1, 0))
    assert ve['sigma_sampler_kwargs']['weighting'] == 've' and 'weighting' not in ve['loss_kwargs']
    assert O.build_config(dict(opts, sigma_dist='auto'), dataset_facts(8, 1, 0))['sigma_sampler_kwargs'] is None


def test_duration_units():
    assert O.total_kimg(dict(O.DEFAULTS)) == 200000
    assert O.total_kimg(dict(O.DEFAULTS, duration=0.012)) == pytest.approx(12)
    assert O.total_kimg(dict(O.DEFAULTS, kimg=7.5)) == 7.5


# ------------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing written.

def test_unknown_preset(tmp_path):
    out = tmp_path / 'out'
    assert_one_line_error(invoke(['--outdir', out, '--preset', 'cifar11']), "Unknown preset 'cifar11'",
                          'cifar10-uncond', outdir=out)


def test_missing_data(tmp_path):
    out = tmp_path / 'out'
    assert_one_line_error(invoke(['--outdir', out, '--data', tmp_path / 'nope.zip']), 'does not exist', outdir=out)
    assert_one_line_error(invoke(['--outdir', out]), '--data', outdir=out)


def test_unreadable_data(tmp_path):
    out = tmp_path / 'out'
    junk = tmp_path / 'junk.zip'
    junk.write_bytes(b'not an archive at all')
    assert_one_line_error(invoke(['--outdir', out, '--data', junk]), 'junk.zip', outdir=out)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert_one_line_error(invoke(['--outdir', out, '--data', empty]), 'No image files', outdir=out)
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'img0.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    assert_one_line_error(invoke(['--outdir', out, '--data', broken]), 'img0.png', outdir=out)


def test_images_of_mixed_size_or_channels(tmp_path):
    out = tmp_path / 'out'
    write_png(str(tmp_path / 'mixed' / 'a.png'), 8)
    write_png(str(tmp_path / 'mixed' / 'b.png'), 9)
    assert_one_line_error(invoke(['--outdir', out, '--data', tmp_path / 'mixed']), 'b.png', outdir=out)
    write_png(str(tmp_path / 'chan' / 'a.png'), 8, channels=1)
    write_png(str(tmp_path / 'chan' / 'b.png'), 8, channels=3)
    assert_one_line_error(invoke(['--outdir', out, '--data', tmp_path / 'chan']), 'channel', outdir=out)


def test_corrupt_zip(tmp_path):
    out = tmp_path / 'out'
    archive = tmp_path / 'data.zip'
    with zipfile.ZipFile(archive, 'w', compression=zipfile.ZIP_STORED) as z:
        for i in range(4):
            write_png(str(tmp_path / 'src' / f'{i}.png'), 8, value=10 * i)
            z.write(tmp_path / 'src' / f'{i}.png', f'{i}.png')
    data = bytearray(archive.read_bytes())
    archive.write_bytes(bytes(data[: len(data) // 2]))       # truncated: central directory gone
    assert_one_line_error(invoke(['--outdir', out, '--data', archive]), 'data.zip', outdir=out)


def test_cond_without_labels(tmp_path):
    out = tmp_path / 'out'
    for i in range(3):
        write_png(str(tmp_path / 'imgs' / f'{i}.png'), 8)
    assert_one_line_error(invoke(['--outdir', out, '--data', tmp_path / 'imgs', '--cond', 1]),
                          '--cond requires class labels', outdir=out)


@pytest.mark.parametrize('args,fragment', [
    (['--batch', 100, '--batch-gpu', 30], 'not divisible by ranks x --batch-gpu'),
    (['--fp16', 1, '--bf16'], '--fp16 and --bf16'),
    (['--duration', 1, '--kimg', 5], '--duration and --kimg'),
    (['--transfer', 'a.pkl', '--resume', 'b'], '--transfer and --resume'),
    (['--sigma-min', 5, '--sigma-max', 1], '--sigma-max'),
    (['--infonoise-buffer', 8, '--infonoise-min-count', 9], '--infonoise-min-count'),
])
def test_conflicting_or_invalid_options(tmp_path, args, fragment):
    out = tmp_path / 'out'
    result = invoke(['--outdir', out, '--data', 'builtin:digits', *args])
    assert_one_line_error(result, fragment, outdir=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_requested_without_cuda(tmp_path):
    out = tmp_path / 'out'
    assert_one_line_error(invoke(['--outdir', out, '--data', 'builtin:digits', '--device', 'cuda']),
                          'no CUDA device', outdir=out)


def test_resume_of_missing_file_or_empty_run_dir(tmp_path):
    out = tmp_path / 'out'
    assert_one_line_error(invoke(['--outdir', out, '--data', 'builtin:digits', '--resume', tmp_path / 'x.pt']),
                          'does not exist', outdir=out)
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / '.training-state-000004.pt.1234.tmp').write_bytes(b'partial')
    result = invoke(['--outdir', out, '--preset', 'digits-demo', '--resume', run_dir, '--dry-run'])
    assert result.exit_code == 0 and 'holds no training state yet; starting a new run there' in result.output
    fake = run_dir / 'training-state-000004.pt'
    fake.write_bytes(b'definitely not a torch file')
    assert_one_line_error(invoke(['--outdir', out, '--resume', run_dir]), 'training-state-000004.pt', outdir=out)


def test_error_is_one_line_on_stderr_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--outdir', str(tmp_path / 'o'),
                           '--data', str(tmp_path / 'missing')], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert proc.stdout == ''
    assert proc.stderr.strip().count('\n') == 0 and proc.stderr.startswith('Error: --data'), proc.stderr
    assert not os.path.exists(tmp_path / 'o')


def test_every_option_is_declared_once_and_the_cli_follows_the_declaration():
    params = {p.name: p for p in train.main.params}
    assert set(params) == {o.name for o in O.OPTIONS}
    for option in O.OPTIONS:
        param = params[option.name]
        assert param.opts[-1] == O.flag(option.name)
        if option.default is not None and not option.is_flag:
            assert param.default == option.default, option.name
        for bad in ([option.lo - 1] if option.lo is not None and option.type in (int, float) else []):
            with pytest.raises(click.BadParameter, match='range'):   # presets and resumed options meet it too
                param.type_cast_value(click.Context(train.main), option.type(bad))
    assert set(O.DEFAULTS) == {o.name for o in O.OPTIONS} - {'outdir', 'preset', 'dry_run'}
    assert set(O.RUN_ONLY) == {'outdir', 'preset', 'desc', 'nosubdir', 'dry_run', 'resume', 'transfer'}


@pytest.mark.parametrize('value', [0, -3])
def test_min_count_range_is_the_same_for_cli_and_presets(tmp_path, value):
    # The CLI and the validation derive the range from one declaration (they used to disagree: >=1 vs >=0).
    result = invoke(['--outdir', tmp_path / 'o', '--data', 'builtin:digits', '--infonoise-min-count', value])
    assert result.exit_code != 0 and 'x>=1' in result.output
    preset = tmp_path / 'p.json'
    preset.write_text(json.dumps(dict(options=dict(infonoise_min_count=value))))
    result = invoke(['--outdir', tmp_path / 'o', '--data', 'builtin:digits', '--preset', preset])
    assert result.exit_code != 0 and 'x>=1' in result.output


def test_unknown_metric_name_is_one_clear_error(tmp_path):
    out = tmp_path / 'out'
    result = invoke(['--outdir', out, '--data', 'builtin:digits', '--metrics', 'fd-digits,fid-ish'])
    assert_one_line_error(result, "unknown metric 'fid-ish'", outdir=out)
