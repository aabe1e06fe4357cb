"""The Table 1(a) protocol of scripts/report.py on hand-made curves with hand-computed answers: first evaluated
crossing (the paper's rule) vs the interpolated one, censored seeds, paired t-intervals (against
scipy.stats.ttest_rel), better / worse / tied, plateau yes / no, and the report built from run directories."""
import json
import math
import os

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from dnnlib import util
from scripts import report

KIMG = [10, 20, 30, 40]
CURVES = {
    'loguniform': {0: list(zip(KIMG, [11, 9, 7, 5])), 1: list(zip(KIMG, [9, 7, 5, 3])),
                   2: list(zip(KIMG, [10, 8, 6, 4]))},                          # mean 10 8 6 4
    'edm': {s: list(zip(KIMG, [9, 7, 5, 5])) for s in range(3)},               # mean 9 7 5 5
    'infonoise': {0: list(zip(KIMG, [9, 5, 4, 3])), 1: list(zip(KIMG, [7, 3, 2, 1])),
                  2: list(zip(KIMG, [8, 6, 5, 4.5]))},                          # mean 8 4.667 3.667 2.833
}


def test_first_evaluated_is_the_papers_rule_and_interpolation_is_separate():
    k = [0, 10, 20]
    assert report.first_evaluated(k, [10, 6, 2], 4) == 20.0           # not 15: only evaluated points count
    assert report.first_reach(k, [10, 6, 2], 4) == pytest.approx(15.0)  # the secondary, interpolated figure
    assert report.first_evaluated(k, [10, 6, 2], 6) == 10.0
    assert report.first_evaluated(k, [3, 6, 2], 4) == 0.0
    assert report.first_evaluated(k, [10, 6, 5], 4) is None
    assert report.first_evaluated([0, 10, 20, 30], [5, 3, 6, 1], 3) == 10.0
    assert report.first_evaluated([0, 10], [math.nan, 1], 5) == 10.0
    with pytest.raises(ValueError):
        report.first_evaluated([0, 1], [1], 0)


@pytest.mark.parametrize('diffs', [[1.0, 2.0, 3.0], [-2.0, -2.0, 0.5], [0.3, -1.2, 0.7, 2.5, -0.1]])
def test_paired_interval_matches_scipy_ttest_rel(diffs):
    rng = np.random.default_rng(len(diffs))
    base = rng.normal(size=len(diffs))
    method = base + np.asarray(diffs)
    ci = scipy.stats.ttest_rel(method, base).confidence_interval(0.95)
    got = report.paired_interval(diffs)
    assert got['n'] == len(diffs) and got['mean'] == pytest.approx(np.mean(diffs))
    assert got['lo'] == pytest.approx(ci.low) and got['hi'] == pytest.approx(ci.high)


def test_paired_interval_hand_values_and_verdicts():
    # d = 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3) = 2.484138.
    got = report.paired_interval([1, 2, 3])
    assert got['lo'] == pytest.approx(2 - 2.484138, abs=1e-6) and got['hi'] == pytest.approx(2 + 2.484138, abs=1e-6)
    assert report.verdict(got) == 'tied'
    assert report.verdict(report.paired_interval([1.0, 1.1, 0.9])) == 'worse'     # [0.75, 1.25]
    assert report.verdict(report.paired_interval([-1.0, -1.1, -0.9])) == 'better'
    assert report.verdict(report.paired_interval([-1.0])) == 'n/a'                # one pair: no interval
    assert report.paired_interval([])['mean'] is None


def test_plateau_yes_and_no():
    k = [4, 8, 12, 16, 20]
    yes = report.plateau_check(k, [100, 80, 70, 66, 64])     # from 16 kEx (>= 0.75 * 20): 66 -> 64, 3.0%
    assert yes['kimg_from'] == 16 and yes['improvement'] == pytest.approx(2 / 66) and yes['plateau']
    no = report.plateau_check(k, [100, 80, 70, 66, 60])      # 66 -> 60: 9.1%
    assert no['improvement'] == pytest.approx(6 / 66) and not no['plateau']
    assert not report.plateau_check([4], [10])['plateau']    # one evaluation cannot show a plateau


def test_lead_on_curve_counts_the_shared_evaluations_by_hand():
    # base at 4, 8.032, 12, 16; the method also at 20 (not shared) and 8.0321 (matches 8.032 to 1e-3).
    lead = report.lead_on_curve([4, 8.0321, 12, 16, 20], [9, 5, 6, 3, 1], [4, 8.032, 12, 16], [10, 5, 4, 4])
    assert lead == dict(shared=4, ahead_at=[4.0, 16.0], behind_at=[12.0], level_at=[8.032])
    assert report.format_lead(lead) == 'ahead at 2 of 4 evaluations (at 4, 16 kEx)'
    most = dict(shared=12, ahead_at=[4.0 * i for i in range(2, 13)], behind_at=[4.0], level_at=[])
    assert report.format_lead(most) == 'ahead at 11 of 12 evaluations (not at 4 kEx)'
    assert report.format_lead(dict(shared=1, ahead_at=[], behind_at=[4.0], level_at=[])) == 'ahead at 0 of 1 evaluation'
    s = report.compute_to_target(CURVES)
    assert 'lead' not in s['methods']['loguniform']                     # the best baseline is not compared with itself
    assert s['methods']['infonoise']['lead']['ahead_at'] == KIMG                 # 8 4.667 3.667 2.833 < 10 8 6 4
    assert s['methods']['edm']['lead'] == dict(shared=4, ahead_at=[10, 20, 30], behind_at=[40], level_at=[])


def test_evaluation_grid():
    assert report.evaluation_grid([8.032 * i for i in range(1, 13)]) == dict(count=12, every=pytest.approx(8.032),
                                                                             even=True, ok=True)
    assert not report.evaluation_grid([4, 8, 12, 30])['even']
    assert not report.evaluation_grid([4, 8, 12])['ok']


def test_compute_to_target_known_answers():
    s = report.compute_to_target(CURVES)
    assert s['target'] == 4.0 and s['best_baseline'] == 'loguniform'   # lowest final seed-mean of a fixed baseline
    assert not s['plateau']['plateau'] and s['plateau']['improvement'] == pytest.approx(2 / 6)
    lu, edm, ada = (s['methods'][m] for m in ('loguniform', 'edm', 'infonoise'))
    assert lu['kex'] == 40.0 and lu['speedup'] == dict(value=1.0, bound=False)
    assert edm['kex'] is None and not edm['reached'] and edm['speedup'] == dict(value=1.0, bound=True)
    assert ada['kex'] == 30.0 and ada['speedup']['value'] == pytest.approx(40 / 30)
    assert ada['kex_interp'] == pytest.approx(20 + 10 * (14 / 3 - 4) / (14 / 3 - 11 / 3))
    # Per seed against the row's target 4: log-uniform seed 0 never (censored), 1 and 2 at 40;
    # InfoNoise seed 0 at 30, seed 1 at 20, seed 2 never (censored).
    assert [lu['seeds'][s]['kex'] for s in '012'] == [None, 40.0, 40.0]
    assert [ada['seeds'][s]['kex'] for s in '012'] == [30.0, 20.0, None]
    pk = ada['paired_kex']
    assert pk['seeds'] == ['1'] and pk['censored'] == ['0', '2'] and pk['diffs'] == [-20.0]
    assert pk['verdict'] == 'n/a'                                        # censored seeds are never averaged
    pf = ada['paired_final']                                             # 3-5, 1-3, 4.5-4
    assert pf['diffs'] == [-2.0, -2.0, 0.5] and pf['mean'] == pytest.approx(-7 / 6)
    ci = scipy.stats.ttest_rel([3, 1, 4.5], [5, 3, 4]).confidence_interval(0.95)
    assert (pf['lo'], pf['hi']) == (pytest.approx(ci.low), pytest.approx(ci.high)) and pf['verdict'] == 'tied'
    json.dumps(util.jsonable(s, strict=True), allow_nan=False)


def test_finals_at_the_large_size_replace_the_curve_ends():
    finals = {'loguniform': {0: 5.0, 1: 5.1, 2: 4.9}, 'infonoise': {0: 4.0, 1: 4.6, 2: 3.4},
              'edm': {0: 6.0, 1: 6.0, 2: 6.0}}
    s = report.compute_to_target(CURVES, finals=finals)
    assert s['target'] == 4.0                                            # the target still comes from the curves
    pf = s['methods']['infonoise']['paired_final']                       # -1, -0.5, -1.5: mean -1 ± 1.242
    assert pf['diffs'] == pytest.approx([-1.0, -0.5, -1.5]) and pf['verdict'] == 'tied'
    assert s['methods']['edm']['paired_final']['verdict'] == 'worse'     # 1, 0.9, 1.1
    finals['infonoise'] = {0: 4.0, 1: 4.2, 2: 3.9}
    assert report.compute_to_target(CURVES, finals=finals)['methods']['infonoise']['paired_final']['verdict'] == 'better'
    assert pf['curve_ends'] == []


def test_a_pair_without_both_large_finals_compares_both_curve_ends():
    # InfoNoise's seed 1 has no final yet: that pair compares the curve ends 1 (InfoNoise) and 7 (log-uniform),
    # never InfoNoise's curve end with log-uniform's final.
    finals = {'loguniform': {0: 5.0, 1: 5.1, 2: 4.9}, 'infonoise': {0: 4.0, 2: 3.4}}
    s = report.compute_to_target(CURVES, finals=finals)
    pf = s['methods']['infonoise']['paired_final']
    assert pf['diffs'] == pytest.approx([-1.0, 1 - 3, -1.5]) and pf['curve_ends'] == ['1']
    text = report.row_markdown('r', dict(title='r', metric='m', curves=CURVES, finals={}, floors={}), s)
    line = next(ln for ln in text.splitlines() if ln.startswith('| InfoNoise'))
    assert '(curve end for seed 1)' in line and 'curve ends for seed 1' in line


def test_adaptive_methods_never_set_the_target():
    curves = {'edm': {0: [(10, 5.0), (20, 4.0)]}, 'kingma-gao': {0: [(10, 1.0), (20, 0.5)]},
              'infonoise': {0: [(10, 6.0), (20, 3.0)]}}
    s = report.compute_to_target(curves)
    assert s['best_baseline'] == 'edm' and s['target'] == 4.0
    with pytest.raises(ValueError, match='baseline'):
        report.compute_to_target({'infonoise': curves['infonoise']})


def _write_runs(root, curves=CURVES):
    for method, seeds in curves.items():
        for seed, curve in seeds.items():
            d = os.path.join(root, 'bmnist', f'{method}-seed{seed}')
            os.makedirs(d)
            with open(os.path.join(d, 'metrics.jsonl'), 'w') as f:
                for k, v in curve:
                    f.write(json.dumps(dict(kimg=k, kex=k, metric='fd-mnist', value=v, seconds=1.0)) + '\n')
            with open(os.path.join(d, 'training_options.json'), 'w') as f:
                json.dump(dict(metrics_num=512), f)
            with open(os.path.join(d, 'final.jsonl'), 'w') as f:
                last = curve[-1][1]
                for decoded, value in ((True, last - 0.5), (False, last + 1)):
                    f.write(json.dumps(dict(kimg=40, metric='fd-mnist', value=value, num=2000, classes=1,
                                            decoded=decoded)) + '\n')
    with open(os.path.join(root, 'bmnist', 'floor.json'), 'w') as f:
        json.dump({'fd-mnist': {'512': 1.25, '2000': 0.5}}, f)


def test_report_cli_writes_the_tables_and_splices_benchmarks(tmp_path):
    root = str(tmp_path / 'table1a')
    _write_runs(root)
    bench = tmp_path / 'B.md'
    bench.write_text('# B\n<!-- BEGIN scripts.report table1a -->\nold\n<!-- END scripts.report table1a -->\ntail\n')
    result = CliRunner().invoke(report.main, [root, '--benchmarks', str(bench), '--no-plots'])
    assert result.exit_code == 0, result.output
    text = (tmp_path / 'table1a' / 'report.md').read_text()
    assert text in result.stdout
    assert report.spliced(bench.read_text(), 'table1a') == text and bench.read_text().endswith('tail\n')
    assert 'plateau: **no**' in text and 'real-data floor at 2000: 0.5' in text and '(512): 1.25' in text
    assert 'raw → decoded final (seed means): log-uniform 5 → 3.5' in text
    ada = next(line for line in text.splitlines() if line.startswith('| InfoNoise'))
    cells = [c.strip() for c in ada.strip('|').split('|')]
    assert cells[4] == '30' and cells[5] == '30, 20, >40' and cells[8] == '1.33×' and 'censored seeds 0,2' in cells[6]
    edm = next(line for line in text.splitlines() if line.startswith('| EDM transfer'))
    assert '≤1.00×' in edm and '>40, >40, >40' in edm
    assert 'protocol: NOT met: fewer than 12 evenly spaced evaluations.' in text   # 3 seeds, 2,000 finals: fine
    bad = CliRunner().invoke(report.main, [str(tmp_path / 'nothing')])
    assert bad.exit_code == 2 and 'not a directory' in bad.output


def test_tuning_grid_settings_at_one_seed_never_set_the_target_and_the_best_is_compared_with_infonoise(tmp_path):
    grid = {f'lognormal-{m:g}-{sd:g}': {0: list(zip(KIMG, [12, 10, 9, 8 + i / 10]))}
            for i, (m, sd) in enumerate(report.LOGNORMAL_GRID)}
    best = 'lognormal--0.4-1.2'
    grid[best] = {0: list(zip(KIMG, [12, 10, 9, 1.0]))}           # far below log-uniform's 4, at one seed
    root = tmp_path / 'one'
    _write_runs(str(root), {**CURVES, **grid})
    rows, summaries = report.build_report(str(root))
    s = summaries['bmnist']
    assert s['best_baseline'] == 'loguniform' and s['target'] == 4.0   # a one-seed setting does not set it
    assert report.table_methods(s) == ['loguniform', 'edm', 'infonoise']
    t = s['tuning']
    assert t['best'] == best and len(t['settings']) == 9 and t['settings'][best] == 0.5   # its final (curve − 0.5)
    assert t['comparison']['seeds'] == ['0'] and t['word'] == 'undecided'
    text = report.markdown_report(rows, summaries)
    assert 'Tuning (log-normal σ, w = 1; rule h): 9 of 9 settings at seed 0: lognormal--0.4-1.2 0.5,' in text
    assert 'undecided until both have 3 paired seeds' in text and '| lognormal-' not in text
    # The best at seeds 1-2 (finals 0.4 and 4.1 against InfoNoise's 0.5 and 4.0; seed 0: 0.5 against 2.5): now a
    # three-seed fixed baseline, it sets the target, enters the table, and InfoNoise is compared with it.
    grid[best].update({1: list(zip(KIMG, [12, 10, 9, 0.9])), 2: list(zip(KIMG, [12, 10, 9, 4.6]))})
    root = tmp_path / 'three'
    _write_runs(str(root), {**CURVES, **grid})
    rows, summaries = report.build_report(str(root))
    s = summaries['bmnist']
    assert s['best_baseline'] == best and report.table_methods(s) == ['loguniform', 'edm', 'infonoise', best]
    c = s['tuning']['comparison']
    assert c['diffs'] == pytest.approx([2.0, 0.1, -0.1]) and c['verdict'] == 'tied' and s['tuning']['word'] == 'within'
    assert 'InfoNoise lands **within** the tuned best' in report.markdown_report(rows, summaries)
    # Consistently worse than the best -> "not within" (entries as compute_to_target lists seeds).
    entry = lambda v: dict(final=v, final_measured=True, curve_final=v, budget_kimg=40.0)   # noqa: E731
    worse = report.tuning_summary({best: {str(k): entry(1.0) for k in range(3)},
                                   'lognormal-0.4-0.8': {'0': entry(2.0)}},
                                  dict(methods={'infonoise': dict(seeds={str(k): entry(2.0 + k / 100) for k in range(3)})}))
    assert worse['best'] is None                                                 # 2 of 9 settings: no best yet
    full = {m: {'0': entry(5.0)} for m in grid} | {best: {str(k): entry(1.0) for k in range(3)}}
    worse = report.tuning_summary(full, dict(methods={'infonoise': dict(seeds={str(k): entry(2.0 + k / 100)
                                                                                for k in range(3)})}))
    assert worse['best'] == best and worse['comparison']['verdict'] == 'worse' and worse['word'] == 'not within'


def _committed_results():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'results')
    return [os.path.join(root, d) for d in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, d, 'report.md'))] \
        if os.path.isdir(root) else []


@pytest.mark.parametrize('results', _committed_results(), ids=os.path.basename)
def test_committed_tables_equal_the_reports_output(results):
    rows, summaries = report.build_report(results)
    text = report.markdown_report(rows, summaries)
    with open(os.path.join(results, 'report.md'), encoding='utf-8') as f:
        assert f.read() == text, f'regenerate: python -m scripts.report {results} --benchmarks docs/BENCHMARKS.md'
    bench = os.path.join(os.path.dirname(os.path.dirname(results)), 'BENCHMARKS.md')
    with open(bench, encoding='utf-8') as f:
        assert report.spliced(f.read(), os.path.basename(results)) == text


def test_some_results_are_committed():
    assert _committed_results(), 'docs/results/*/report.md: at least the budget probes are committed'


def _summary(base_finals, ada_finals, ada_hit):
    """Three seeds: the log-uniform curve 9 → 5 → final; InfoNoise's curve reaches ada_hit[seed] at 10 kEx (its
    first evaluation) and ends at ada_finals[seed]."""
    curves = {'loguniform': {s: [(10, 9.0), (20, 5.0), (30, f)] for s, f in enumerate(base_finals)},
              'infonoise': {s: [(10, h), (20, h), (30, f)] for s, (h, f) in enumerate(zip(ada_hit, ada_finals))}}
    return report.compute_to_target(curves)


def test_claim_verdicts_follow_the_paired_intervals():
    # Target = mean log-uniform final = 2.0; InfoNoise meets it at its first evaluation on every seed (10 vs 30
    # kEx: speed-up 3×, paired kEx Δ = −20 on each seed) and ends lower on every seed -> confirmed.
    word, why = report.claim_verdict('faster', _summary([2.0, 2.1, 1.9], [1.5, 1.6, 1.4], [1.9, 1.8, 1.9]))
    assert word == 'confirmed' and '3.00×' in why
    # Ends higher on every seed (Δ = +1 ± 0.1): refuted, whatever the kEx says.
    word, why = report.claim_verdict('faster', _summary([2.0, 2.1, 1.9], [3.0, 3.0, 3.0], [1.9, 1.8, 1.9]))
    assert word == 'refuted' and '(worse)' in why
    # Level at the end (Δ = +0.1, −0.1, 0): 'parity' is confirmed; 'faster' is not confirmed when the target is
    # never reached earlier (InfoNoise first meets 2.0 only at 30 kEx on the seed mean, like the baseline).
    tied = _summary([2.0, 2.1, 1.9], [2.1, 2.0, 1.9], [4.0, 4.0, 4.0])
    assert report.claim_verdict('parity', tied)[0] == 'confirmed'
    assert report.claim_verdict('faster', tied)[0] == 'not confirmed'
    # One seed gives no interval: not confirmed, even with a large gap.
    one = report.compute_to_target({'loguniform': {0: [(10, 9.0), (30, 2.0)]},
                                    'infonoise': {0: [(10, 9.0), (30, 6.0)]}})
    word, why = report.claim_verdict('faster', one)
    assert word == 'not confirmed' and '1 paired seed(s) of 3' in why
    assert 'on the seed 0 both have, InfoNoise ends at 6 against 2 for log-uniform (curve ends)' in why   # no finals
    # Unequal seeds: the interim sentence compares the seeds both have (log-uniform's seed 1 ends at 1, not counted),
    # and a large final counts only where both runs of the pair have one.
    uneven = report.compute_to_target({'loguniform': {0: [(10, 9.0), (30, 2.0)], 1: [(10, 8.0), (30, 1.0)]},
                                       'infonoise': {0: [(10, 9.0), (30, 6.0)]}},
                                      finals={'loguniform': {0: 2.5, 1: 1.5}, 'infonoise': {0: 5.0}})
    assert 'on the seed 0 both have, InfoNoise ends at 5 against 2.5 for log-uniform,' in report.claim_verdict(
        'faster', uneven)[1]
    apart = report.compute_to_target({'loguniform': {0: [(10, 9.0), (30, 2.0)]}, 'infonoise': {1: [(10, 9.0)]}})
    assert report.claim_verdict('faster', apart) == ('not confirmed', 'InfoNoise has no seed in common with '
                                                                      'log-uniform at the same budget yet.')
    # A run still training (curve to 10 kEx against a finished 30 kEx baseline) has no final difference yet.
    short = report.compute_to_target({'loguniform': {0: [(10, 9.0), (30, 2.0)], 1: [(10, 8.0), (30, 1.0)]},
                                      'infonoise': {0: [(10, 7.0)], 1: [(10, 6.0), (30, 3.0)]}})
    pf = short['methods']['infonoise']['paired_final']
    assert pf['seeds'] == ['1'] and pf['budgets_differ'] == ['0'] and pf['diffs'] == [2.0]
    assert 'on the seed 1 both have, InfoNoise ends at 3 against 1' in report.claim_verdict('faster', short)[1]
    text = report.row_markdown('r', dict(title='r', metric='m', curves={}, finals={}, floors={}), short)
    assert 'not yet at the same budget: seed 0' in text


def test_a_continuous_rows_undecoded_final_is_its_final(tmp_path):
    # final-eval writes one record with decoded = false on continuous data (nothing to decode): it is the final.
    curves = {m: {s: c for s, c in seeds.items()} for m, seeds in CURVES.items()}
    _write_runs(str(tmp_path / 'r'), curves)
    for method, seeds in CURVES.items():
        for seed, curve in seeds.items():
            with open(tmp_path / 'r' / 'bmnist' / f'{method}-seed{seed}' / 'final.jsonl', 'w') as f:
                f.write(json.dumps(dict(kimg=40, metric='fd-mnist', value=curve[-1][1] - 0.25, num=2000, classes=1,
                                        decoded=False)) + '\n')
    rows, summaries = report.build_report(str(tmp_path / 'r'))
    lu = summaries['bmnist']['methods']['loguniform']
    assert lu['final_mean'] == pytest.approx(4 - 0.25) and all(v['final_measured'] for v in lu['seeds'].values())
    text = report.markdown_report(rows, summaries)
    assert 'no final evaluation at the protocol size' not in text and '(2000 per class), as sampled' in text


def test_final_is_the_latest_snapshots_record(tmp_path):
    """A run extended past its first budget carries two final evaluations; the report uses the latest, whatever the
    order of the lines."""
    for order in ((192, 384), (384, 192)):
        root = tmp_path / f'o{order[0]}'
        d = root / 'bmnist' / 'loguniform-seed0'
        d.mkdir(parents=True)
        (d / 'metrics.jsonl').write_text(json.dumps(dict(kimg=16, kex=16, metric='fd-mnist', value=9.0)) + '\n')
        (d / 'final.jsonl').write_text(''.join(json.dumps(dict(kimg=k, metric='fd-mnist', value=k / 100, num=2000,
                                                               classes=1, decoded=True)) + '\n' for k in order))
        rows = report.load_runs(str(root))
        assert rows['bmnist']['finals']['loguniform'][0]['decoded']['value'] == 3.84


def test_profile_drift_shares_by_hand(tmp_path):
    """Bins [0.01, 0.1, 1, 10] holding masses 0.2, 0.3, 0.5 (π flat in σ inside a bin): the band edge 0.05 lies
    4/9 into the first bin, 0.5 and 5 4/9 into the next two -> shares 0.2·4/9, 0.2·5/9 + 0.3·4/9, 0.3·5/9 +
    0.5·4/9, 0.5·5/9. Log-uniform on [0.01, 10]: log10(5)/3, 1/3, 1/3, log10(2)/3."""
    edges = np.array([0.01, 0.1, 1.0, 10.0])
    pi = np.array([0.2, 0.3, 0.5]) / np.diff(edges)
    path = tmp_path / 'infonoise.jsonl'
    path.write_text(''.join(json.dumps(dict(kimg=k, pivot=0.1, edges=edges.tolist(), pi=pi.tolist())) + '\n'
                            for k in (1, 2, 3)))
    drift = report.profile_drift(str(path), rows=2)
    assert [d['kimg'] for d in drift] == [1, 3]                     # first and last
    assert drift[0]['peak'] == pytest.approx(math.sqrt(10.0)) and drift[0]['low_ratio'] is None   # equal log widths
    np.testing.assert_allclose(drift[0]['mass'], [0.2 * 4 / 9, 0.2 * 5 / 9 + 0.3 * 4 / 9, 0.3 * 5 / 9 + 0.5 * 4 / 9,
                                                  0.5 * 5 / 9], rtol=1e-12)
    np.testing.assert_allclose(drift[0]['loguniform'], [math.log10(5) / 3, 1 / 3, 1 / 3, math.log10(2) / 3],
                               rtol=1e-12)


def test_speedup_text_of_censored_runs():
    assert report.format_speedup(dict(value=1.3333, bound=False)) == '1.33×'
    assert report.format_speedup(dict(value=0.5, bound=True)) == '≤0.50×'     # full budget, target never reached
    assert report.format_speedup(dict(value=3.99, bound=True)) == '–'         # stopped before the baseline's kEx
    assert report.format_speedup(dict(value=None, bound=False)) == '–'
