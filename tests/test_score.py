"`wsss-nb score`: per-class and mean IoU of a folder of label PNGs or CAM files against a split's masks."
import argparse, json
import numpy as np
import pytest
import yaml
from wsss_nb.core import DataError
from wsss_nb.data import get_dataset, save_mask
from wsss_nb.cam import save_cams
from wsss_nb.importers import score_folder, add_score_parser

@pytest.fixture
def val(smoke_data): return get_dataset('synthetic', smoke_data, 'val')

def test_labels_perfect_and_background(val, smoke_data, tmp_path):
    for i in val.ids: save_mask(val.load_raw(i)[1], tmp_path/f'{i}.png')
    s = score_folder(tmp_path, 'synthetic', smoke_data, 'val')
    assert s['miou'] == pytest.approx(1.0) and s['n_images'] == len(val.ids) and s['kind'] == 'labels'
    assert set(s['per_class']) == set(val.class_names)
    for i in val.ids: save_mask(np.zeros_like(val.load_raw(i)[1]), tmp_path/f'{i}.png')
    s = score_folder(tmp_path, 'synthetic', smoke_data, 'val')
    assert s['per_class'][val.class_names[0]] < 1 and all(v is None or v == 0 or v != v for v in list(s['per_class'].values())[1:])

def test_cams_with_threshold(val, smoke_data, tmp_path):
    for i in val.ids:   # maps equal to the gt masks of each labelled class: any threshold in (0, 1) is exact
        gt = val.load_raw(i)[1]; keys = np.flatnonzero(val.labels[i])
        save_cams(tmp_path/f'{i}.npz', np.stack([(gt == c + 1).astype(np.float32) for c in keys]), keys)
    assert score_folder(tmp_path, 'synthetic', smoke_data, 'val', cam_threshold=0.5)['miou'] == pytest.approx(1.0, abs=1e-6)
    s = score_folder(tmp_path, 'synthetic', smoke_data, 'val')
    assert s['kind'] == 'cams' and 0 < s['cam_threshold'] < 1

def test_errors(val, smoke_data, tmp_path):
    for i in val.ids: save_mask(val.load_raw(i)[1], tmp_path/f'{i}.png')
    (tmp_path/f'{val.ids[0]}.png').unlink()
    with pytest.raises(DataError, match=rf"{val.ids[0]}.png missing \(1 of the {len(val.ids)} images of split 'val'\)"): score_folder(tmp_path, 'synthetic', smoke_data, 'val')
    save_mask(np.zeros((3, 3), np.uint8), tmp_path/f'{val.ids[0]}.png')
    with pytest.raises(DataError, match=r"label map is \(3, 3\)"): score_folder(tmp_path, 'synthetic', smoke_data, 'val')
    save_mask(np.zeros((3, 3), np.uint8), tmp_path/'elsewhere.png')
    with pytest.raises(DataError, match="not in split 'val', e.g. elsewhere.png"): score_folder(tmp_path, 'synthetic', smoke_data, 'val')

def test_cli(val, smoke_data, tmp_path, capsys):
    for i in val.ids: save_mask(val.load_raw(i)[1], tmp_path/f'{i}.png')
    (tmp_path/'c.yaml').write_text(yaml.safe_dump(dict(dataset='synthetic', data_root=str(smoke_data), eval_split='val')))
    p = argparse.ArgumentParser(); add_score_parser(p.add_subparsers())
    a = p.parse_args(['score', str(tmp_path), str(tmp_path/'c.yaml'), '--json', str(tmp_path/'s.json')])
    assert a.func(a) == 0
    assert 'mIoU' in capsys.readouterr().out and json.loads((tmp_path/'s.json').read_text())['miou'] == pytest.approx(1.0)
