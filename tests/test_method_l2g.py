"L2G and the thesis variant l2g_csa through the stages: two-network training, CDA epochs, global-network CAMs, constant-background labels."
import numpy as np
import pytest
import yaml
from conftest import ROOT, assert_cam_files, assert_label_files
from wsss_nb.core import load_json
from wsss_nb.cam import get_method
from wsss_nb.data import get_dataset
from wsss_nb.stages import train_classifier, make_cams, make_pseudo_labels

@pytest.mark.parametrize('method,epochs,args', [('l2g', 1, {}), ('l2g_csa', 2, {'cda_start_epoch': 1, 'cda_cam_thr': 0.3})])
def test_l2g_pipeline(smoke_data, tmp_path, method, epochs, args):
    common = dict(run=method, out_root=tmp_path, dataset='synthetic', data_root=smoke_data, split='train',
                  device='cpu', max_images=8, progress=False)
    cls = train_classifier(**common, method=method, method_args=dict(local_frac=0.75, **args), backbone='efficientnet_lite0',
                           pretrained=None, epochs=epochs, batch_size=2, crop_size=48, amp=False)
    hist = load_json(cls.path/'history.json')
    assert len(hist) == epochs * (8 // 2)
    assert all(np.isfinite(h[k]) for h in hist for k in ('loss', 'kd', 'local', 'global_cls'))
    assert all(abs(h['loss'] - h['kd'] - h['local'] - h['global_cls']) < 1e-4 for h in hist)   # the global loss is added
    if method == 'l2g_csa':
        assert all(h['cda_copies'] == 0 for h in hist[:4])          # epoch 0: no CDA yet
        assert any(h['cda_copies'] > 0 for h in hist[4:])           # epoch 1: copies enter the batch

    cams = make_cams(**common, scales=[1.0], amp=False)
    ds = get_dataset('synthetic', smoke_data, 'train'); ds.ids = ds.ids[:8]
    assert_cam_files(cams.path, ds)

    pseudo = make_pseudo_labels(**common, refiner='none', bg_threshold=0.25)
    assert_label_files(pseudo.path/'labels', ds)

def test_l2g_method_args():
    m = get_method('l2g_csa', cda_start_epoch=10, cda_lr=5e-4, lr_decay_epoch=5, train_attention=False, cda_label_fix=False)
    assert [m._lr_factor(e, 13, 1e-3) for e in (0, 5, 10)] == [1., 0.1, 0.5]
    with pytest.raises(ValueError, match='Valid names'): get_method('l2g', cda_start_epoch=1)
    with pytest.raises(ValueError, match='local_frac'): get_method('l2g', local_frac=1.5)

@pytest.mark.parametrize('name', ['voc12_l2g', 'demo_l2g', 'voc12_l2g_csa', 'demo_l2g_csa'])
def test_l2g_configs(name):
    from wsss_nb.cli import valid_keys
    cfg = yaml.safe_load((ROOT/'configs'/f'{name}.yaml').read_text())
    assert not set(cfg) - valid_keys(), set(cfg) - valid_keys()
    get_method(cfg['method'], **cfg['method_args'])           # every method_arg is valid
