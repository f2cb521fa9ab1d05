"`wsss-nb reproduce`: the authors' figures beside the released-file, faithful and fixed runs', each with its source."
import argparse, re
import pytest
from conftest import ROOT
from wsss_nb.core import ConfigError, load_config, save_json
from wsss_nb.reproduce import (AUTHORS, NOT_STATED, QUANTITIES, reproduce_table, reproduce_markdown, reproduce_csv, add_reproduce_parser,
                               readme_block, render_readme, readme_problems)

def test_missing_runs_show_as_missing(tmp_path):
    rows = reproduce_table('sccam', tmp_path, ROOT)
    assert {r['figure'] for r in rows} == {'authors', 'released', 'faithful', 'fixed'}
    assert all(r['value'] is None and r['source'].startswith('missing') for r in rows if r['figure'] != 'authors')
    assert [r['value'] for r in rows if r['figure'] == 'authors'] == [50.9, None, 63.4, 66.1, 65.9]

def test_measured_figures_come_from_scores_json(tmp_path):
    run = load_config(ROOT/'configs'/'voc12_sccam_fixed.yaml')['run']
    save_json(dict(cam_miou=0.5, seg_miou=0.6612), tmp_path/run/'scores.json')
    rows = {(r['quantity'], r['figure']): r for r in reproduce_table('sccam', tmp_path, ROOT)}
    r = rows[('segmentation mIoU (val)', 'fixed')]
    assert r['value'] == 66.12 and r['source'].endswith('scores.json (seg_miou, val)')
    assert rows[('pseudo-label mIoU (train)', 'fixed')]['value'] is None
    assert '| CAM mIoU (train_aug) | fixed | 50.0 |' in reproduce_markdown('sccam', tmp_path, ROOT)   # the config's train_split: train_aug
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

def test_no_unverified_figure_is_an_authors_figure():
    "No source is a recollection; a figure recalled but never found is not in AUTHORS; test-set figures sit under a test quantity."
    labels = dict(QUANTITIES)
    for m, qs in AUTHORS.items():
        for q, (v, src) in qs.items():
            assert q in labels and not any(w in src.lower() for w in ('recollection', 'unverified', 'memory')), (m, q, src)
            if re.search(r'\btest\b', src) and not re.search(r'\bval\b', src): assert q.endswith('_test'), (m, q, src)   # a test figure is under a test quantity
        assert all(v not in [x for x, _ in qs.values()] for v, _ in NOT_STATED.get(m, [])), m
    assert AUTHORS['group'].get('seg_miou') is None and AUTHORS['group']['seg_miou_test'][0] == 68.5
    assert AUTHORS['sccam']['seg_miou_test'][0] == 65.9

def test_readme_block_from_the_record(tmp_path):
    "The README block reads only the record folder; each run's figure or 'missing'; a method without figures gets one row."
    b = readme_block('sccam', tmp_path, ROOT)
    assert b.startswith('<!-- wsss-nb reproduce sccam: generated') and b.endswith('<!-- /wsss-nb reproduce -->')
    assert '| segmentation mIoU (test) | 65.9 | missing | missing | missing |' in b and 'train_aug' not in b
    save_json(dict(cam_miou=0.4812), tmp_path/'voc12_sccam_released'/'scores.json')
    assert '| CAM mIoU (train_aug) | not published | 48.12 | missing | missing |' in readme_block('sccam', tmp_path, ROOT)   # scored on the config's train_aug
    assert '| (any) | not published | missing | missing | missing |' in readme_block('msa', tmp_path, ROOT)

def test_readme_problems_and_update(tmp_path, capsys):
    "A stale block, a missing block and an unsourced or never-found figure are reported; --update re-renders the blocks."
    text = ('# x\n## Reproducing the papers\n### MCIS (`method: mcis`)\ntest 66.9 as we recall\n'
            '### Group (`method: group`)\n' + readme_block('group', tmp_path, ROOT).replace('68.5 |', '68.2 |', 1) + '\n**12.3** somewhere\n## Refinement\n**99.9**\n')
    probs = readme_problems(text, tmp_path, ROOT)
    assert any(p.startswith('mcis: no generated block') for p in probs)
    assert any(p.startswith('group: the block differs') for p in probs)
    assert any('bold figure 12.3' in p for p in probs) and not any('99.9' in p for p in probs)   # only the section is checked
    assert any(p.startswith('mcis: 66.9 is stated') for p in probs)
    f = tmp_path/'README.md'; f.write_text(text.replace('test 66.9 as we recall\n', '').replace('**12.3** somewhere\n', ''))
    p = argparse.ArgumentParser(); add_reproduce_parser(p.add_subparsers())
    a = p.parse_args(['reproduce', 'all', '--update', str(f), '--out-root', str(tmp_path)])
    assert a.func(a) == 1 and 'mcis: no generated block' in capsys.readouterr().out   # the group block is fixed, the mcis one is still absent
    assert readme_block('group', tmp_path, ROOT) in f.read_text()
    f.write_text(render_readme(f.read_text(), tmp_path, ROOT).replace('### MCIS (`method: mcis`)\n', '### MCIS (`method: mcis`)\n' + readme_block('mcis', tmp_path, ROOT) + '\n'))
    assert a.func(a) == 0
    a = p.parse_args(['reproduce', 'group', '--readme', '--out-root', str(tmp_path)])
    assert a.func(a) == 0 and '| segmentation mIoU (test) | 68.5 |' in capsys.readouterr().out

def _faithful(method, **changes):
    return {**load_config(ROOT/'configs'/f'voc12_{method}.yaml'), **changes}

def test_runs_are_found_under_any_name(tmp_path):
    "Faithful, fixed and released runs are found by their recorded config.json and import records, not by their names."
    from wsss_nb.reproduce import find_runs, reproduce_runs
    save_json(_faithful('l2g', run='mine', device='cuda:0', data_root='/data/VOC2012', seg_pretrained='/abs/weights/deeplabv1_resnet101-coco.pth'),
              tmp_path/'mine'/'config.json')
    save_json(dict(seg_miou=0.70, cam_miou=0.68), tmp_path/'mine'/'scores.json')
    save_json({**load_config(ROOT/'configs'/'voc12_l2g_fixed.yaml'), 'run': 'other'}, tmp_path/'other'/'config.json')
    save_json(dict(seg_miou=0.71), tmp_path/'other'/'scores.json')
    save_json(_faithful('l2g', run='tiny', max_images=8), tmp_path/'tiny'/'config.json')          # a smoke run: counted as nothing
    save_json(dict(seg_miou=0.10), tmp_path/'tiny'/'scores.json')
    save_json(_faithful('l2g', run='voc12_l2g_fixed_released', train_split='train'), tmp_path/'imp'/'config.json')   # imported, any name
    save_json(dict(params=dict(imported=dict(kind='cams:png', source='/x', sha256='0', split='train'))), tmp_path/'imp'/'cams'/'_params.json')
    save_json(dict(cam_miou=0.66, pseudo_miou_after_refine=0.69, seg_miou=0.705), tmp_path/'imp'/'scores.json')
    kinds = {r['run']: r['kind'] for r in find_runs('l2g', tmp_path, ROOT)}
    assert kinds == {'mine': 'faithful', 'other': 'fixed', 'tiny': None, 'imp': 'released'}
    assert 'differs from configs/voc12_l2g.yaml in max_images' in reproduce_runs('l2g', tmp_path, ROOT)
    rows = {(r['quantity'], r['figure']): r for r in reproduce_table('l2g', tmp_path, ROOT)}
    assert rows[('segmentation mIoU (val)', 'faithful')]['value'] == 70.0 and rows[('segmentation mIoU (val)', 'fixed')]['value'] == 71.0
    assert rows[('CAM mIoU (train_aug)', 'faithful')]['value'] == 68.0 and rows[('CAM mIoU (train)', 'faithful')]['value'] is None
    assert rows[('CAM mIoU (train)', 'released')]['value'] == 66.0 and rows[('pseudo-label mIoU (train)', 'released')]['value'] == 69.0
    assert rows[('segmentation mIoU (val)', 'released')]['source'] == 'imp/scores.json (seg_miou, val)'

def test_missing_rows_say_how_to_make_them(tmp_path):
    "A train_aug run's '(train)' rows: `wsss-nb score` of its own maps on the train subset, read back; the test row: the server."
    save_json(_faithful('sccam', run='r'), tmp_path/'r'/'config.json'); save_json(dict(cam_miou=0.5), tmp_path/'r'/'scores.json')
    rows = {(r['quantity'], r['figure']): r for r in reproduce_table('sccam', tmp_path, ROOT)}
    how = rows[('CAM mIoU (train)', 'faithful')]['source']
    assert how.startswith('missing: r scored train_aug') and f"wsss-nb score {tmp_path/'r'/'cams'} configs/voc12_sccam.yaml --split train --subset" in how
    assert 'official evaluation server' in rows[('segmentation mIoU (test)', 'faithful')]['source']
    assert rows[('segmentation mIoU (val)', 'fixed')]['source'] == 'missing: no run whose config.json equals configs/voc12_sccam_fixed.yaml: `wsss-nb run configs/voc12_sccam_fixed.yaml`'
    assert 'wsss-nb import KIND FILE configs/voc12_sccam.yaml' in rows[('segmentation mIoU (val)', 'released')]['source']
    save_json(dict(miou=0.52, split='train', n_images=1464), tmp_path/'r'/'score_train_cams.json')
    rows = {(r['quantity'], r['figure']): r for r in reproduce_table('sccam', tmp_path, ROOT)}
    assert rows[('CAM mIoU (train)', 'faithful')]['value'] == 52.0 and rows[('CAM mIoU (train)', 'faithful')]['source'] == 'r/score_train_cams.json (train)'
