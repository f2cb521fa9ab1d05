"""The figures of the method lessons: `viz.show_maps_comparison`, `gallery.method_diagram`, the CAM rows and the
CAM-baseline-vs-method comparison, and that each method lesson (11-15) shows both, executed."""
import json, re
import numpy as np
import pytest
import torch
from conftest import ROOT
from wsss_nb.cam import save_cams
from wsss_nb.core import ConfigError, DataError
from wsss_nb.data import get_dataset
from wsss_nb.gallery import Comparison, comparison_rows, method_diagram, method_vs_cam, torch_threads
from wsss_nb.viz import show_maps_comparison

METHOD_LESSONS = ['11_sccam', '12_mcis', '13_group', '14_msa', '15_l2g']

def _row(size=16, seed=0):
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.uint8); gt[4:10, 4:10] = 1
    return dict(image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8), a=gt.astype(np.float32), b=rng.random((2, size, size)), gt=gt)

def test_show_maps_comparison_columns_and_errors():
    fig = show_maps_comparison([_row(), _row(seed=1)], titles=dict(a='mask'))
    assert len(fig.axes) == 2*4 and fig.dpi == 110   # readable in the docs: >= 110 dpi
    assert [ax.get_title() for ax in fig.axes[:4]] == ['image', 'mask', 'b', 'ground truth']
    assert len(show_maps_comparison([_row()], maps=['b']).axes) == 3          # image | b | GT
    with pytest.raises(DataError, match='hold no map'): show_maps_comparison([dict(image=_row()['image'])])
    with pytest.raises(DataError, match="no 'b'"): show_maps_comparison([_row(), {k: v for k, v in _row().items() if k != 'b'}])
    with pytest.raises(DataError, match='at least one row'): show_maps_comparison([])

def test_method_diagram_boxes_arrows_legend():
    boxes = dict(x=(0.2, 0.5, 'input', 'data'), f=(0.5, 0.5, 'net', 'pretrained'), l=(0.8, 0.5, 'loss ×2', 'loss'))
    fig = method_diagram(boxes, [('x', 'f'), ('f', 'l', 'logits', 'dashed')])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts if type(t).__name__ == 'Text'][:3] == ['input', 'net', 'loss ×2']
    assert sum(type(t).__name__ == 'Annotation' for t in ax.texts) == 2
    assert len(ax.get_legend().get_texts()) == 3 and tuple(fig.get_size_inches()) == (8, 3)
    with pytest.raises(ConfigError, match='unknown box kinds'): method_diagram(dict(x=(0, 0, 'a', 'nope')), [])
    with pytest.raises(ConfigError, match='unknown boxes'): method_diagram(boxes, [('x', 'y')])

def test_torch_threads_restores():
    n = torch.get_num_threads()
    with torch_threads(1): assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n

def test_comparison_rows_and_check_maps(smoke_data, tmp_path):
    ds = get_dataset('synthetic', smoke_data, 'train')
    for i in ds.ids[:3]:                                   # a fake run whose maps are the object masks
        gt = ds.load_raw(i)[1]
        keys = np.array([c - 1 for c in np.unique(gt) if 0 < c < 255])
        save_cams(tmp_path/f'{i}.npz', np.stack([(gt == k + 1).astype(np.float32) for k in keys]), keys)
    rows = comparison_rows(smoke_data, [dict(cam_dir=tmp_path)], ['perfect'], n=3)
    assert [r['id'] for r in rows] == ds.ids[:3]
    for r in rows: np.testing.assert_array_equal(r['perfect'], ((r['gt'] > 0) & (r['gt'] < 255)).astype(np.float32))
    runs = dict(perfect=dict(miou=1., threshold=.5, time_s=0.))
    assert Comparison(None, rows, runs).check_maps() is not None
    for bad, msg in ((lambda m: m*2 + .1, 'outside'), (np.zeros_like, 'all zero'), (lambda m: m[:-1], 'shape')):
        with pytest.raises(DataError, match=msg): Comparison(None, [dict(rows[0], perfect=bad(rows[0]['perfect']))], runs).check_maps()
    with pytest.raises(ConfigError, match='distinct name'): comparison_rows(smoke_data, [dict(cam_dir=tmp_path)]*2, ['a', 'a'])

def test_method_vs_cam_same_seed_same_maps(tmp_path):
    "The CAM baseline against itself (8 images of 32 px, one epoch): bit-identical maps and mIoU on the CPU; nothing left outside `root`."
    cmp = method_vs_cam('cam', n_train=8, size=32, epochs=1, batch_size=4, n_show=2, label='again', root=tmp_path)
    assert list(cmp.runs) == ['CAM', 'again'] and len(cmp.rows) == 2
    cmp.check_maps()
    for r in cmp.rows: np.testing.assert_array_equal(r['CAM'], r['again'])
    assert cmp.runs['CAM']['miou'] == cmp.runs['again']['miou'] and 0 <= cmp.runs['CAM']['miou'] <= 1
    assert (tmp_path/'runs'/'cam'/'cams').is_dir() and (tmp_path/'runs'/'cam_vs_cam'/'cams').is_dir()
    assert cmp.fig.axes[1].get_title().startswith('CAM (mIoU ')

def _code(nb): return [''.join(c['source']) for c in json.loads((ROOT/'nbs'/f'{nb}.ipynb').read_text())['cells'] if c['cell_type'] == 'code']

@pytest.mark.parametrize('nb', METHOD_LESSONS)
def test_method_lesson_shows_diagram_and_comparison(nb):
    "Each method lesson draws its diagram and trains CAM vs the method once, in cells nbdev-test runs, committed with their figures."
    cells = [c for c in json.loads((ROOT/'nbs'/f'{nb}.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
    for fn in ('method_diagram(', 'method_vs_cam('):
        hits = [c for c in cells if fn in ''.join(c['source']) and not ''.join(c['source']).lstrip().startswith('#|')]
        assert len(hits) == 1, f'{nb}: {len(hits)} cells call {fn}'
        assert any('image/png' in o.get('data', {}) for o in hits[0].get('outputs', [])), f'{nb}: the {fn} cell has no figure; execute it'
    cmp = next(''.join(c['source']) for c in cells if 'method_vs_cam(' in ''.join(c['source']))
    assert 'check_maps()' in cmp and "cmp.runs" in cmp and 'root=' not in cmp      # asserts on the maps; a temporary folder
