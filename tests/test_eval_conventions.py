"The originals' evaluation conventions as options: the CRF's image (deeplab-pytorch, MCIS) and the mIoU conventions."
from wsss_nb.core import load_config
import numpy as np
import pytest
import yaml
from conftest import ROOT
from wsss_nb.core import ConfigError, DataError
from wsss_nb.metrics import ABSENT, PRED255, ConfusionMeter, confusion_matrix, scores
from wsss_nb.refine.crf import CRF_DEEPLAB, CRF_IMAGES, crf_image
from wsss_nb.stages.evaluate import EVAL_CRF, check_eval_options, eval_crf_preset

def test_deeplab_crf_image_byte_exact():
    "BGR minus (104.008, 116.669, 122.675), truncated toward zero, modulo 256; worked out by hand per pixel."
    px = np.array([[[0, 0, 0], [255, 255, 255], [122, 116, 104], [10, 200, 104]]], np.uint8)
    want = [[256-104, 256-116, 256-122],          # -104.008 -> -104 -> 152, ...
            [150, 138, 132],                       # 150.992 -> 150, 138.331 -> 138, 132.325 -> 132
            [0, 0, 0],                             # -0.008, -0.669, -0.675 all truncate to 0
            [0, 83, 256-112]]                      # B -0.008 -> 0; G 200-116.669 = 83.331 -> 83; R 10-122.675 -> -112 -> 144
    assert crf_image(px, 'deeplab')[0].tolist() == want
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (7, 9, 3)).astype(np.uint8)
    x = img[..., ::-1].astype(np.float64) - np.array([104.008, 116.669, 122.675])
    ref = (np.fix(x).astype(int) % 256).astype(np.uint8)     # the same rule, written independently
    np.testing.assert_array_equal(crf_image(img, 'deeplab'), ref)
    np.testing.assert_array_equal(crf_image(img, 'bgr'), img[..., ::-1])
    np.testing.assert_array_equal(crf_image(img, 'rgb'), img)

def test_crf_image_errors():
    img = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ConfigError, match="must be one of rgb, bgr, deeplab"): crf_image(img, 'BGR')
    with pytest.raises(DataError, match="uint8"): crf_image(img.astype(np.float32))

def test_bgr_vs_rgb_changes_crf_labels():
    pytest.importorskip('pydensecrf.densecrf', reason='pydensecrf not installed')
    from wsss_nb.refine.crf import dense_crf
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
    p = rng.uniform(0.3, 0.4, (3, 24, 32)).astype(np.float32); p /= p.sum(0)
    lab = {m: dense_crf(crf_image(img, m), p, **CRF_DEEPLAB).argmax(0) for m in CRF_IMAGES}
    assert (lab['bgr'] != lab['rgb']).any() and (lab['deeplab'] != lab['rgb']).any()

def test_eval_crf_names():
    assert eval_crf_preset(True) == 'deeplab_rgb' and EVAL_CRF['deeplab_rgb'] == ('deeplab', 'rgb')
    assert EVAL_CRF['deeplab'] == ('deeplab', 'deeplab') and EVAL_CRF['mcis'] == ('mcis', 'bgr')
    assert eval_crf_preset(False) is None
    with pytest.raises(ConfigError, match="eval_crf must be"): eval_crf_preset('DeepLab')
    with pytest.raises(ConfigError, match="eval_absent must be one of zero, ignore"): check_eval_options(absent='skip')
    with pytest.raises(ConfigError, match="eval_pred255 must be one of miss, background, ignore"): check_eval_options(pred255='bg')

def test_absent_conventions_by_hand():
    "3 classes; class 2 never true but predicted once. cm = [[3,0,1],[1,1,0],[0,0,0]]."
    cm = confusion_matrix(np.array([0, 0, 0, 2, 1, 0]), np.array([0, 0, 0, 0, 1, 1]), 3)
    assert cm.tolist() == [[3, 0, 1], [1, 1, 0], [0, 0, 0]]
    iou = [3/5, 1/2, 0.0]                                   # TP/(n_gt+n_pred-TP): 3/(4+4-3), 1/(2+1-1), 0/(0+1-0)
    assert np.allclose(scores(cm)['iou'], iou)
    assert np.isclose(scores(cm, absent='zero')['miou'], 1.1/3)       # PSA / IRN / MCIS
    assert np.isclose(scores(cm, absent='ignore')['miou'], 1.1/2)     # deeplab-pytorch scores()
    with pytest.raises(ConfigError, match="eval_absent"): scores(cm, absent='nan')

def test_pred255_conventions_by_hand():
    gt, pred = np.array([0, 0, 1, 1, 255]), np.array([0, 255, 1, 255, 255])
    s = {p: ConfusionMeter(2, pred255=p).update(pred, gt).scores() for p in PRED255}
    assert np.allclose(s['miss']['iou'], [1/2, 1/2]) and np.isclose(s['miss']['miou'], 0.5)
    assert np.allclose(s['background']['iou'], [2/3, 1/2]) and np.isclose(s['background']['miou'], 7/12)   # IRN
    assert np.allclose(s['ignore']['iou'], [1, 1])
    assert ConfusionMeter(2, pred255='background').update(pred, gt).cm.tolist() == [[2, 0], [1, 1]]
    with pytest.raises(ConfigError, match="eval_pred255"): ConfusionMeter(2, pred255='drop')
    with pytest.raises(ConfigError, match="contradicts"): ConfusionMeter(2, ignore_pred=True, pred255='miss')

@pytest.mark.parametrize('name,crf,absent', [('voc12_sccam', 'deeplab', 'ignore'), ('voc12_msa', 'deeplab', 'ignore'),
    ('voc12_l2g', 'deeplab', 'ignore'), ('voc12_l2g_csa', 'deeplab', 'ignore'), ('voc12_group', 'deeplab', 'ignore'),
    ('voc12_cam', 'deeplab', 'ignore'), ('voc12_mcis', 'mcis', 'zero')])
def test_faithful_configs_name_the_conventions(name, crf, absent):
    cfg = load_config((ROOT/'configs'/f'{name}.yaml'))
    assert (cfg['eval_crf'], cfg['eval_absent']) == (crf, absent)
    check_eval_options(cfg['eval_crf'], cfg['eval_absent'], cfg['eval_pred255'])
    assert cfg['eval_pred255'] == ('background' if name == 'voc12_cam' else 'miss')
