"""Checks on the 1,464 real VOC 2012 train masks of the project's shared data (../shared/data/voc12-gt-masks, beside the
checkout, not in the repository). The lessons run the same checks on the 9 masks in nbs/data/voc12-pairs9
(01_data, 05_metrics); these tests skip, with the reason, where the shared data is absent (e.g. a fresh clone)."""
import time
import numpy as np
import pytest
from PIL import Image
from conftest import SHARED
from wsss_nb.data import VOC_CLASSES, cls_labels, read_split
from wsss_nb.metrics import ConfusionMeter

GT = SHARED/'voc12-gt-masks'
pytestmark = pytest.mark.skipif(not (GT/'SegmentationClass').is_dir(), reason=f"{GT} absent (the project's shared VOC masks are not in the repository)")

def test_train_masks_image_labels():
    "1,464 train masks: image-level labels from the masks, a plausible person count, at least one object each, fast."
    t0 = time.process_time()
    ids = read_split(GT, 'train')
    labels = cls_labels(GT, ids, 'SegmentationClass', 21, cache=False)
    dt = time.process_time() - t0
    Y = np.stack([labels[i] for i in ids])
    n_person = int(Y[:, VOC_CLASSES.index('person') - 1].sum())
    assert len(ids) == 1464
    assert 300 < n_person < 700, n_person
    assert (Y.sum(1) >= 1).all()
    assert dt < 20, dt

def _erode_once(lab):
    H, W = lab.shape
    p = np.pad(lab, 1, mode='edge'); same = np.ones(lab.shape, bool)
    for dy in range(3):
        for dx in range(3): same &= p[dy:dy+H, dx:dx+W] == lab
    return np.where(same | (lab <= 0), lab, 0)

def test_metrics_on_real_masks():
    "05_metrics' checks on 200 real masks: a mask against itself is perfect, all-background mIoU is IoU_bg / classes present, erosion lowers mIoU."
    gts = [np.array(Image.open(f)) for f in sorted((GT/'SegmentationClass').glob('*.png'))[:200]]
    m_same, m_bg = ConfusionMeter(21), ConfusionMeter(21)
    for g in gts: m_same.update(g, g); m_bg.update(np.zeros_like(g), g)
    assert m_same.scores()['miou'] == 1.0
    n_valid = sum(int((g != 255).sum()) for g in gts); n_bg = sum(int((g == 0).sum()) for g in gts)
    present = set(np.unique(np.concatenate([np.unique(g) for g in gts]))) - {255}
    sb = m_bg.scores()
    assert len(present) == 21
    np.testing.assert_allclose([sb['iou'][0], sb['miou']], [n_bg/n_valid, n_bg/n_valid/len(present)], rtol=0, atol=1e-12)
    curve = []
    for k in (1, 2, 4):
        m = ConfusionMeter(21)
        for g in gts[:50]:
            lab = np.where(g == 255, -1, g.astype(np.int16))
            for _ in range(k): lab = _erode_once(lab)
            m.update(np.maximum(lab, 0).astype(np.uint8), g)
        curve.append(m.scores()['miou'])
    assert 1 > curve[0] > curve[1] > curve[2], curve
