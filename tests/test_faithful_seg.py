"""Issue 25, point 4: the faithful VOC configs use the originals' segmentation stage (deeplab-pytorch's DeepLab-v2 ResNet-101),
evaluate as deeplab-pytorch's `main.py test` does (one MSC pass at scale 1), pad training crops with the exact Caffe mean and
store CAMs as float32."""
import re
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT
from wsss_nb.core import ConfigError

DEEPLAB_PYTORCH = ('cam', 'group', 'sccam', 'msa', 'l2g', 'l2g_csa')   # methods whose VOC segmentation is deeplab-pytorch's (MCIS: its own Caffe LargeFOV)

def _cfg(name):
    from wsss_nb.core import load_config   # resolves `base:` (the fixed configs hold only their fixes)
    return load_config(ROOT/'configs'/f'{name}.yaml')

@pytest.mark.parametrize('method', DEEPLAB_PYTORCH)
def test_faithful_configs_use_deeplab_pytorch(method):
    for name in (f'voc12_{method}', f'voc12_{method}_fixed'):
        if not (ROOT/'configs'/f'{name}.yaml').is_file(): continue
        c = _cfg(name)
        assert c['seg_backbone'] == 'deeplab_resnet101' and c['seg_msc'] is True and c['seg_pretrained'].endswith('deeplabv1_resnet101-coco.pth'), name
        assert c['eval_scales'] == [1.0] and c['eval_flip'] is False, name     # deeplab-pytorch main.py test: one MSC pass
        assert c['cam_dtype'] == 'float32', name
    text = (ROOT/'configs'/f'voc12_{method}.yaml').read_text()
    line = next(l for l in text.splitlines() if l.startswith('seg_backbone:'))
    assert 'kazuto1011/deeplab-pytorch' in line                                 # the original it follows, cited

def test_mcis_keeps_its_own_evaluation():
    c = _cfg('voc12_mcis')
    assert c['seg_backbone'] == 'mcis_largefov_resnet101' and c['eval_scales'] == [0.5, 0.75, 1.0, 1.25, 1.5] and c['cam_dtype'] == 'float32'

def test_one_msc_pass_at_scale_1():
    "eval_scales [1.0] on an MSC network: one forward of the MSC model (its base at 1.0, 0.5, 0.75, max-fused), softmax of the upsampled logits."
    from wsss_nb.deeplab import build_deeplab, predict, MSCFactor
    torch.manual_seed(0)
    model = build_deeplab('deeplab_resnet101', 3).eval()
    assert isinstance(model, MSCFactor)
    calls = []
    model.base.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape[2:])))
    x = torch.randn(3, 41, 49)
    with torch.no_grad():
        p = predict(model, x, scales=(1.0,))
        assert calls == [(41, 49), (20, 24), (30, 36)]                         # 1.0 then deeplab-pytorch's 0.5, 0.75 (scale_factor, floor)
        ref = F.interpolate(model(x[None]), size=(41, 49), mode='bilinear', align_corners=False).softmax(1)[0]
    torch.testing.assert_close(p, ref)
    calls.clear()
    with torch.no_grad(): predict(model, x, scales=(1.0, 0.5, 0.75))
    assert len(calls) == 9                                                       # the 3-scale average: three MSC passes (an option)

def test_crop_padding_is_the_caffe_mean():
    "deeplab_resnet101: crops padded with the exact Caffe mean, 0 after the network's own mean subtraction (it was (124, 116, 104): 1.3/-0.7/0.0)."
    from wsss_nb.data import SegTransform, normalize, MEAN_RGB_UINT8
    from wsss_nb.deeplab import DeepLabV2ResNet101, train_pad_colour, CAFFE_MEAN_BGR
    assert train_pad_colour('deeplab_resnet101') == CAFFE_MEAN_BGR[::-1] and train_pad_colour('mcis_largefov_resnet101') == CAFFE_MEAN_BGR[::-1]
    assert train_pad_colour('resnet101') is None and train_pad_colour('efficientnet_lite0') is None
    img = np.full((10, 12, 3), 200, np.uint8)
    s = SegTransform(crop_size=32, pad_image=train_pad_colour('deeplab_resnet101'))(dict(image=img, mask=np.ones((10, 12), np.uint8)), np.random.default_rng(0))
    from wsss_nb.data import IMAGENET_MEAN, IMAGENET_STD
    net = DeepLabV2ResNet101.__new__(DeepLabV2ResNet101)   # only its input conversion (BGR, 0-255, minus the Caffe mean), no weights
    net._scale = torch.tensor([255*v for v in IMAGENET_STD][::-1]).view(1, 3, 1, 1)
    net._shift = (torch.tensor([255*m for m in IMAGENET_MEAN][::-1]) - torch.tensor(CAFFE_MEAN_BGR)).view(1, 3, 1, 1)
    x = DeepLabV2ResNet101.to_caffe(net, normalize(s['image'])[None])[0]      # what the network sees
    pad = (s['mask'] == 255)
    assert pad.sum() == 32*32 - 10*12
    assert float(x[:, torch.from_numpy(pad)].abs().max()) < 1e-3
    assert float(x[:, torch.from_numpy(~pad)].sub(torch.tensor([200 - m for m in CAFFE_MEAN_BGR]).view(3, 1)).abs().max()) < 1e-3
    old = SegTransform(crop_size=32)(dict(image=img, mask=np.ones((10, 12), np.uint8)), np.random.default_rng(0))
    assert old['image'].dtype == np.uint8 and tuple(old['image'][-1, -1]) == MEAN_RGB_UINT8     # other networks: unchanged

def test_cam_dtype_round_trip(tmp_path):
    from wsss_nb.cam import save_cams, load_cams
    from wsss_nb.stages.make_cams import CamWriter
    rng = np.random.default_rng(0)
    m = rng.random((2, 17, 23)).astype(np.float32)
    save_cams(tmp_path/'a.npz', m, [3, 7], dtype='float32')
    k, back = load_cams(tmp_path/'a.npz')
    assert k.tolist() == [3, 7] and np.array_equal(back, m)                      # float32: bit-exact
    save_cams(tmp_path/'b.npz', m, [3, 7])
    _, half = load_cams(tmp_path/'b.npz')
    assert 0 < np.abs(half - m).max() <= 2**-11                                  # float16 (the default): rounded
    with np.load(tmp_path/'a.npz') as f: assert f['cam'].dtype == np.float32
    with pytest.raises(ConfigError, match='cam_dtype must be one of float16, float32'): save_cams(tmp_path/'c.npz', m, [3, 7], dtype='float64')
    with CamWriter(tmp_path/'w', dtype='float32') as w:
        (tmp_path/'w').mkdir(); w.put('x', torch.from_numpy(m), torch.tensor([3, 7]))
    assert np.array_equal(load_cams(tmp_path/'w'/'x.npz')[1], m)

def test_cam_dtype_in_the_stage_and_the_checks(smoke_data, tmp_path):
    "make_cams(dtype='float32') writes float32 files and fingerprints the choice; a wrong cam_dtype fails before stage 01."
    import wsss_nb.stages as S
    from wsss_nb.cli import preflight
    kw = dict(run='r', out_root=tmp_path/'out', data_root=smoke_data, dataset='synthetic', device='cpu', progress=False)
    S.train_classifier(epochs=1, batch_size=8, crop_size=64, max_images=2, **kw)
    st = S.make_cams(scales=[1.0], max_images=2, dtype='float32', **kw)
    f = sorted(st.path.glob('*.npz'))[0]
    with np.load(f) as z: assert z['cam'].dtype == np.float32
    assert st.params['params']['dtype'] == 'float32'
    with pytest.raises(ConfigError, match=re.escape("cam_dtype='half' (expected one of 'float16', 'float32')")):   # the schema's check
        preflight(dict(run='x', out_root=str(tmp_path/'o'), cam_dtype='half'))
