"""`wsss-nb compare` end to end on the smoke dataset: two methods through the whole pipeline, one table and one figure."""
import csv
from pathlib import Path
import pytest
from wsss_nb.cam import methods as method_registry
from wsss_nb.cli import main, run_compare

SMOKE = dict(dataset='synthetic', make_data=False, cls_epochs=1, cls_batch_size=4, cls_crop_size=48, cam_scales=[1.0],
             seg_iters=4, seg_batch_size=4, seg_crop_size=48, seg_rates=[1, 2], seg_msc=False, eval_max_images=4, pretrained=None,
             seg_pretrained=None, pseudo_bg_threshold=0.3, refiner='none')

@pytest.mark.slow   # runs the 06_compare notebook with papermill (a kernel)
def test_compare_writes_table_and_figure(smoke_data, tmp_path):
    second = 'l2g' if 'l2g' in method_registry.names() else None
    methods = ['cam'] + ([second] if second else [])
    dest = run_compare(methods, overrides=dict(SMOKE, data_root=str(smoke_data), out_root=str(tmp_path/'out')), run_prefix='cmp')
    assert dest == tmp_path/'out'/'cmp'
    rows = list(csv.DictReader((dest/'compare.csv').open()))
    assert [r['method'] for r in rows] == methods
    for r in rows:
        assert 0 <= float(r['cam_miou']) <= 1 and 0 <= float(r['seg_miou']) <= 1
        assert float(r['cls_train_time_s']) > 0 and float(r['cls_peak_mem_mb']) > 0
    assert rows[-1]['seg_gt_miou'] == rows[0]['seg_gt_miou'] != ''   # the bound is trained once and shared
    md = (dest/'compare.md').read_text()
    assert md.count('\n') == 2 + len(methods) and '| cam |' in md
    assert (dest/'compare_maps.png').stat().st_size > 1000
    assert (dest/'notebooks'/'06_compare.ipynb').is_file()
    for m in methods: assert (tmp_path/'out'/f'cmp_{m}'/'report.md').is_file()

def test_compare_rejects_unknown_method(capsys):
    assert main(['compare', '--methods', 'cam', 'nosuchmethod']) == 2
    assert "Unknown method 'nosuchmethod'" in capsys.readouterr().err

# ---- overrides merge as in `wsss-nb run`; the committed demo comparison is not stale (issues 18, 20) ----
import json
from wsss_nb.compare import DEMO_RECORD, comparison_configs, stale_demo_settings, table_markdown
from wsss_nb.core import load_config, resolve_path

def test_compare_overrides_merge_nested_dicts():
    "`method_args.rounds=3` / `method_args={rounds: 3}` keep the method's other method_args; `method_args:=` replaces them."
    own = load_config(resolve_path('configs/demo_sccam.yaml'))['method_args']
    for ov in ({'method_args.rounds': 3}, {'method_args': {'rounds': 3}}):
        assert comparison_configs(['sccam'], overrides=ov)['sccam']['method_args'] == {**own, 'rounds': 3}
    assert comparison_configs(['sccam'], overrides={'method_args:': {'rounds': 1}})['sccam']['method_args'] == {'rounds': 1}
    c = comparison_configs(['cam', 'sccam'], overrides={'seg_iters': 7})
    assert c['cam']['seg_iters'] == c['sccam']['seg_iters'] == 7 and c['cam']['train_gt_bound'] and not c['sccam']['train_gt_bound']

def test_compare_cli_passes_overrides_to_the_merge(monkeypatch, tmp_path):
    "The command line's `key.sub=value` reaches the comparison as a nested entry (checked against the valid keys first)."
    import wsss_nb.cli as cli
    seen = {}
    monkeypatch.setattr(cli, '_execute', lambda nb, out_dir, params, log: seen.update(params))
    monkeypatch.setattr('wsss_nb.core.run_dir', lambda *a: tmp_path)   # imported where it is used
    (tmp_path/'compare.md').write_text('| table |\n')
    assert cli.main(['compare', 'method_args.rounds=3', '--methods', 'sccam', '--quiet']) == 0
    assert seen['overrides'] == {'method_args.rounds': 3}
    assert cli.main(['compare', 'method_arg.rounds=3', '--methods', 'sccam', '--quiet']) == 2   # a typo of the key

def test_committed_demo_comparison_matches_the_configs():
    "nbs/data/compare_demo.json holds scores and the settings they came from; they must be today's demo settings."
    rec = json.loads(resolve_path(DEMO_RECORD).read_text())
    assert rec['finished'] and rec['finished'][0] == 'cam' and [r['method'] for r in rec['rows']] == rec['finished']
    assert set(rec['finished']) | set(rec['skipped']) == set(rec['methods'])
    assert stale_demo_settings(rec) == {}, ("the demo configs changed since nbs/data/compare_demo.json was made: "
                                             "rerun python benchmarks/make_compare_demo.py")
    for r in rec['rows']:
        assert all(0 <= r[k] <= 1 for k in ('cam_miou', 'pseudo_miou_after_refine', 'seg_miou', 'seg_gt_miou'))
    assert table_markdown(rec['rows']).count('\n') == 2 + len(rec['rows'])

def test_stale_demo_settings_sees_a_changed_config():
    rec = json.loads(resolve_path(DEMO_RECORD).read_text())
    m = rec['finished'][0]
    rec['settings'][m] = {**rec['settings'][m], 'seg_iters': rec['settings'][m]['seg_iters'] + 1}
    assert 'seg_iters' in stale_demo_settings(rec)[m]
