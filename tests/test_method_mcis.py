"MCIS through the stages: pair training (contrastive term on), co-attention CAM recipe, saliency pseudo-labels."
import numpy as np
import pytest
from conftest import assert_cam_files, assert_label_files
from wsss_nb.core import load_json
from wsss_nb.cam import get_method
from wsss_nb.data import get_dataset
from wsss_nb.stages import train_classifier, make_cams, make_pseudo_labels

def test_mcis_pipeline(smoke_data, tmp_path):
    common = dict(run='mcis', out_root=tmp_path, dataset='synthetic', data_root=smoke_data, split='train',
                  device='cpu', max_images=8, progress=False)
    cls = train_classifier(**common, method='mcis', method_args=dict(extra_channels=32, extra_bn=True), backbone='efficientnet_lite0',
                           pretrained=None, epochs=3, batch_size=2, crop_size=48, amp=False)
    hist = load_json(cls.path/'history.json')
    assert len(hist) == 3 * (8 // 2)
    assert all(np.isfinite(h[k]) for h in hist for k in ('loss', 'single', 'co', 'contrast', 'self_pairs'))
    per_epoch = len(hist) // 3          # 3 epochs: the contrastive start is min(2, 3 // 2) = 1
    assert all(h['contrast'] == 0 for h in hist[:per_epoch])
    assert any(h['contrast'] > 0 for h in hist[per_epoch:])
    assert all(h['self_pairs'] > 0 for h in hist)
    ckpt_meta = load_json(cls.path/'_params.json')['params']['method_args']
    assert ckpt_meta['extra_bn'] is True

    cams = make_cams(**common, scales=[1.0], amp=False)
    ds = get_dataset('synthetic', smoke_data, 'train'); ds.ids = ds.ids[:8]
    assert_cam_files(cams.path, ds)

    pseudo = make_pseudo_labels(**common, refiner='saliency', refiner_args={'variant': 'mcis'}, bg_threshold=0.3)
    assert_label_files(pseudo.path/'labels', ds)

def test_mcis_method_args():
    m = get_method('mcis', lr_steps=[5/11, 10/11], infer_size=256)
    assert m.lr_milestones(11) == [5, 10] and m.infer_size == 256
    with pytest.raises(ValueError, match='Valid names'): get_method('mcis', contrast_start=2)
