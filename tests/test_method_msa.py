"MSA (method 'msa') runs through the classifier (SCN training included), CAM and pseudo-label stages; its saliency version steps."
import numpy as np
from conftest import assert_cam_files, assert_label_files
import torch
import wsss_nb.stages as S
from wsss_nb.cam import get_method
from wsss_nb.core import load_json
from wsss_nb.data import get_dataset
from wsss_nb.backbones import get_backbone

COMMON = dict(run='msa', dataset='synthetic', device='cpu', progress=False, max_images=8)   # 8 of the 16 images: CPU time

def test_msa_pipeline_smoke(smoke_data, tmp_path):
    out = tmp_path/'out'
    cls = S.train_classifier(out_root=out, data_root=smoke_data, method='msa',   # 2 epochs of one step: best-epoch selection
                             method_args={'scn_epochs': 1, 'scn_batch_size': 8, 'select_images': 4},
                             backbone='efficientnet_lite0', pretrained=None, epochs=2, batch_size=4, crop_size=48,
                             **{**COMMON, 'max_images': 4})
    hist = load_json(cls.path/'history.json')
    assert len(hist) == 2 and all(np.isfinite(h['loss']) and np.isfinite(h['cls']) and np.isfinite(h['ipc']) for h in hist)
    assert (cls.path/'scn.pt').is_file()                                # the trained SCN is kept for resumes
    ck = torch.load(cls.path/'model.pt', map_location='cpu', weights_only=False)
    assert bool(ck['model']['scn_trained'])                              # ... and travels in the classifier's state_dict
    scores = torch.load(cls.path/'last.pt', map_location='cpu', weights_only=False)['method_state']['select_scores']
    assert list(scores) == [1] and 0 <= scores[1] <= 1                  # epoch 1 scored at the start of epoch 2 (epoch 2 at the end)
    best = torch.load(cls.path/'best.pt', map_location='cpu', weights_only=False)
    assert all(torch.equal(ck['model'][k], best[k]) for k in best)      # the saved classifier is the best-scoring epoch
    cams = S.make_cams(out_root=out, data_root=smoke_data, scales=[1.0], **COMMON)
    ds = get_dataset('synthetic', smoke_data, 'train'); ds.ids = ds.ids[:8]
    assert len(list(cams.path.glob('*.npz'))) == 8
    assert_cam_files(cams.path, ds)
    pseudo = S.make_pseudo_labels(out_root=out, data_root=smoke_data, refiner='none', bg_threshold=0.3, **COMMON)
    assert_label_files(pseudo.path/'labels', ds)

def test_msa_saliency_version_steps():
    torch.manual_seed(0)
    wsss = get_method('msa', ipc_target='saliency')
    assert wsss.needs_saliency and not get_method('msa').needs_saliency
    model = wsss.build_model(get_backbone('efficientnet_lite0', pretrained=None, output_stride=16), 8).train()
    opt, sched = wsss.optimizer(model, lr=1e-3, total_steps=3, steps_per_epoch=1)
    labels = torch.zeros(2, 8); labels[:, 0] = 1; labels[1, 3] = 1
    sal = torch.zeros(2, 40, 40); sal[:, 8:30, 10:28] = 1                 # 40 px: padded to 48 inside the method
    before = model.classifier.weight.detach().clone()
    out = wsss.loss(model, {'image': torch.randn(2, 3, 40, 40), 'label': labels, 'saliency': sal})
    assert set(out) == {'loss', 'cls', 'ipc'} and torch.isfinite(out['loss']) and float(out['ipc']) >= 0
    opt.zero_grad(); out['loss'].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), wsss.clip_grad_norm); opt.step(); sched.step()
    assert not torch.equal(before, model.classifier.weight)
    assert all(p.grad is None for p in model.scn.parameters())           # the SCN stays frozen

# ---- quirk flags: each checks the original's arithmetic (CHENDL-SHEN/MSA) on a tiny case ----
import math
import pytest
import torch.nn as nn
import torch.nn.functional as F
from wsss_nb.cam import MethodContext
from wsss_nb.data import SegTransform, normalize, IMAGENET_MEAN, IMAGENET_STD, MEAN_RGB_UINT8
from wsss_nb.methods.msa import (MSAMethod, MSANet, ScnCropCollate, cell_valid, ipc_loss, opencv_lab8, rgb_to_lab, scn_loss,
                                 undilate_layer4)

class _Tiny(nn.Module):
    "A two-parameter-tensor stand-in: 'backbone.*' and new-layer parameters, as the method's param groups see them."
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 1)
        self.classifier = nn.Linear(1, 1)

def _original_poly_sgd(params0, grads, lrs, wds, momentum, T, power=0.5):
    "tools/ai/optim_utils.py PolyOptimizer: lr·(1 - t/T)^power set before each step of torch SGD(params, lr, momentum, nesterov=True)."
    ps, bufs, out = [p.clone() for p in params0], [None]*len(params0), []
    for t, gs in enumerate(grads):
        for i, (p, g) in enumerate(zip(ps, gs)):
            d = g + wds[i]*p                                     # group weight decay
            bufs[i] = d.clone() if bufs[i] is None else momentum*bufs[i] + d
            ps[i] = p - lrs[i]*(1 - t/T)**power*(d + momentum*bufs[i])   # Nesterov
        out.append([p.clone() for p in ps])
    return out

def test_momentum_quirk_reproduces_original_optimizer_steps():
    torch.manual_seed(0)
    T, lr, wd = 4, 0.1, 4e-5
    for quirk in (True, False):
        model = _Tiny()
        names = [n for n, _ in model.named_parameters()]        # backbone.weight, backbone.bias, classifier.weight, classifier.bias
        p0 = [p.detach().clone() for p in model.parameters()]
        opt, sched = get_method('msa', momentum_quirk=quirk).optimizer(model, lr, total_steps=T, weight_decay=wd)
        grads = [[torch.randn_like(p) for p in p0] for _ in range(3)]
        lrs = {'backbone.weight': lr, 'backbone.bias': 2*lr, 'classifier.weight': 10*lr, 'classifier.bias': 20*lr}
        wds = {n: (0. if n.endswith('bias') else wd) for n in names}
        want = _original_poly_sgd(p0, grads, [lrs[n] for n in names], [wds[n] for n in names], momentum=wd, T=T)
        for t, gs in enumerate(grads):
            for p, g in zip(model.parameters(), gs): p.grad = g.clone()
            opt.step(); sched.step()
            same = all(torch.allclose(p, w, atol=1e-7) for p, w in zip(model.parameters(), want[t]))
            assert same == quirk                                 # Nesterov scales even the first step by (1 + momentum)
        assert opt.defaults['momentum'] == (wd if quirk else 0.9)

def test_opencv8_lab_scaling_and_scn_loss_value():
    # OpenCV cvtColor(uint8, COLOR_RGB2LAB): white (255,128,128), black (0,128,128), red (136,208,195); the original divides by 255
    rgb = torch.tensor([[1., 1., 1.], [0., 0., 0.], [1., 0., 0.]]).T.reshape(1, 3, 3, 1)
    torch.testing.assert_close(opencv_lab8(rgb)[0, :, :, 0].T*255, torch.tensor([[255., 128, 128], [0, 128, 128], [136, 208, 195]]))
    # one 2x2 cell, two white and two black pixels, every pixel on its own cell (hard Q): the colour error is L/2 per pixel
    img = torch.zeros(1, 3, 2, 2); img[..., 0, :] = 1                   # top row white, bottom row black
    x = (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))/torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    Q = torch.zeros(1, 9, 2, 2); Q[:, 4] = 1
    xy = 0.005*0.003/2*4*math.sqrt(0.5)                                 # every pixel sqrt(0.5) px from the cell centre
    cv = scn_loss(Q, x, cell=2, lab_scale='opencv8')
    assert math.isclose(float(cv['lab']), 0.005*4*0.5/2, rel_tol=1e-4)   # L 255/255 vs 0: 0.5 from the mean
    assert math.isclose(float(cv['xy']), xy, rel_tol=1e-4)
    cie = scn_loss(Q, x, cell=2)
    assert math.isclose(float(cie['lab']), 0.005*4*50/2, rel_tol=1e-3)   # L 100 vs 0: 50 from the mean, 100x the original
    assert float(cie['lab'])/float(cie['xy']) > 100*float(cv['lab'])/float(cv['xy'])

def test_jitter_does_not_make_padding_valid():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (44, 44, 3), dtype=np.uint8)              # 44x44 image, padded to a 64x64 crop
    old_rule = lambda x: (F.avg_pool2d((x.abs().amax(1, keepdim=True) > 0.02).float(), 16) > 0.5).float()
    broken = 0
    for seed in range(4):
        for jit in (0.0, 0.3):
            s = SegTransform(crop_size=64, flip=True, jitter=jit)({'image': img}, np.random.default_rng(seed))
            x = normalize(s['image'])[None]
            v = cell_valid(x, 16)[0, 0]
            plain = SegTransform(crop_size=64, flip=True)({'image': img}, np.random.default_rng(seed))   # same draws, no jitter
            flipped = not np.array_equal(plain['image'][:44, :44], img)
            real = torch.zeros(4, 4); real[:3, :3] = 1                  # 44 px: 3 cells of which the last is 12/16 image
            if flipped: real = real.flip(-1)                            # flip after the crop: padding on the left
            torch.testing.assert_close(v, real)                         # whatever the jitter did to the padding colour
            broken += int(old_rule(x)[0, 0, 3].sum() > 0)
    assert broken > 0                                                   # the old rule counted jittered padding as image

def test_cell_valid_pads_to_multiple():
    x = torch.randn(1, 3, 40, 40)
    test = cell_valid(x, 16, 16)
    assert test.shape == (1, 1, 3, 3) and test[0, 0, :2, :2].eq(1).all() and test[0, 0, 2].eq(0).all()

def test_undilated_layer4_is_the_original_stride_layout():
    import torchvision
    torch.manual_seed(0)
    bb = get_backbone('resnet50', pretrained=None, output_stride=16).eval()
    ref = torchvision.models.resnet50(weights=None).eval()             # strides (2,2,2,2), dilation 1 ...
    ref.layer4.load_state_dict(bb.layer4.state_dict())
    ref.layer4[0].conv2.stride, ref.layer4[0].downsample[0].stride = (1, 1), (1, 1)   # ... with layer4 at stride 1: (2,2,2,1)
    x = torch.randn(1, 1024, 5, 5)
    with torch.no_grad():
        dilated = bb.layer4(x)
        undilate_layer4(bb)
        torch.testing.assert_close(bb.layer4(x), ref.layer4(x))
    assert not torch.allclose(dilated, ref.layer4(x))
    assert all(m.dilation == (1, 1) for m in bb.layer4.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(Exception, match='ResNet backbone at output stride 16'):
        undilate_layer4(get_backbone('resnet50', pretrained=None, output_stride=8))

def test_patch_filter_quirk_lets_padded_patches_in():
    # image 0: no foreground at all, last column padding; image 1: left half foreground. One patch each.
    fg = torch.zeros(2, 1, 4, 4); fg[1, :, :, :2] = 1
    feat = torch.zeros(2, 2, 4, 4); feat[:, 0, :, :2] = 1; feat[:, 1, :, 2:] = 1
    valid = torch.ones(2, 1, 4, 4); valid[0, :, :, 3] = 0
    fixed = ipc_loss(fg, feat*valid, valid, patches=1)
    torch.testing.assert_close(fixed, ipc_loss(fg[1:], feat[1:], valid[1:], patches=1))   # image 0 skipped: no foreground
    quirk = ipc_loss(fg, feat*valid, valid, patches=1, filter_quirk=True)
    # original: max(1 - bg·mask) = 1 on the padded column, so image 0 counts; its 12 valid cells (8 of colour A, 4 of B)
    # are all background: prototype (8A + 4B)/12, squared error 2·(1/3)² on A cells and 2·(2/3)² on B cells
    s0 = 8*2*(1/3)**2 + 4*2*(2/3)**2
    s1 = float(ipc_loss(fg[1:], feat[1:], valid[1:], patches=1))*(16 + 1e-3)
    assert math.isclose(float(quirk), (s0 + s1)/(12 + 16 + 1e-3), rel_tol=1e-3)

def test_default_init_of_new_convs():
    class Feats(nn.Module):
        def __init__(self):
            super().__init__(); self.a = nn.Conv2d(3, 32, 3, 4, 1); self.b = nn.Conv2d(32, 512, 1)
        def forward_features(self, x): m = self.a(x); return {'mid': m, 'out': self.b(m)}
    torch.manual_seed(0)
    for init in ('default', 'kaiming'):
        w = MSANet(Feats(), 2, cell=8, init=init).classifier.weight              # fan-in 512
        bound = 1/math.sqrt(512)                                               # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert (float(w.detach().abs().max()) <= bound) == (init == 'default')
    with pytest.raises(Exception, match="'kaiming' or 'default'"): MSANet(Feats(), 2, cell=8, init='xavier')

def test_original_scn_crops():
    torch.manual_seed(0)
    col = ScnCropCollate(crop=64, mult=16, mode='original', resize=(32, 48))
    x, rgb = col([{'image': torch.randn(3, 40, 60)}, {'image': torch.randn(3, 60, 30)}])
    assert x.shape == rgb.shape == (2, 3, 64, 64)
    for n in range(2):
        inside = rgb[n].abs().amax(0) > 0
        ys, xs = inside.any(1).nonzero(), inside.any(0).nonzero()
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert 32 <= max(h, w) <= 48                                    # long side resized into [32, 48], placed in the window
        assert x[n][:, ~inside].abs().max() == 0 and rgb[n][:, ~inside].abs().max() == 0   # padding: 0 input, black colour
    big, _ = ScnCropCollate(crop=32, mult=16, mode='original', resize=(64, 64))([{'image': torch.randn(3, 64, 64)}])
    assert big.shape == (1, 3, 32, 32) and big.abs().amin(1).gt(0).float().mean() > 0.99   # larger than the crop: no padding
    with pytest.raises(Exception, match="'common' or 'original'"): ScnCropCollate(mode='resize')

def test_best_epoch_selection(smoke_data, tmp_path):
    ds = get_dataset('synthetic', smoke_data, 'train'); ds.ids = ds.ids[:3]
    wsss = get_method('msa', select_images=3)
    ctx = MethodContext(dataset=ds, device='cpu')
    from wsss_nb.data import load_mask
    def perfect(model, image, ctx, i=[0]):                              # the GT as CAM: mIoU 1 at any threshold
        m = torch.from_numpy(load_mask(ds.mask_path(ds.ids[i[0]]))).long(); i[0] += 1
        return F.one_hot(m.clamp(max=ds.num_classes - 1), ds.num_classes).permute(2, 0, 1)[1:].float()
    wsss.infer = perfect
    assert wsss.select_score(nn.Module(), ctx) == pytest.approx(1.0)
    wsss.infer = lambda model, image, ctx: torch.zeros(ds.num_classes - 1, *image.shape[-2:])   # all background
    conf = [load_mask(ds.mask_path(i)) for i in ds.ids]
    bg = sum(int((c == 0).sum()) for c in conf)/sum(int((c < 255).sum()) for c in conf)
    present = len(set(np.unique(np.concatenate([c.ravel() for c in conf]))) - {255})
    assert wsss.select_score(nn.Module(), ctx) == pytest.approx(bg/present)   # IoU_bg = bg fraction; the other classes 0
    split = smoke_data/'ImageSets'/'Segmentation'/'sel.txt'; split.write_text(f"{ds.ids[2]}\nnot_in_train\n{ds.ids[0]}\n")
    wsss = get_method('msa', select_images=1, select_split='sel')        # first listed id that the training set holds
    wsss.infer = lambda model, image, ctx: torch.zeros(ds.num_classes - 1, *image.shape[-2:])
    c = load_mask(ds.mask_path(ds.ids[2]))
    assert wsss.select_score(nn.Module(), ctx) == pytest.approx(float((c == 0).sum()/(c < 255).sum())/len(set(np.unique(c)) - {255}))

# ---- issue 17: MSA's released SpixelNet (Q_model_final.pth) as the SCN, via `wsss-nb import spixelnet` ----
def _released_spixelnet(path):
    "A stand-in Q_model_final.pth: SpixelNet1l_bn's 100 key names and shapes (committed fixture), random values."
    import json
    from pathlib import Path
    keys = json.loads((Path(__file__).parent/'fixtures'/'spixelnet1l_bn_keys.json').read_text())['keys']
    torch.manual_seed(0)
    sd = {k: (torch.tensor(3) if not s else torch.rand(s) + 0.5 if k.endswith('running_var') else torch.randn(s)*0.1)
          for k, s in keys.items()}
    torch.save({'epoch': 30, 'state_dict': sd}, path)
    return sd

def test_scn_weights_from_imported_spixelnet(smoke_data, tmp_path):
    from wsss_nb.importers import import_spixelnet
    from wsss_nb.cli import check_components
    from wsss_nb.core import ConfigError
    orig = _released_spixelnet(tmp_path/'Q_model_final.pth')
    f = import_spixelnet(tmp_path/'Q_model_final.pth', tmp_path/'imported'/'spixelnet.pth')
    out = tmp_path/'out'
    cls = S.train_classifier(out_root=out, data_root=smoke_data, method='msa', method_args={'scn_weights': str(f), 'scn_epochs': 50},
                             backbone='efficientnet_lite0', pretrained=None, epochs=1, batch_size=4, crop_size=48,
                             **{**COMMON, 'max_images': 4})
    ck = torch.load(cls.path/'model.pt', map_location='cpu', weights_only=False)['model']
    assert bool(ck['scn_trained']) and not (cls.path/'scn.pt').exists()          # loaded, not trained (50 epochs would show)
    for ours, theirs in (('scn.enc.0.0.0.weight', 'conv0a.0.weight'), ('scn.enc.4.1.1.running_var', 'conv4b.1.running_var'),
                         ('scn.deconv.3.0.weight', 'deconv3.0.weight'), ('scn.fuse.0.0.weight', 'conv0_1.0.weight'),
                         ('scn.pred.bias', 'pred_mask0.bias')):
        assert torch.equal(ck[ours], orig[theirs]), ours                         # the SCN used = the released weights
    imported = torch.load(f, weights_only=True)
    assert all(torch.equal(ck['scn.' + k], v) for k, v in imported.items())
    from wsss_nb.core import content_hash
    inputs = load_json(cls.path/'_params.json')['params']['inputs']
    assert inputs['method_args.scn_weights'] == content_hash(f)                  # the fingerprint holds the file's content
    # a wrong file: the released checkpoint itself (not converted), and a missing one: one line naming key and file, before stage 01
    base = dict(method='msa', refiner='none', backbone='efficientnet_lite0', seg_backbone='efficientnet_lite0')
    for bad, what in ((tmp_path/'Q_model_final.pth', "key 'conv0a.0.weight' is not a key"), (tmp_path/'nope.pth', 'not found')):
        with pytest.raises(ConfigError) as e: check_components({**base, 'method_args': {'scn_weights': str(bad)}}, where='voc12_msa.yaml')
        msg = str(e.value)
        assert len(msg.splitlines()) == 1 and 'voc12_msa.yaml' in msg and 'method_args.scn_weights' in msg and bad.name in msg and what in msg, msg
    sd = dict(imported); sd['pred.weight'] = torch.zeros(9, 8, 3, 3); torch.save(sd, tmp_path/'shape.pth')
    with pytest.raises(ConfigError, match=r"scn_weights=.*shape.pth: key 'pred.weight' has shape \(9, 8, 3, 3\)"):
        get_method('msa', scn_weights=str(tmp_path/'shape.pth'))
