"""deeplab-pytorch's DeepLab-v2 ResNet-101 MSC (kazuto1011/deeplab-pytorch, libs/models/{resnet,deeplabv2,msc}.py): key names
and shapes, strict loading of its .pth layouts, output sizes, MSC max fusion, frozen BN."""
from wsss_nb.core import load_config
import math
from pathlib import Path
import pytest, torch, yaml
import torch.nn.functional as F
from wsss_nb.core import ConfigError, DataError
from wsss_nb.deeplab import (DeepLabV2ResNet101, MSCFactor, build_deeplab, load_deeplab_pytorch, msc_loss, SEG_NETWORKS)

ROOT = Path(__file__).parents[1]
FIXTURE = ROOT/'tests/fixtures/deeplab_pytorch_resnet101_msc.txt'

def fixture_shapes():
    "name -> shape of `DeepLabV2_ResNet101_MSC(n_classes=21).state_dict()` (632 entries; '-' = scalar num_batches_tracked)."
    out = {}
    for line in FIXTURE.read_text().splitlines():
        name, shape = line.split()
        out[name] = () if shape == '-' else tuple(int(s) for s in shape.split('x'))
    return out

def random_sd(shapes, gen):
    return {k: torch.zeros((), dtype=torch.long) if s == () else torch.randn(s, generator=gen) for k, s in shapes.items()}

@pytest.fixture(scope='module')
def full_model():
    torch.manual_seed(0)
    return build_deeplab('deeplab_resnet101', 21)   # MSC-wrapped, random init

def test_keys_and_shapes_equal_deeplab_pytorch(full_model):
    shapes = fixture_shapes()
    assert len(shapes) == 632
    ours = {k: tuple(v.shape) for k, v in full_model.state_dict().items()}
    assert list(ours) == list(shapes), f"first differing key: {next((a, b) for a, b in zip(ours, shapes) if a != b)}"
    assert ours == shapes

def test_trained_layout_loads_strictly(full_model, tmp_path):
    "A `deeplabv2_resnet101_msc-vocaug-20000.pth` layout (base. prefix) loads with torch's strict load and through a file."
    sd = random_sd(fixture_shapes(), torch.Generator().manual_seed(1))
    full_model.load_state_dict(sd, strict=True)    # no key map: our module names are theirs
    torch.save(sd, tmp_path/'deeplabv2_resnet101_msc-vocaug-20000.pth')
    m = build_deeplab('deeplab_resnet101', 21, pretrained=tmp_path/'deeplabv2_resnet101_msc-vocaug-20000.pth')
    assert torch.equal(m.base.aspp.c3.bias, sd['base.aspp.c3.bias'])
    assert torch.equal(m.base.layer4.block23.conv3x3.bn.running_var, sd['base.layer4.block23.conv3x3.bn.running_var'])

def test_coco_init_layout_skips_fc(full_model, capsys):
    "`deeplabv1_resnet101-coco.pth`: DeepLabV1_ResNet101(91) keys (no prefix, fc 91x2048x1x1, no ASPP), as their convert.py writes it."
    shapes = {k[len('base.'):]: s for k, s in fixture_shapes().items() if not k.startswith('base.aspp.')}
    shapes.update({'fc.weight': (91, 2048, 1, 1), 'fc.bias': (91,)})
    sd = random_sd(shapes, torch.Generator().manual_seed(2))
    aspp_before = full_model.base.aspp.c0.weight.clone()
    load_deeplab_pytorch(full_model, sd)
    assert 'skipping its classifier' in capsys.readouterr().out
    assert torch.equal(full_model.base.layer1.conv1.conv.weight, sd['layer1.conv1.conv.weight'])
    assert torch.equal(full_model.base.aspp.c0.weight, aspp_before)     # ASPP keeps its init, as main.py's strict=False
    bad = {k: v for k, v in sd.items() if k != 'layer5.block3.increase.bn.weight'}
    with pytest.raises(DataError, match='1 missing keys'): load_deeplab_pytorch(full_model, bad)

def test_wrong_files_fail_clearly(full_model):
    with pytest.raises(DataError, match='shape mismatches'):
        load_deeplab_pytorch(full_model, random_sd(fixture_shapes(), torch.Generator().manual_seed(3)) |
                             {'base.aspp.c0.weight': torch.zeros(91, 2048, 3, 3)})
    with pytest.raises(DataError, match='unexpected keys'):
        load_deeplab_pytorch(full_model, {'model.backbone.conv1.weight': torch.zeros(64, 3, 7, 7)})
    with pytest.raises(ConfigError, match='output stride 8'): build_deeplab('deeplab_resnet101', 21, output_stride=16)
    with pytest.raises(ConfigError, match='deeplabv1_resnet101-coco.pth'): build_deeplab('deeplab_resnet101', 21, pretrained='imagenet')

def expected_size(d, s):
    """deeplab-pytorch's logit size: MSC resizes by scale_factor, giving floor(d*s); conv1 7x7/2 pad 3:
    floor((d-1)/2)+1; max-pool 3x3/2 pad 1 ceil_mode: ceil((d-1)/2)+1; layer3.block1 1x1/2 reduce: floor((d-1)/2)+1.
    321: 161 -> 81 -> 41; 160 (x0.5) -> 80 -> 41 -> 21; 240 (x0.75) -> 120 -> 61 -> 31.
    513: 257 -> 129 -> 65; 256 -> 128 -> 65 -> 33; 384 -> 192 -> 97 -> 49."""
    d = math.floor(d * s)
    d = (d - 1) // 2 + 1
    d = math.ceil((d - 1) / 2) + 1
    return (d - 1) // 2 + 1

@pytest.mark.parametrize('d,sizes', [(321, (41, 21, 31)), (513, (65, 33, 49))])
def test_output_sizes(d, sizes):
    "Every MSC output at 321 and 513 px. One block per stage: blocks after the first are stride 1, so sizes do not depend on depth."
    assert tuple(expected_size(d, s) for s in (1, 0.5, 0.75)) == sizes
    m = MSCFactor(DeepLabV2ResNet101(21, n_blocks=(1, 1, 1, 1))).train()
    with torch.no_grad(): outs = m(torch.zeros(1, 3, d, d))
    assert [tuple(o.shape) for o in outs] == [(1, 21, s, s) for s in sizes] + [(1, 21, sizes[0], sizes[0])]
    m.eval()
    with torch.no_grad(): assert m(torch.zeros(1, 3, d, d)).shape == (1, 21, sizes[0], sizes[0])

def test_eval_msc_is_max_fusion_and_bn_frozen():
    torch.manual_seed(0)
    m = MSCFactor(DeepLabV2ResNet101(5, n_blocks=(1, 1, 1, 1)))
    for c in m.base.aspp.children(): torch.nn.init.normal_(c.bias)
    x = torch.randn(2, 3, 57, 57)
    m.eval()
    with torch.no_grad():
        full = m.base(x)
        up = [F.interpolate(m.base(F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False)), size=full.shape[2:],
                            mode='bilinear', align_corners=False) for s in (0.5, 0.75)]
        torch.testing.assert_close(m(x), torch.maximum(full, torch.maximum(*up)))
    m.train()
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad for bn in bns)
    before = [bn.running_mean.clone() for bn in bns]
    outs = m(x)
    msc_loss(outs, torch.randint(0, 5, (2, 57, 57))).backward()
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns))
    assert m.base.aspp.c0.weight.grad is not None and m.base.layer1.conv1.conv.weight.grad is not None
    groups = m.param_groups(2.5e-4)
    assert [g['lr'] for g in groups] == [2.5e-4, 2.5e-3, 5e-3] and groups[2]['weight_decay'] == 0

def test_caffe_input_conversion():
    "ImageNet-normalised RGB in -> BGR 0-255 minus (104.008, 116.669, 122.675), the input deeplab-pytorch feeds."
    from wsss_nb.data import IMAGENET_MEAN, IMAGENET_STD
    net = DeepLabV2ResNet101(3, n_blocks=(1, 1, 1, 1))
    img = torch.rand(1, 3, 4, 4)
    x = (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    caffe = img.flip(1) * 255 - torch.tensor([104.008, 116.669, 122.675]).view(1, 3, 1, 1)
    torch.testing.assert_close(net.to_caffe(x), caffe, atol=1e-3, rtol=0)
    net.eval(); ref = DeepLabV2ResNet101(3, n_blocks=(1, 1, 1, 1), input_format='caffe').eval()
    ref.load_state_dict(net.state_dict())
    with torch.no_grad(): torch.testing.assert_close(net(x), ref(caffe), atol=1e-3, rtol=1e-4)
    assert not any('_scale' in k or '_shift' in k for k in net.state_dict())    # constants are not saved

def test_registered_and_selected_by_config():
    from wsss_nb.backbones import backbones, get_backbone
    assert 'deeplab_resnet101' in backbones.names() and 'deeplab_resnet101' in SEG_NETWORKS
    body = get_backbone('deeplab_resnet101')
    assert body.out_channels == 2048 and body.output_stride == 8 and hasattr(body, 'layer5')
    for name in ('sccam', 'msa', 'l2g', 'l2g_csa'):    # methods whose papers train deeplab-pytorch's DeepLab-v2
        for suffix in ('', '_fixed'):
            p = ROOT/f'configs/voc12_{name}{suffix}.yaml'
            if p.is_file():
                cfg = load_config(p)
                assert cfg['seg_backbone'] == 'deeplab_resnet101', p.name
                assert cfg.get('seg_output_stride', 8) == 8, p.name

def test_largefov_key_list_and_sizes():
    """MCIS's ResNet-101 LargeFOV (GuoleiSun/MCIS_wsss segmentation/examples/seg/exp2/train_resnet_fov.prototxt): the
    deeplab-pytorch body + pyram_conv1 (3x3 d12, 2048->1024, no bias), pyram_conv2 (1x1 1024->1024, no bias), score (1x1, bias)."""
    from wsss_nb.deeplab import DeepLabLargeFOVResNet101, load_largefov
    from wsss_nb.backbones import backbones
    expected = {k[len('base.'):]: s for k, s in fixture_shapes().items() if not k.startswith('base.aspp.')}
    expected.update({'pyram_conv1.weight': (1024, 2048, 3, 3), 'pyram_conv2.weight': (1024, 1024, 1, 1),
                     'score.weight': (21, 1024, 1, 1), 'score.bias': (21,)})
    m = build_deeplab('mcis_largefov_resnet101', 21, rates=(12,), msc=False)
    assert isinstance(m, DeepLabLargeFOVResNet101) and 'mcis_largefov_resnet101' in backbones.names()
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == expected
    sd = random_sd({k: s for k, s in fixture_shapes().items() if '.aspp.' not in k} |
                   {'fc.weight': (91, 2048, 1, 1), 'fc.bias': (91,)}, torch.Generator().manual_seed(4))
    load_largefov(m, sd, verbose=False)                     # body of a deeplab-pytorch file; fc skipped, head kept
    assert torch.equal(m.layer5.block3.increase.conv.weight, sd['base.layer5.block3.increase.conv.weight'])
    with pytest.raises(ConfigError, match='one LargeFOV dilation'): build_deeplab('mcis_largefov_resnet101', 21)
    small = DeepLabLargeFOVResNet101(21, n_blocks=(1, 1, 1, 1)).train()
    assert not small.layer3.block1.reduce.bn.training
    with torch.no_grad(): assert small(torch.zeros(1, 3, 321, 321)).shape == (1, 21, 41, 41)

def test_segmentation_stage_trains_and_reloads(tmp_path):
    "`seg_backbone: deeplab_resnet101` through the unchanged segmentation stage: 2 iterations, then `load_segmenter`."
    from wsss_nb.synthetic import make_synthetic
    from wsss_nb.stages import train_segmentation, load_segmenter
    root = make_synthetic(tmp_path/'synthetic', n_train=4, n_val=2, size=64, seed=0)
    st = train_segmentation(run='dl', out_root=tmp_path/'out', dataset='synthetic', data_root=root, labels='gt',
                            backbone='deeplab_resnet101', pretrained=None, rates=(6, 12, 18, 24), msc=True, iters=2,
                            batch_size=2, crop_size=72, scales=[1.0], device='cpu',
                            amp=False, num_workers=0, progress=False,
                            diverge_factor=0)   # random init, 2 steps: the loss may jump; this tests the stage's files, not training
    from wsss_nb.deeplab import CAFFE_MEAN_BGR
    assert st.params['params']['pad'] == list(CAFFE_MEAN_BGR[::-1])   # 64-px images in 72-px crops: padded with the exact Caffe mean
    m, meta = load_segmenter(st.path/'model.pt')
    assert isinstance(m, MSCFactor) and isinstance(m.base, DeepLabV2ResNet101) and meta['backbone'] == 'deeplab_resnet101'
    with torch.no_grad(): assert m(torch.zeros(1, 3, 64, 64)).shape == (1, m.base.aspp.c0.out_channels, 9, 9)
