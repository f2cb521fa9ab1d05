"Group-WSSS (method 'group') runs through the classifier, CAM and pseudo-label stages, and its group size is a real knob."
import numpy as np
from conftest import assert_cam_files, assert_label_files, faithful_and_fixed
import pytest
import torch
import wsss_nb.stages as S
from wsss_nb.cam import get_method
from wsss_nb.core import load_json
from wsss_nb.data import get_dataset
from wsss_nb.backbones import get_backbone

COMMON = dict(run='group', dataset='synthetic', device='cpu', progress=False)

def test_group_pipeline_smoke(smoke_data, tmp_path):
    out = tmp_path/'out'
    cls = S.train_classifier(out_root=out, data_root=smoke_data, method='group', backbone='efficientnet_lite0', pretrained=None,
                             epochs=1, batch_size=2, crop_size=48, **COMMON)
    hist = load_json(cls.path/'history.json')
    assert hist and all(np.isfinite(h['loss']) and np.isfinite(h['loss_init']) and np.isfinite(h['loss_final']) for h in hist)
    assert len(hist) == 16//2                                     # 16 exemplars, 2 groups per step
    cams = S.make_cams(out_root=out, data_root=smoke_data, scales=[1.0], **COMMON)
    ds = get_dataset('synthetic', smoke_data, 'train')
    assert_cam_files(cams.path, ds)
    pseudo = S.make_pseudo_labels(out_root=out, data_root=smoke_data, refiner='saliency', refiner_args={'variant': 'group'},
                                  bg_threshold=0.3, **COMMON)
    assert_label_files(pseudo.path/'labels', ds)

def test_group_size_4_builds_and_steps():
    torch.manual_seed(0)
    wsss = get_method('group', group_size=4, head_width=32)
    model = wsss.build_model(get_backbone('efficientnet_lite0', pretrained=None, output_stride=16), 8)
    assert model.fusion.in_channels == 3*8
    opt, sched = wsss.optimizer(model, lr=1e-3, total_steps=3, steps_per_epoch=1)
    labels = torch.zeros(8, 8); labels[:, 0] = 1; labels[4:, 3] = 1
    before = model.fusion.weight.detach().clone()
    out = wsss.loss(model.train(), {'image': torch.randn(8, 3, 48, 48), 'label': labels})
    assert set(out) == {'loss', 'loss_init', 'loss_final'} and torch.isfinite(out['loss'])
    opt.zero_grad(); out['loss'].backward(); opt.step(); sched.step()
    assert not torch.equal(before, model.fusion.weight)
    with pytest.raises(ValueError, match='groups of 4'): model(torch.randn(6, 3, 48, 48))

def test_group_online_maps_through_the_stages(smoke_data, tmp_path):
    "online_maps: maps accumulated while training, written to cls/online_maps.npz, read back by the CAM stage."
    from wsss_nb.cam import load_cams
    from wsss_nb.core import ConfigError
    from wsss_nb.methods.group import ONLINE_MAPS, load_online_maps
    out = tmp_path/'out'
    kw = dict(out_root=out, data_root=smoke_data, method='group', backbone='efficientnet_lite0', pretrained=None, epochs=2,
              batch_size=2, method_args=dict(online_maps=True, head_init='kaiming', head_width=32), **COMMON)
    with pytest.raises(ConfigError, match='cls_resize.*cls_flip'): S.train_classifier(crop_size=48, **kw)   # random crops + flips
    assert not (out/'group'/'cls').exists()                              # refused before anything was written
    cls = S.train_classifier(resize=48, crop_size=48, scale_min=1.0, scale_max=1.0, flip=False, **kw)
    maps = load_online_maps(cls.path/ONLINE_MAPS)
    ds = get_dataset('synthetic', smoke_data, 'train')
    # the last epoch writes a map for every class of every exemplar (16 images, 2 groups per step: all are exemplars)
    assert set(maps) == {f'{i}/{c}' for i in ds.ids for c in np.flatnonzero(ds.labels[i])}
    assert all(m.dtype == np.uint8 and m.shape == (3, 3) for m in maps.values())     # 48 px at output stride 16
    cams = S.make_cams(out_root=out, data_root=smoke_data, scales=[1.0], **COMMON)
    assert_cam_files(cams.path, ds)
    i = ds.ids[0]
    keys, cam = load_cams(cams.path/f'{i}.npz')
    for k, c in zip(keys, cam):     # the CAM is the stored map resized to the image (then max-normalised by the stage)
        m = torch.nn.functional.interpolate(torch.from_numpy(maps[f'{i}/{k}']).float()[None, None], size=c.shape, mode='bilinear',
                                            align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(c, m/max(m.max(), 1e-8), atol=1e-3)

def test_voc12_group_configs_faithful_and_fixed():
    "Every line of the faithful config has a comment; the fixed one differs only in lines marked FIX (and the run name)."
    faithful, fixed, changed = faithful_and_fixed('group')
    assert changed == {'run', 'method_args.gdl_in_eval', 'method_args.head_init'}

def test_group_quirk_flags_arithmetic():
    "gdl_in_eval: the original's GDL stays random at test time (drop branch w.p. 0.8); head_init 'normal': N(0, 0.01)."
    torch.manual_seed(0)
    h = torch.tensor([[[10., 8., 7.], [6.9, 0., -3.]]]).expand(4000, 2, 2, 3).contiguous()   # channel mean = value
    quirk = get_method('group', gdl_in_eval=True, head_width=8).build_model(get_backbone('efficientnet_lite0', pretrained=None), 3).eval()
    fixed = get_method('group', head_width=8).build_model(get_backbone('efficientnet_lite0', pretrained=None), 3).eval()
    dropped = quirk.gdl(h)[:, 0, 0, 0] == 5.          # the top position (10 >= 0.7*10) halved by the drop branch
    assert abs(float(dropped.float().mean()) - 0.8) < 0.03
    torch.testing.assert_close(fixed.gdl(h), h*(1 + torch.sigmoid(h.mean(1, keepdim=True)))/2)   # importance branch only
    w = quirk.head[0].weight
    assert abs(float(w.detach().std())/0.01 - 1) < 0.02 and abs(float(w.detach().mean())) < 0.001
    he = get_method('group', head_init='kaiming', head_width=8).build_model(get_backbone('efficientnet_lite0', pretrained=None), 3).head[0].weight
    assert abs(float(he.detach().std())/(2/(w.shape[1]*9))**0.5 - 1) < 0.02          # He: sqrt(2/fan_in), 0.0132 for 1280x3x3

def test_propagate_trace_matches_plain_pass():
    "`propagate(trace=True)` (for the lesson's figure) returns the same states plus, per step, attention rows summing to 1 over the sender."
    from wsss_nb.methods.group import GroupNet
    torch.manual_seed(0)
    net = GroupNet(get_backbone('efficientnet_lite0', pretrained=None, output_stride=16), 3, group_size=3, steps=2, head_width=16).eval()
    x = torch.randn(2, 3, 3, 4, 5)                                    # 2 groups of 3 states, K=3, 4x5
    with torch.no_grad():
        h = net.propagate(x); h2, steps = net.propagate(x, trace=True)
    assert torch.allclose(h, h2) and len(steps) == 2 and torch.allclose(steps[-1]['h'], h)
    assert steps[0]['attn'].shape == (2, 3, 2, 20, 20) and steps[0]['msg'].shape == (2, 3, 2, 3, 4, 5)
    assert torch.allclose(steps[0]['attn'].sum(-1), torch.ones(2, 3, 2, 20), atol=1e-5)
