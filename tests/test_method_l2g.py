"L2G and the thesis variant l2g_csa through the stages: two-network training, CDA epochs, global-network CAMs, constant-background labels."
from wsss_nb.core import load_config
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

@pytest.mark.parametrize("name", ["voc12_l2g", "demo_l2g", "voc12_l2g_csa", "demo_l2g_csa", "voc12_l2g_fixed", "voc12_l2g_csa_fixed"])
def test_l2g_configs(name):
    from wsss_nb.cli import valid_keys
    cfg = load_config((ROOT/'configs'/f'{name}.yaml'))
    assert not set(cfg) - valid_keys(), set(cfg) - valid_keys()
    m = get_method(cfg['method'], **cfg['method_args'])       # every method_arg is valid
    from wsss_nb.data import SegTransform                     # the stage keys suit the method's own view (if it asks for one)
    m.view_transform(SegTransform(crop_size=cfg['cls_crop_size'], scale_range=(cfg.get('cls_scale_min', 0.7), cfg.get('cls_scale_max', 1.3)),
                                  flip=cfg.get('cls_flip', True), jitter=cfg.get('cls_jitter', 0.3)))

QUIRKS = dict(global_cls_loss=False, roi_aligned=False, crop_swap=True)                  # value in the released code
CSA_QUIRKS = dict(QUIRKS, train_attention=False, cda_label_fix=False)
RELEASED = dict(freeze_blocks=['conv1a', 'b2', 'b2_1', 'b2_2'], view_short_side=512, hue=0.1, lr_decay_epoch=5, kd_weight=10.0, n_local=6)

@pytest.mark.parametrize('name,quirks', [('voc12_l2g', QUIRKS), ('voc12_l2g_csa', CSA_QUIRKS)])
def test_faithful_and_fixed_configs(name, quirks):
    "Faithful = every quirk on, the released data pipeline; fixed = the same file with exactly the quirk flags flipped."
    faithful, fixed = (load_config((ROOT/'configs'/f'{n}.yaml')) for n in (name, f'{name}_fixed'))
    for k, v in {**quirks, **RELEASED}.items(): assert faithful['method_args'][k] == v, (name, k)
    assert (faithful['cls_flip'], faithful['cls_jitter'], faithful['cls_scale_min'], faithful['cls_scale_max']) == (False, 0.3, 1.0, 1.0)
    for k, v in quirks.items(): assert fixed['method_args'][k] == (not v), (name, k)
    changed = {k for k in faithful['method_args'] if faithful['method_args'][k] != fixed['method_args'][k]}
    assert changed == set(quirks), changed
    assert {k for k in faithful if k not in ('run', 'method_args') and faithful[k] != fixed.get(k)} == set()
    text = (ROOT/'configs'/f'{name}_fixed.yaml').read_text().splitlines()
    assert all('# FIX:' in next(l for l in text if l.strip().startswith(f'{k}:')) for k in quirks)   # each change says why
    if name.endswith('csa'): assert faithful['method_args']['cda_shrink_only'] is True

# ---- every flag that reproduces the released code, checked against the original's arithmetic on a tiny case ----
import torch
import torch.nn as nn
from wsss_nb.data import SegTransform, normalize
from wsss_nb.methods.l2g import (L2GNet, l2g_losses, align_global, local_target, l2g_view_box, L2GViewTransform,
                                 ForegroundBank, cda_paste, cda_paste_size, _crop_pad, _resize_short)

class _Toy(nn.Module):
    "Three-stage toy backbone (stride 4) with `forward_features` taps, as the notebook's TinyFeats."
    def __init__(self, w=8):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2))
        self.c2 = nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.c3 = nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU())
        self.out_channels, self.output_stride = w, 4
    def forward_features(self, x):
        a = self.c1(x); b = self.c2(a); return {'c1': a, 'c2': b, 'c3': self.c3(b)}
    def forward(self, x): return self.forward_features(x)['c3']

def _batch(K=2, B=2, S=32):
    torch.manual_seed(0)
    return torch.randn(B, 3, S, S), torch.tensor([[1., 0.], [1., 1.]])[:B, :K], torch.rand(B, S, S)

def test_global_cls_loss_flag():
    "train_l2g_sal_voc.py: loss_val = loss_kd + loss_cls_local (the global loss is computed, printed, never added)."
    torch.manual_seed(0); net = L2GNet(_Toy(), 2); x, y, s = _batch()
    off = l2g_losses(net, x, y, s, n_local=4, local_frac=0.75, global_cls_loss=False, rng=np.random.default_rng(0))
    on = l2g_losses(net, x, y, s, n_local=4, local_frac=0.75, global_cls_loss=True, rng=np.random.default_rng(0))
    assert abs(float(off['loss'].detach()) - float(off['kd'] + off['local'])) < 1e-6
    assert abs(float(on['loss'].detach()) - float(on['kd'] + on['local'] + on['global_cls'])) < 1e-6
    assert float(on['global_cls']) > 0

def test_roi_aligned_flag():
    "ops.roi_align(feat, boxes, (h, w), 1/8) has aligned=False: every bin samples half a cell right/down of the crop's cell."
    yy, xx = torch.meshgrid(torch.arange(8.), torch.arange(8.), indexing='ij')
    coords = torch.stack([yy, xx])[None]                       # each cell holds its own (row, col)
    box = np.array([[[16, 8, 48, 40]]])                        # x1=16, y1=8 px at stride 8: cells (1, 2) on
    exact = align_global(coords, box, (4, 4), 8, aligned=True)[0]
    orig = align_global(coords, box, (4, 4), 8, aligned=False)[0]
    i = torch.arange(4.)
    assert torch.allclose(exact[0], (1 + i)[:, None].expand(4, 4)) and torch.allclose(exact[1], (2 + i)[None].expand(4, 4))
    assert torch.allclose(orig, exact + 0.5, atol=1e-6)        # the released code's half-cell shift

def test_train_attention_flag():
    "Thesis models/resnet38.py get_parameter_groups collects Conv2d only: the nn.Linear SE/DRS weights never move."
    from wsss_nb.cam import get_method
    for train in (False, True):
        m = get_method('l2g_csa', train_attention=train, local_frac=0.75, n_local=4)
        torch.manual_seed(0); net = m.build_model(_Toy(), 2)
        opt, _ = m.optimizer(net, 0.1, total_steps=1)
        before = [p.detach().clone() for p in net.global_net.attn.parameters()]
        x, y, s = _batch()
        m.loss(net, {'image': x, 'label': y, 'saliency': s})['loss'].backward(); opt.step()
        moved = [not torch.equal(a, p) for a, p in zip(before, net.global_net.attn.parameters())]
        assert any(moved) == train, (train, moved)

def test_freeze_blocks():
    "Released resnet38.py: not_training = [conv1a, b2, b2_1, b2_2]; their weights get no gradient and join no group."
    net = L2GNet(_Toy(), 2, freeze_blocks=('c1', 'c2'))
    grouped = {id(p) for g in net.param_groups(1e-3) for p in g['params']}
    for br in (net.global_net, net.local_net):
        for blk in (br.backbone.c1, br.backbone.c2):
            assert all(not p.requires_grad and id(p) not in grouped for p in blk.parameters())
        assert all(p.requires_grad and id(p) in grouped for p in br.backbone.c3.parameters())

def test_crop_swap_box_on_non_square_image():
    "imutils.get_random_crop_box receives PIL's (w, h) and unpacks (h, w): offsets come from the wrong axis."
    rng = np.random.default_rng(0)
    q = {l2g_view_box((3, 5), 2, rng, swap=True) for _ in range(400)}   # H=3, W=5, 2x2 view
    f = {l2g_view_box((3, 5), 2, rng, swap=False) for _ in range(400)}
    assert {b[1] for b in q} == {0, 1, 2, 3} and {b[0] for b in q} == {0, 1}   # top in 0..W-2, left in 0..H-2
    assert {b[1] for b in f} == {0, 1} and {b[0] for b in f} == {0, 1, 2, 3}
    img = np.arange(1, 16, dtype=np.uint8).reshape(3, 5)
    assert _crop_pad(img, (1, 2, 3, 4), 0).tolist() == [[12, 13], [0, 0]]   # PIL crop: black below the image
    # VOC 500x375 -> ResizeShort(512) = 683x512 -> 448 view: the top goes up to 235, so 13.9 % of a view is black
    assert _resize_short(np.zeros((375, 500), np.uint8), 512, 'mask').shape == (512, 683)
    assert _resize_short(np.zeros((500, 375), np.uint8), 512, 'mask').shape == (683, 512)
    tops = np.arange(683 - 448 + 1)
    assert abs(np.maximum(0, tops + 448 - 512).mean()/448 - 0.139) < 5e-4
    boxes = [l2g_view_box((512, 683), 448, rng, swap=True) for _ in range(300)]
    assert max(b[2] for b in boxes) == 512 and max(b[3] for b in boxes) > 600   # columns >= 512 never seen

def test_view_transform_installed_by_train_loader():
    "view_short_side / crop_swap / hue replace the stage transform; the stage's crop, flip and jitter strength carry over."
    from wsss_nb.cam import get_method
    from wsss_nb.stages.common import _without_masks
    class _Raw(torch.utils.data.Dataset):
        transform = SegTransform(crop_size=8, flip=False, jitter=0.3)
        def __len__(self): return 4
        def __getitem__(self, i):
            rng = np.random.default_rng(i)
            s = self.transform(dict(image=rng.integers(0, 255, (6, 10, 3), dtype=np.uint8), saliency=rng.random((6, 10)).astype(np.float32)))
            return dict(image=normalize(s['image']), saliency=torch.from_numpy(s['saliency'].copy()), label=torch.tensor([1., 0.]))
    ds = _without_masks(_Raw())
    m = get_method('l2g', view_short_side=8, crop_swap=True, hue=0.1)
    batch = next(iter(m.train_loader(ds, 4)))
    t = ds.ds.transform
    assert isinstance(t, L2GViewTransform) and (t.crop_size, t.short_side, t.swap, t.flip, t.jitter) == (8, 8, True, False, (0.3, 0.3, 0.3, 0.1))
    assert batch['image'].shape == (4, 3, 8, 8)
    assert (batch['saliency'][:, -1] == 0).any()                 # resized to 8x13, top up to 5 of 8 rows: padding occurs
    ds2 = _without_masks(_Raw()); ds2.ds.transform = SegTransform(crop_size=8, scale_range=(0.7, 1.3))
    with pytest.raises(ValueError, match='cls_scale_min'): get_method('l2g', crop_swap=True).train_loader(ds2, 2)
    ds3 = _without_masks(_Raw()); get_method('l2g').train_loader(ds3, 2)
    assert isinstance(ds3.ds.transform, SegTransform)            # no option set: the stage's transform stays

def test_paste_scale():
    "utils/imutils.py data_aug_plus: cap the height, then the width, at 0.7 of the image; x U[0.8, 1.2); int()."
    r = np.random.default_rng(5).uniform(0.8, 1.2)
    size = lambda inst, shrink: cda_paste_size(inst, (100, 100), np.random.default_rng(5), shrink_only=shrink)
    assert size((10, 20), True) == (int(10*r), int(20*r))          # small: not enlarged
    assert size((90, 45), True) == (int(70*r), int(35*r))          # too tall: height capped at 70
    assert size((50, 200), True) == (int(17.5*r), int(70*r))       # too wide: width capped at 70, aspect kept
    assert size((10, 20), False) == (round(35*r), round(70*r))     # ours ('fit'): enlarged to fit 0.7 of the view
    bank = ForegroundBank(3); bank.add(2, np.full((10, 10, 3), 200, np.uint8), np.ones((10, 10), bool), np.ones((10, 10)))
    img, allsal, lab = torch.zeros(3, 40, 40), torch.ones(40, 40), torch.tensor([1., 0., 0.])   # overlap always 1: 10 tries
    shr = cda_paste(img, allsal, lab, bank, np.random.default_rng(0), shrink_only=True)[3]['sizes']
    fit = cda_paste(img, allsal, lab, bank, np.random.default_rng(0), shrink_only=False)[3]['sizes']
    assert len(shr) == len(fit) == 10
    assert len(set(shr)) > 1 and all(8 <= h <= 12 and h == w for h, w in shr)   # redrawn at each try, 10 px x [0.8, 1.2)
    assert len(set(fit)) == 1 and 22 <= fit[0][0] <= 34                         # drawn once, 28 px x [0.8, 1.2]

def test_cda_label_quirk_reaches_only_G():
    "Thesis LoadData: the original's label is the mutated array (global label), its local labels were copied before."
    from wsss_nb.cam import get_method
    bank = ForegroundBank(3); bank.add(2, np.full((8, 8, 3), 250, np.uint8), np.ones((8, 8), bool), np.ones((8, 8)))
    imgs, sal = torch.zeros(2, 3, 32, 32), torch.zeros(2, 32, 32)
    y = torch.tensor([[1., 0., 0.], [0., 1., 0.]])
    for fix in (True, False):
        m = get_method('l2g_csa', cda_label_fix=fix, cda_start_epoch=0); m.bank, m._cda_on = bank, True
        _, lab, _, g = m._augment(None, imgs, y, sal)
        assert lab[:2].tolist() == y.tolist()                              # crop labels of the originals: unchanged
        assert lab[2:, 2].tolist() == [1., 1.] and g[2:, 2].tolist() == [1., 1.]
        assert g[:2, 2].tolist() == ([0., 0.] if fix else [1., 1.])
    # G's absent-class zeroing is what the global label drives: class 2 is kept in G only when the label says so
    A = torch.zeros(1, 4, 1, 2); A[0, 0] = torch.tensor([1., 2.]); A[0, 2] = torch.tensor([6., 5.])   # K=3 + background
    S = torch.ones(1, 1, 2)
    assert local_target(A, torch.tensor([[1., 0., 0.]]), S)[0, :, 0].tolist() == [[1., 1.], [0., 0.], [0., 0.], [0., 0.]]
    assert local_target(A, torch.tensor([[1., 0., 1.]]), S)[0, :, 0].tolist() == [[0., 1.], [0., 0.], [1., 0.], [0., 0.]]

def test_bank_at_view_scale():
    "With view_short_side the bank stores instances resized like their image (ResizeShort), so pasted sizes match the views."
    from wsss_nb.methods.l2g import build_foreground_bank
    class _One:
        def __len__(self): return 1
        def __getitem__(self, i):
            sal = torch.zeros(16, 24); sal[:8] = 1.
            return dict(image=torch.zeros(3, 16, 24), raw=np.full((16, 24, 3), 7, np.uint8), label=torch.tensor([1., 0.]), saliency=sal)
    def cam(x): c = torch.zeros(1, 2, 4, 6); c[0, 0, :, :3] = 1.; return c    # class 0: the left half
    plain = build_foreground_bank(cam, _One(), 2).items[0][0]
    scaled = build_foreground_bank(cam, _One(), 2, short_side=32).items[0][0]   # 16x24 -> 32x48: x2
    assert plain[1].shape == (8, 12) and scaled[1].shape == (16, 24) and scaled[0].shape == (16, 24, 3)
    assert scaled[1].all() and (scaled[2] == 255).all()

def test_return_parts_are_what_l_kd_compares():
    "`return_parts` (for the lesson's figure) leaves the losses alone, and its parts reproduce L_kd exactly."
    torch.manual_seed(0); net = L2GNet(_Toy(), 2).eval(); x, y, s = _batch()
    plain = l2g_losses(net, x, y, s, n_local=4, local_frac=0.75, rng=np.random.default_rng(0))
    out = l2g_losses(net, x, y, s, n_local=4, local_frac=0.75, rng=np.random.default_rng(0), return_parts=True)
    assert 'parts' not in plain and all(abs(float(plain[k].detach()) - float(out[k].detach())) < 1e-6 for k in plain)
    P = out['parts']
    assert P['boxes'].shape == (2, 4, 4) and P['crops'].shape == (8, 3, 24, 24) and P['sal_crops'].shape == (8, 24, 24)
    assert P['target'].shape == P['global_in_boxes'].shape == P['local_maps'].shape == (8, 3, 6, 6)
    assert torch.allclose(P['global_in_boxes'].sum(1), torch.ones(8, 6, 6), atol=1e-5)   # a softmax over the K+1 channels
    kd = 10*torch.nn.functional.mse_loss(P['global_in_boxes'], P['target'])
    assert abs(float(kd) - float(out['kd'])) < 1e-5
