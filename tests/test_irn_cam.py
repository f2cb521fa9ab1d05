"""IRN's CAM baseline (Ahn, Cho, Kwak, CVPR 2019, arXiv:1904.05044; code jiwoon-ahn/irn: net/resnet50.py,
net/resnet50_cam.py, step/make_cam.py, misc/imutils.py, voc12/dataloader.py), checked against the facts of that code:
the backbone's strides and dilations, the output sizes of its formulas, PIL-bicubic rescaling of the uint8 image, the
`high_res` geometry (upsample to a multiple of 16, sum, crop) and the config that selects all of it.

No IRN weights or code are available offline, so the reference side of each check is a straightforward
re-implementation of the formula, written here, fed with the same (random or hand-made) maps as the library."""
import math
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from wsss_nb.backbones import get_backbone, ResNetBackbone
from wsss_nb.cam import infer_cams, normalize_cams, pil_rescale, strided_size, strided_up_size
from wsss_nb.core import ConfigError, load_config, project_root
from wsss_nb.data import normalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# ---------- sizes ----------

def test_sizes_of_375x500_by_hand():
    # get_strided_size(size, 4): ((375-1)//4+1, (500-1)//4+1) = (93+1, 124+1)
    assert strided_size((375, 500), 4) == (94, 125)
    # get_strided_up_size(size, 16): ((375-1)//16+1)*16 = 24*16, ((500-1)//16+1)*16 = 32*16
    assert strided_up_size((375, 500), 16) == (384, 512)
    assert strided_size((500, 375), 4) == (125, 94) and strided_up_size((500, 375), 16) == (512, 384)

@pytest.mark.parametrize('size', [(375, 500), (500, 333), (281, 500), (366, 500), (16, 16), (17, 33), (1, 1), (500, 500)])
def test_sizes_match_irn_formulas(size):
    for n, a, b in zip(size, strided_size(size, 4), strided_up_size(size, 16)):
        assert a == math.ceil(n/4) == (n - 1)//4 + 1
        assert b == math.ceil(n/16)*16 and b >= n and b - n < 16

def _os16(n):
    "Feature size after IRN's stride-2 steps: conv1 (7×7, pad 3), max-pool (3×3, pad 1), layer2 and layer3 (3×3, pad 1)."
    for k, p in ((7, 3), (3, 1), (3, 1), (3, 1)): n = (n + 2*p - k)//2 + 1
    return n

def test_backbone_map_sizes_at_irn_scales():
    "375×500 at scales 1, 0.5, 1.5, 2 (pil_rescale's round): the resnet50_irn map sizes, derived by hand, on the meta device."
    sizes = [(round(375*s), round(500*s)) for s in (1.0, 0.5, 1.5, 2.0)]
    assert sizes == [(375, 500), (188, 250), (562, 750), (750, 1000)]
    expected = [(24, 32), (12, 16), (36, 47), (47, 63)]   # 375→188→94→47→24, 500→250→125→63→32, ...
    assert [(_os16(h), _os16(w)) for h, w in sizes] == expected
    with torch.device('meta'):
        net = get_backbone('resnet50_irn').eval()
        for (h, w), e in zip(sizes, expected): assert tuple(net(torch.empty(2, 3, h, w)).shape) == (2, 2048) + e

# ---------- backbone ----------

def _expected_irn_convs():
    "Every conv of IRN's resnet50(strides=(2,2,2,1)) in module order: name -> (kernel, stride, dilation, padding)."
    out = {'conv1': (7, 2, 1, 3)}
    for li, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 1)), 1):
        for b in range(blocks):
            s = stride if b == 0 else 1
            out[f'layer{li}.{b}.conv1'] = (1, 1, 1, 0)
            out[f'layer{li}.{b}.conv2'] = (3, s, 1, 1)     # the stride sits in the 3×3 conv, dilation 1 everywhere
            out[f'layer{li}.{b}.conv3'] = (1, 1, 1, 0)
            if b == 0: out[f'layer{li}.{b}.downsample.0'] = (1, s, 1, 0)
    return out

def _convs(m):
    return {n: (c.kernel_size[0], c.stride[0], c.dilation[0], c.padding[0]) for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}

def test_every_conv_stride_and_dilation():
    got = _convs(get_backbone('resnet50_irn'))
    exp = _expected_irn_convs()
    assert list(got) == list(exp) and len(got) == 53
    assert got == exp
    pool = get_backbone('resnet50_irn').maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, False)

def test_dilated_resnet50_at_os16_differs_in_two_convs():
    lib = _convs(get_backbone('resnet50', output_stride=16))
    diff = {n for n, g in _expected_irn_convs().items() if lib[n] != g}
    assert diff == {'layer4.1.conv2', 'layer4.2.conv2'}
    assert lib['layer4.1.conv2'] == lib['layer4.2.conv2'] == (3, 1, 2, 2)
    assert lib['layer4.0.conv2'] == (3, 1, 1, 1)   # the first block keeps the previous dilation in both

def test_torchvision_weights_load_strictly_and_training_state():
    sd = {k: v for k, v in torchvision.models.resnet50(weights=None).state_dict().items() if not k.startswith('fc.')}
    net = get_backbone('resnet50_irn')
    net.load_state_dict(sd, strict=True)      # IRN loads torchvision's ResNet-50 file with the same names
    net.train()
    assert not any(m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d))   # FixedBatchNorm
    frozen = {n.split('.')[0] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {'conv1', 'bn1', 'layer1', 'layer2'}   # IRN detaches after layer2; conv1/bn1 frozen
    x = torch.randn(1, 3, 33, 33)
    net(x).mean().backward()
    assert net.layer2[0].conv2.weight.grad is None and net.layer3[0].conv2.weight.grad is not None
    with pytest.raises(ConfigError, match='frozen_stages'): ResNetBackbone(frozen_stages=7)

# ---------- input: normalisation and PIL bicubic ----------

def _irn_normalize(u8):
    "voc12/dataloader.py TorchvisionNormalize: (x/255 - mean)/std per RGB channel in float64, stored as float32, then CHW."
    out = np.empty(u8.shape, np.float32)
    for c in range(3): out[..., c] = (u8[..., c]/255. - MEAN[c])/STD[c]
    return torch.from_numpy(out.transpose(2, 0, 1).copy())

def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[h//3:2*h//3, w//4:w//2] = (200, 30, 60)   # some edges
    return img

def test_normalisation_is_irns():
    u8 = _image(37, 50)
    assert torch.allclose(normalize(u8), _irn_normalize(u8), atol=1e-6)

@pytest.mark.parametrize('scale', [0.5, 1.5, 2.0, 0.3, 1.0])
def test_pil_rescale_is_pil_bicubic_of_the_uint8_image(scale):
    u8 = _image(75, 100)
    size = (int(np.round(75*scale)), int(np.round(100*scale)))     # imutils.pil_rescale's target size
    ref = u8 if size == (75, 100) else np.asarray(Image.fromarray(u8).resize(size[::-1], Image.BICUBIC))
    got = pil_rescale(u8, scale)
    assert got.dtype == np.uint8 and got.shape == size + (3,)
    np.testing.assert_array_equal(got, ref)

def test_pil_bicubic_feeds_the_network_irns_inputs():
    "The network sees, per scale, the normalised PIL-bicubic image and its mirror image, in one batch of 2."
    u8, seen = _image(45, 61, seed=3), []
    def fn(x): seen.append(x.clone()); return torch.zeros(x.shape[0], 1, 3, 4)
    infer_cams(fn, normalize(u8), scales=(1.0, 0.5, 1.5, 2.0), image_resize='pil_bicubic')
    for s, x in zip((1.0, 0.5, 1.5, 2.0), seen):
        ref = _irn_normalize(u8 if s == 1 else pil_rescale(u8, s))
        assert x.shape == (2,) + ref.shape
        assert torch.allclose(x[0], ref, atol=1e-5) and torch.allclose(x[1], ref.flip(-1), atol=1e-5)

def test_bad_options_fail_naming_the_parameter():
    x = normalize(_image(8, 8))
    with pytest.raises(ConfigError, match="image_resize='bicubic'"): infer_cams(lambda t: t[:, :1], x, image_resize='bicubic')
    with pytest.raises(ConfigError, match="upsample='crop'"): infer_cams(lambda t: t[:, :1], x, upsample='crop')

# ---------- the high_res geometry ----------

def _bilinear(a, out_h, out_w):
    "Half-pixel bilinear resize of (K,h,w) numpy maps (align_corners=False), written out index by index."
    K, h, w = a.shape
    def taps(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5)*n_in/n_out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1); i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0
    y0, y1, wy = taps(h, out_h); x0, x1, wx = taps(w, out_w)
    top = a[:, y0][:, :, x0]*(1 - wx) + a[:, y0][:, :, x1]*wx
    bot = a[:, y1][:, :, x0]*(1 - wx) + a[:, y1][:, :, x1]*wx
    return top*(1 - wy[:, None]) + bot*wy[:, None]

def test_hand_made_cam_upsampled_then_cropped():
    "One OS-16 map of a 375×500 image: resize to 384×512, crop 375×500, equals the index-by-index formula."
    cam = np.random.default_rng(0).random((2, 24, 32))
    got = infer_cams(lambda x: torch.from_numpy(cam).float()[None].expand(x.shape[0], -1, -1, -1),
                     torch.zeros(3, 375, 500), scales=(1.0,), flip=False, upsample='strided_crop')
    ref = _bilinear(cam, 384, 512)[:, :375, :500]
    assert got.shape == (2, 375, 500)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)
    direct = infer_cams(lambda x: torch.from_numpy(cam).float()[None].expand(x.shape[0], -1, -1, -1),
                        torch.zeros(3, 375, 500), scales=(1.0,), flip=False)
    np.testing.assert_allclose(direct.numpy(), _bilinear(cam, 375, 500), atol=1e-5)
    assert np.abs(direct.numpy() - ref).max() > 0.05      # the two geometries really differ

class _PooledNet(nn.Module):
    "A fixed random 'CAM network' of output stride 16 (IRN's map sizes), whose maps depend on the image content."
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 3, 1, 1, generator=g))
    def forward(self, x):
        h, w = (_os16(n) for n in x.shape[-2:])
        return F.conv2d(F.adaptive_avg_pool2d(x, (h, w)), self.w)   # may be negative: ReLU'd by the CAM path

def _irn_reference(net, u8, scales=(1.0, 0.5, 1.5, 2.0)):
    """step/make_cam.py written out: per scale, net on [image, mirror]; ReLU; add the flipped-back map; upsample
    to strided_up_size(16), sum, crop; also the stride-4 `cam` map; both divided by the per-class max + 1e-5."""
    H, W = u8.shape[:2]
    up, s4 = strided_up_size((H, W), 16), strided_size((H, W), 4)
    high, low = 0, 0
    for s in scales:
        img = u8 if s == 1 else np.asarray(Image.fromarray(u8).resize((int(np.round(W*s)), int(np.round(H*s))), Image.BICUBIC))
        x = _irn_normalize(img)
        with torch.no_grad(): o = F.relu(net(torch.stack([x, x.flip(-1)])))
        o = (o[0] + o[1].flip(-1)).numpy().astype(np.float64)
        high = high + _bilinear(o, *up)
        low = low + _bilinear(o, *s4)
    high = high[:, :H, :W]
    return high/(high.max((1, 2), keepdims=True) + 1e-5), low/(low.max((1, 2), keepdims=True) + 1e-5)

@pytest.mark.parametrize('size', [(75, 100), (61, 45)])
def test_multiscale_flip_high_res_and_cam_equal_irns_formula(size):
    net, u8 = _PooledNet().eval(), _image(*size, seed=5)
    high, low = _irn_reference(net, u8)
    x = normalize(u8)
    got = normalize_cams(infer_cams(net, x, image_resize='pil_bicubic', upsample='strided_crop'))
    assert got.shape == (3,) + size
    np.testing.assert_allclose(got.numpy(), high, atol=1e-4)
    got4 = normalize_cams(infer_cams(net, x, image_resize='pil_bicubic', size=strided_size(size, 4)))
    assert got4.shape == (3,) + strided_size(size, 4)
    np.testing.assert_allclose(got4.numpy(), low, atol=1e-4)
    default = normalize_cams(infer_cams(net, x))       # the library's default geometry is another map
    assert (default - got).abs().max() > 1e-2

def test_batched_equals_single_with_irn_geometry():
    net = _PooledNet().eval()
    imgs = [normalize(_image(45, 61, seed=i)) for i in range(3)]
    kw = dict(image_resize='pil_bicubic', upsample='strided_crop')
    batch = infer_cams(net, torch.stack(imgs), **kw)
    for i, x in enumerate(imgs): assert torch.allclose(batch[i], infer_cams(net, x, **kw), atol=1e-5)

# ---------- the config ----------

def test_voc12_cam_config_selects_irn():
    from wsss_nb.cli import notebook_params, valid_keys
    from wsss_nb.stages import stage_kwargs
    cfg = load_config(project_root()/'configs'/'voc12_cam.yaml', valid_keys())
    assert (cfg['method'], cfg['backbone'], cfg['output_stride']) == ('cam', 'resnet50_irn', 16)
    assert cfg['cam_scales'] == [1.0, 0.5, 1.5, 2.0] and cfg['cam_flip'] is True
    assert (cfg['cam_image_resize'], cfg['cam_upsample']) == ('pil_bicubic', 'strided_crop')
    assert cfg['pseudo_bg_threshold'] == 0.15 and cfg['cls_bn_eval'] is True
    assert (cfg['cls_crop_size'], cfg['cls_batch_size'], cfg['cls_epochs'], cfg['cls_lr'], cfg['cls_weight_decay']) == (512, 16, 5, 0.1, 1e-4)
    assert (cfg['cls_jitter'], cfg['cls_flip'], cfg['cls_scale_min'], cfg['cls_scale_max']) == (0.0, True, 320/500, 640/500)
    params = {**notebook_params('00_run_all'), **cfg}
    kw = stage_kwargs('cams', params)
    assert (kw['image_resize'], kw['upsample']) == ('pil_bicubic', 'strided_crop')
    assert stage_kwargs('cls', params)['backbone'] == 'resnet50_irn'
    assert _convs(get_backbone(cfg['backbone'], output_stride=cfg['output_stride'])) == _expected_irn_convs()
    defaults = notebook_params('00_run_all')   # every other config keeps the library's geometry
    assert (defaults['cam_image_resize'], defaults['cam_upsample']) == ('tensor_bilinear', 'direct')

def test_stage_refuses_a_bad_geometry_before_running(tmp_path):
    from wsss_nb.stages import make_cams
    with pytest.raises(ConfigError, match="cam_image_resize='bilinear'"):
        make_cams(run='x', out_root=tmp_path, image_resize='bilinear', device='cpu', progress=False)

# ---------- IRN's CAM weight file ----------

def _irn_file(net):
    "A stand-in for IRN's res50_cam.pth: net.resnet50_cam.Net registers each layer as resnet50.*, stageN.* and backbone.N.*."
    tv = {k.removeprefix('backbone.'): v for k, v in net.state_dict().items() if k.startswith('backbone.')}
    stages = [('conv1.', 0, '0.'), ('bn1.', 0, '1.'), ('layer1.', 0, '4.'), ('layer2.', 1, '0.'), ('layer3.', 2, '0.'), ('layer4.', 3, '0.')]
    out = {}
    for k, v in tv.items():
        out['resnet50.' + k] = v
        pre, i, pos = next(s for s in stages if k.startswith(s[0]))
        out[f'stage{i + 1}.{pos}{k[len(pre):]}'] = v
        out[f'backbone.{i}.{pos}{k[len(pre):]}'] = v
    out['classifier.weight'] = out['newly_added.0.weight'] = net.classifier.weight.detach().clone()
    return out

def test_irn_weight_file_loads_strictly():
    from wsss_nb.cam import CAMNet, irn_cam_state_dict
    from wsss_nb.core import DataError
    torch.manual_seed(0)
    src = CAMNet(get_backbone('resnet50_irn'), 20).eval()
    f = _irn_file(src)
    assert 'stage1.4.0.conv1.weight' in f and 'backbone.3.0.2.conv3.weight' in f and f['classifier.weight'].shape == (20, 2048, 1, 1)
    dst = CAMNet(get_backbone('resnet50_irn'), 20).eval()
    dst.load_state_dict(irn_cam_state_dict(f), strict=True)
    for k, v in src.state_dict().items(): assert torch.equal(dst.state_dict()[k], v), k
    with pytest.raises(DataError, match='res50_cam.pth'): irn_cam_state_dict({**f, 'aspp.weight': torch.zeros(1)}, 'res50_cam.pth')
    with pytest.raises(DataError, match='classifier'): irn_cam_state_dict({k: v for k, v in f.items() if 'classifier' not in k and 'newly' not in k})
