"`wsss-nb reproduce`: the authors' figures beside the released-file, faithful and fixed runs', each with its source."
import argparse
import pytest
from conftest import ROOT
from wsss_nb.core import ConfigError, load_config, save_json
from wsss_nb.reproduce import AUTHORS, reproduce_table, reproduce_markdown, reproduce_csv, add_reproduce_parser

def test_missing_runs_show_as_missing(tmp_path):
    rows = reproduce_table('sccam', tmp_path, ROOT)
    assert {r['figure'] for r in rows} == {'authors', 'released', 'faithful', 'fixed'}
    assert all(r['value'] is None and r['source'].startswith('missing') for r in rows if r['figure'] != 'authors')
    assert [r['value'] for r in rows if r['figure'] == 'authors'] == [50.9, 63.4, 66.1]

def test_measured_figures_come_from_scores_json(tmp_path):
    run = load_config(ROOT/'configs'/'voc12_sccam_fixed.yaml')['run']
    save_json(dict(cam_miou=0.5, seg_miou=0.6612), tmp_path/run/'scores.json')
    rows = {(r['quantity'], r['figure']): r for r in reproduce_table('sccam', tmp_path, ROOT)}
    r = rows[('segmentation mIoU (val)', 'fixed')]
    assert r['value'] == 66.12 and r['source'].endswith('scores.json (seg_miou)')
    assert rows[('pseudo-label mIoU (train)', 'fixed')]['value'] is None
    assert '| CAM mIoU (train) | fixed | 50.0 |' in reproduce_markdown('sccam', tmp_path, ROOT)
    assert reproduce_csv('sccam', tmp_path, ROOT).count('\n') == 1 + len(rows)

def test_every_authors_figure_has_a_source():
    for m, qs in AUTHORS.items():
        for q, (v, src) in qs.items(): assert 0 < v < 100 and src, (m, q)

def test_cli(tmp_path, capsys):
    p = argparse.ArgumentParser(); add_reproduce_parser(p.add_subparsers())
    a = p.parse_args(['reproduce', 'l2g', 'mcis', '--out-root', str(tmp_path)])
    assert a.func(a) == 0
    out = capsys.readouterr().out
    assert '### l2g' in out and '### mcis' in out and 'missing' in out
    with pytest.raises(ConfigError, match="unknown method 'x'"): reproduce_table('x', tmp_path)
