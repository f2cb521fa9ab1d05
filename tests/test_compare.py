"""`wsss-nb compare` end to end on the smoke dataset: two methods through the whole pipeline, one table and one figure."""
import csv
from pathlib import Path
import pytest
from wsss_nb.cam import methods as method_registry
from wsss_nb.cli import main, run_compare

SMOKE = dict(dataset='synthetic', make_data=False, cls_epochs=1, cls_batch_size=4, cls_crop_size=48, cam_scales=[1.0],
             seg_iters=4, seg_batch_size=4, seg_crop_size=48, seg_rates=[1, 2], seg_msc=False, eval_max_images=4, pretrained=None,
             seg_pretrained=None, pseudo_bg_threshold=0.3, refiner='none')

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
