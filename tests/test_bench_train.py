"""scripts/bench_train.py: network-only vs loop throughput, its phase accounting, report format and bad input; the
fast-path and generation modes; the shared timer (torch_utils.timing)."""
import json
import re
import time

import pytest
from click.testing import CliRunner
from helpers import assert_clean_error

from scripts import bench_train as bench

pytestmark = pytest.mark.usefixtures('one_torch_thread')

# A tiny digits-demo: 8 channels, batch 16; --quick = 1 repetition of 8 steps (3 warm-up).
TINY = ['--config', 'digits-demo', '--quick', '--cbase', '8', '--batch', '16', '--threads', '1']


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp('bench') / 'out.json'
    result = CliRunner().invoke(bench.main, TINY + ['--compare-sigma', '--json', str(path)])
    assert result.exit_code == 0, result.output
    with open(path, encoding='utf-8') as f:
        return result.output, json.load(f)


def test_last_line_is_the_ratio_of_the_two_throughputs(quick_run):
    output, data = quick_run
    last = output.rstrip('\n').splitlines()[-1]
    match = re.fullmatch(r'loop/network ratio: (\d+\.\d+)', last)
    assert match, last
    assert float(match.group(1)) == pytest.approx(data['loop_img_per_s'] / data['network_img_per_s'], abs=6e-4)
    assert data['ratio'] == pytest.approx(data['loop_img_per_s'] / data['network_img_per_s'])
    assert data['samples']['network'] == [data['network_img_per_s']]   # one repetition: the median is the sample


def test_phases_account_for_the_measured_step_time(quick_run):
    _, data = quick_run
    loop, net = data['phases_loop_ms'], data['phases_network_ms']
    assert {'data', 'forward', 'stats', 'sampler', 'backward', 'nonfinite', 'optimizer', 'ema', 'other'} <= set(loop)
    assert set(net) >= {'forward', 'backward', 'optimizer'} and 'data' not in net
    # The network-only laps run in the timed steps themselves, and the loop's phases come from one profiled run:
    # together they are the whole step of their run, so their sum must equal the step time its img/s implies.
    # (The network-only laps and its stopwatch start and stop a few statements apart: on a loaded machine a context
    # switch there stretches the wall time by a few percent of these short quick-mode steps, hence 5 %.)
    for phases, rate in ((loop, data['profiled_loop_img_per_s']), (net, data['network_img_per_s'])):
        assert sum(phases.values()) == pytest.approx(1e3 * data['batch'] / rate, rel=0.05)
    # The loop's profiler ranges cover the step's work: what is left ('other': progress, tick bookkeeping) is small.
    assert 0 <= loop['other'] < 0.5 * sum(v for k, v in loop.items() if k != 'other')
    assert loop['forward'] > 0 and loop['backward'] > 0
    assert data['loop_only_ms'] == pytest.approx(sum(loop[k] for k in bench.LOOP_ONLY))


def test_report_names_the_phases_start_up_and_sigma_comparison(quick_run):
    output, data = quick_run
    assert data['batch'] == 16 and data['sigma_dist'] == 'infonoise' and data['config'] == 'digits-demo'
    assert data['other_sigma']['sigma_dist'] == 'lognormal' and data['other_sigma']['img_per_s'] > 0
    s = data['startup']
    assert set(s['parts_s']) == set(bench.STARTUP) and all(v >= 0 for v in s['parts_s'].values())
    # The parts make up the set-up: only the code between the profiled ranges is left out (a few ms on an idle
    # machine, tens of ms on a loaded one), so a phase missing from the ranges shows as a large shortfall.
    parts = sum(s['parts_s'].values())
    assert 0.8 * s['setup_s'] <= parts <= s['setup_s'] + 0.01
    assert s['first_step_s'] > 0 and s['imports_s'] > 0
    for text in ('network-only step', 'training loop (infonoise)', 'training loop (lognormal)', 'nonfinite',
                 'loop-only phases', 'start-up of the first loop run', 'per CPU-second', '--quick'):
        assert text in output, text


def test_step_clock_charges_each_phase_with_its_own_time():
    timer = bench.StepClock('cpu', warmup=1, steps=3, laps=True)
    time.sleep(0.2)
    timer.lap('before')
    timer.tick()                            # the warm-up ends: the phases count from here
    time.sleep(0.02)
    timer.lap('a')
    timer.lap('b')
    time.sleep(0.01)
    timer.lap('a')
    assert timer.totals['a'] >= 0.03 and timer.totals['b'] < timer.totals['a']
    assert 'before' not in timer.totals     # the warm-up's laps were forgotten
    assert timer.totals['a'] < 0.15         # and started the clock afresh (else 'a' holds the 0.2 s too)


@pytest.mark.parametrize('args, phrase', [
    (['--steps', '4', '--warmup', '3'], '--steps'),
    (['--bf16', '--fp16'], 'alternatives'),
    (['--compile-mode', 'max-autotune'], '--compile'),
    (['--config', 'imagenet'], "'imagenet'"),
    (['--mode', 'paths', '--bf16'], '--paths'),
    (['--mode', 'paths', '--paths', 'exact,warp'], 'choose from'),
    (['--mode', 'generate', '--sdpa'], '--fp16 only'),
    (['--mode', 'generate', '--nfe', '18'], 'odd NFE'),
])
def test_bad_input_is_one_clear_line(args, phrase):
    assert_clean_error(CliRunner().invoke(bench.main, args), phrase)


def test_cifar10_needs_a_gpu():
    import torch
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    assert_clean_error(CliRunner().invoke(bench.main, ['--config', 'cifar10']), 'CUDA')


def test_paths_mode_times_each_fast_path_and_names_the_unavailable_ones(tmp_path):
    path = tmp_path / 'paths.json'
    r = CliRunner().invoke(bench.main, TINY + ['--mode', 'paths', '--paths', 'exact,channels_last,fp16',
                                               '--json', str(path)])
    assert r.exit_code == 0, r.output
    data = json.loads(path.read_text())
    rows = {x['path']: x for x in data['records']}
    assert list(rows) == ['exact', 'channels_last', 'fp16'] and data['batch'] == 16
    assert rows['fp16']['img_per_s'] is None and rows['fp16']['note'] == 'CUDA only'   # CPU: no fp16 path
    for name in ('exact', 'channels_last'):
        assert rows[name]['img_per_s'] > 0
        assert rows[name]['ms_per_step'] == pytest.approx(1e3 * 16 / rows[name]['img_per_s'])
    assert '| exact |' in r.output and '1.00x' in r.output and 'CUDA only' in r.output


def test_generate_mode_reports_images_per_second_at_the_nfe(tmp_path):
    path = tmp_path / 'generate.json'
    r = CliRunner().invoke(bench.main, ['--mode', 'generate', '--config', 'digits-demo', '--quick', '--cbase', '8',
                                        '--threads', '1', '--nfe', '5', '--json', str(path)])
    assert r.exit_code == 0, r.output
    data = json.loads(path.read_text())
    assert data['nfe'] == 5 and data['num_steps'] == 3 and data['batch'] == 8   # --quick: batch 8, NFE from --nfe
    assert data['img_per_s'] == pytest.approx(8 / data['s_per_batch'])
    assert 0 < data['rng_share'] < 1 and 'img/s' in r.output
    # --cbase reaches the network: half the channels, about a quarter of the parameters.
    half = CliRunner().invoke(bench.main, ['--mode', 'generate', '--config', 'digits-demo', '--quick', '--cbase', '4',
                                           '--threads', '1', '--nfe', '3', '--json', str(path)])
    assert half.exit_code == 0, half.output
    assert json.loads(path.read_text())['params'] < data['params'] / 3


def test_stopwatch_synchronises_and_measures_wall_and_cpu_time():
    from torch_utils.timing import Stopwatch, best_seconds_per_call
    with Stopwatch('cpu') as sw:
        time.sleep(0.05)
    assert 0.05 <= sw.wall < 1 and sw.cpu < 0.04          # sleeping costs wall time, not CPU time
    with Stopwatch() as busy:
        sum(i * i for i in range(300_000))
    assert busy.cpu > 0 and busy.wall > 0
    calls = []
    assert 0.01 <= best_seconds_per_call(lambda: calls.append(time.sleep(0.01)), 3, 2) < 0.5
    assert len(calls) == 6
    with pytest.raises(RuntimeError):
        Stopwatch().stop()
