"""SC-CAM through the stages: two rounds train, sub-category labels exist and are consistent, CAMs and pseudo-labels are valid,
resume keeps the clusters; and the released code's arithmetic behind each quirk flag (momentum, lr at the round cut, round 0)."""
from wsss_nb.core import load_config
import importlib
import numpy as np
import pytest
import torch
import wsss_nb.stages as S
from wsss_nb.cam import load_cams, get_method, MethodContext
from wsss_nb.core import load_json, ConfigError, DataError
from wsss_nb.data import get_dataset, load_mask, SegTransform
from wsss_nb.methods.sccam import SCCAMNet, load_round0_weights, extract_gap_features, subcategory_labels

ARGS = {'rounds': 2, 'n_sub': 3, 'kmeans_n_init': 2}
COMMON = dict(dataset='synthetic', device='cpu', progress=False)
TRAIN = dict(method='sccam', backbone='efficientnet_lite0', pretrained=None, batch_size=4, crop_size=48)

def _labels(data):
    ds = get_dataset('synthetic', data, 'train')
    return ds.ids, torch.stack([ds[i]['label'] for i in range(len(ds))]), ds.num_classes

def test_sccam_pipeline(smoke_data, tmp_path):
    out = tmp_path/'out'
    st = S.train_classifier(run='sc', out_root=out, data_root=smoke_data, method_args=ARGS, epochs=2, **TRAIN, **COMMON)
    hist = load_json(st.path/'history.json')
    assert len(hist) == 8 and all(np.isfinite([h['loss'], h['loss_parent'], h['loss_sub']]).all() for h in hist)
    assert all(h['loss_sub'] == 0 for h in hist[:4])               # round 0: parent loss only
    assert all(h['loss_sub'] > 0 for h in hist[4:])                # round 1: sub-category term on

    ids, labels, num_classes = _labels(smoke_data)
    wsss, model, meta = S.load_classifier(st.path/'model.pt')      # rebuilt as the CAM stage does
    assert int(model.sub_round) == 1 and model.sub_ids == ids
    assert torch.equal(model.sub_labels >= 0, labels > 0)          # a sub-cluster exactly for the present classes
    t = model.sub_targets_for(ids).view(len(ids), num_classes-1, 3)
    assert torch.equal(t.sum(-1), labels)                          # one active sub-category per present parent
    js = load_json(st.path/'subcategories'/'round_1.json')
    assert js['round'] == 1 and js['n_sub'] == 3 and sorted(js['assignments']) == sorted(ids)
    assert [c['n_clusters'] for c in js['classes']] == [min(3, int(n)) for n in labels.sum(0)]

    cams = S.make_cams(run='sc', out_root=out, data_root=smoke_data, scales=[1.0], **COMMON)
    assert cams.done
    for i, lab in zip(ids, labels):
        keys, cam = load_cams(cams.path/f'{i}.npz')
        assert keys.tolist() == torch.nonzero(lab).flatten().tolist()
        assert cam.shape == (len(keys), 64, 64) and cam.min() >= 0 and cam.max() <= 1 and np.isfinite(cam).all()

    ps = S.make_pseudo_labels(run='sc', out_root=out, data_root=smoke_data, bg_threshold=0.3, refiner='none', **COMMON)
    for i in ids:
        lab = load_mask(ps.path/'labels'/f'{i}.png')
        assert lab.shape == (64, 64) and set(np.unique(lab).tolist()) <= set(range(num_classes)) | {255}

def test_sccam_resume_keeps_clusters(smoke_data, tmp_path, monkeypatch):
    "Killed after round 1's first epoch: the resumed run reloads the table from the checkpoint instead of clustering again."
    out = tmp_path/'out'
    kw = dict(run='r', out_root=out, data_root=smoke_data, method_args=ARGS, epochs=3, max_images=8, **TRAIN, **COMMON)
    CLS = importlib.import_module('wsss_nb.stages.train_cls')   # the module (the package attribute is the function)
    real, steps = CLS._checkpoint, []
    def crash_after_round_1_epoch(*a, **k):
        real(*a, **k); steps.append(a[4])
        if a[4] == 4: raise KeyboardInterrupt('killed')             # 2 steps per epoch; rounds start at epochs 0 and 1
    monkeypatch.setattr(CLS, '_checkpoint', crash_after_round_1_epoch)
    with pytest.raises(KeyboardInterrupt): S.train_classifier(**kw)
    cls = out/'r'/'cls'
    table = torch.load(cls/'last.pt', weights_only=False)['model']['sub_labels']
    stamp = (cls/'subcategories'/'round_1.json').stat().st_mtime_ns
    monkeypatch.setattr(CLS, '_checkpoint', real)
    st = S.train_classifier(**kw)
    assert st.done and st.summary()['steps'] == 6
    assert (cls/'subcategories'/'round_1.json').stat().st_mtime_ns == stamp   # not clustered again
    assert torch.equal(torch.load(cls/'model.pt', weights_only=False)['model']['sub_labels'], table)

def test_sccam_resnet38_psa_freeze():
    "With ResNet-38, conv1a, b2-b2_2 and every BatchNorm are frozen (PSA), BN stays in eval mode, and the groups skip them."
    from wsss_nb.backbones import get_backbone
    m = get_method('sccam', restart_each_round=False)               # no CPU copy of the 105 M initial weights
    model = m.build_model(get_backbone('resnet38'), 20).train()
    assert not any(p.requires_grad for n in ('conv1a', 'b2', 'b2_1', 'b2_2') for p in getattr(model.backbone, n).parameters())
    assert all(p.requires_grad for p in model.backbone.b3.conv_branch2a.parameters())
    bns = [mod for mod in model.backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns and not any(b.training or b.weight.requires_grad for b in bns)
    groups = {g['name']: g for g in m.param_groups(model, 0.01)}
    assert sorted(groups) == ['backbone', 'head'] and groups['head']['lr'] == 0.1   # no trainable biases: x2 / x20 groups empty
    assert sum(p.numel() for g in groups.values() for p in g['params']) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    free = get_method('sccam', restart_each_round=False, psa_freeze=False).build_model(get_backbone('resnet38'), 20).train()
    assert all(p.requires_grad for p in free.parameters()) and free.backbone.bn7.training

# --- the released code's arithmetic (Juliachang/SC-CAM, built on jiwoon-ahn/psa), one test per quirk flag ---

class Tiny(torch.nn.Module):
    "One 3x3 conv with a bias: the backbone biases fill PSA's x2 group."
    def __init__(self):
        super().__init__(); self.conv = torch.nn.Conv2d(3, 4, 3, padding=1); self.out_channels, self.output_stride = 4, 1
    def forward(self, x): return torch.relu(self.conv(x))

# PSA's four groups (psa network/resnet38_cls.py get_parameter_groups + train_cls.py): lr multiplier, weight decay
PSA_GROUPS = {'backbone': (1, 5e-4), 'backbone_bias': (2, 0.), 'head': (10, 5e-4), 'head_bias': (20, 0.)}

@pytest.mark.parametrize('quirk,momentum', [(True, 5e-4), (False, 0.9)])
def test_psa_momentum_quirk_step(quirk, momentum):
    """PolyOptimizer (psa/SC-CAM tool/torchutils.py) calls SGD(params, lr, weight_decay): the decay fills SGD's momentum slot.
    Two SGD steps on a tiny net with all four groups filled, checked against the arithmetic written out by hand:
    d = g + wd*w, buffer b = d then m*b + d, w -= lr*mult*(1 - t/T)^0.9 * b, with m = 5e-4 (quirk) or 0.9."""
    torch.manual_seed(0)
    m = get_method('sccam', rounds=1, n_sub=2, psa_momentum_quirk=quirk)
    model = m.build_model(Tiny(), 2)
    model.sub_classifier = torch.nn.Conv2d(4, 4, 1, bias=True)      # a new layer with a bias fills the x20 group
    lr, T = 0.1, 10
    opt, sched = m.optimizer(model, lr, total_steps=T, steps_per_epoch=5)
    assert {g['name']: (g['lr'], g['weight_decay'], g['momentum']) for g in opt.param_groups} == \
           {n: (lr*k, wd, momentum) for n, (k, wd) in PSA_GROUPS.items()}
    ref, buf = {}, {}
    for g in opt.param_groups:
        for p in g['params']: ref[p] = (p.detach().clone(), *PSA_GROUPS[g['name']])
    for t in range(2):
        grads = {p: torch.randn_like(p) for p in ref}
        for p, gr in grads.items(): p.grad = gr.clone()
        opt.step(); sched.step()
        for p, (w, k, wd) in ref.items():
            d = grads[p] + wd*w
            buf[p] = d if t == 0 else momentum*buf[p] + d
            ref[p] = (w - lr*k*(1 - t/T)**0.9*buf[p], k, wd)
    for p, (w, _, _) in ref.items():
        torch.testing.assert_close(p.detach(), w, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[p]['momentum_buffer'], buf[p], rtol=1e-6, atol=1e-7)

def _lrs(m, lr, epochs, spe):
    "Base-group lr of every iteration of a stage of `epochs` epochs."
    opt, sched = m.optimizer(m.build_model(Tiny(), 2), lr, total_steps=epochs*spe, steps_per_epoch=spe)
    out = []
    for _ in range(epochs*spe): out.append(opt.param_groups[0]['lr']); opt.step(); sched.step()
    return np.array(out)

def test_round_poly_epochs_cut_like_the_original():
    """SC-CAM's train_cls.py: PolyOptimizer over max_epoches=61, one fresh run per round; script.sh keeps the epoch-30/40/50
    checkpoints (saved after 31/41/51 epochs). The cut leaves the lr at (1 - 31/61)^0.9 ≈ 0.53, then 0.37, 0.20 of its start."""
    spe, lr = 3, 0.01
    m = get_method('sccam', rounds=4, round_epochs=[0, 31, 41, 51], round_poly_epochs=[15, 61, 61, 61], round0_weights='res38_cls.pth')
    lrs = _lrs(m, lr, 123, spe)
    ref = [lr*(1 - g/(61*spe))**0.9 for L in (31, 41, 51) for g in range(L*spe)]   # PolyOptimizer's lr at its global step g
    np.testing.assert_allclose(lrs, ref, rtol=1e-12)
    ends = np.cumsum([31, 41, 51])*spe
    np.testing.assert_allclose(lrs[ends - 1]/lr, [0.53, 0.37, 0.20], atol=0.01)      # the last iteration of each round
    np.testing.assert_allclose(lrs[np.r_[0, ends[:-1]]], lr)                          # each round restarts at full lr
    fixed = _lrs(get_method('sccam', rounds=4, round_epochs=[0, 31, 41, 51], round0_weights='res38_cls.pth'), lr, 123, spe)
    assert (fixed[ends - 1]/lr < 0.02).all()                                          # default: each round decays to ~0
    with pytest.raises(ConfigError, match='shorter than a round'):
        get_method('sccam', rounds=2, round_epochs=[1, 5], round_poly_epochs=3)

def test_round0_recipe_lr_and_crop(smoke_data):
    "Round 0 trained with PSA's recipe: its own lr (all four groups scaled) and crop; round 1 returns to the stage's."
    m = get_method('sccam', rounds=2, n_sub=2, round_epochs=[2, 1], round_poly_epochs=[2, 61], round0_lr=0.1, round0_crop_size=40, kmeans_n_init=1)
    lrs = _lrs(m, 0.01, 3, 2)
    np.testing.assert_allclose(lrs, [0.1, 0.1*(1 - 1/4)**0.9, 0.1*(1 - 2/4)**0.9, 0.1*(1 - 3/4)**0.9, 0.01, 0.01*(1 - 1/122)**0.9], rtol=1e-12)
    ds = get_dataset('synthetic', smoke_data, 'train', transform=SegTransform(crop_size=48, scale_range=(0.9, 1.1), flip=True))
    loader = m.train_loader(ds, batch_size=4, num_workers=1, collate_fn=S.collate)     # a worker process: it sees the change too
    model = m.build_model(Tiny(), ds.num_classes - 1)
    ctx = MethodContext(dataset=get_dataset('synthetic', smoke_data, 'train'), epochs=3)
    sizes = []
    for ep in range(3):
        m.on_epoch_start(model, ep, ctx); sizes.append(next(iter(loader))['image'].shape[-2:])
    assert sizes == [(40, 40), (40, 40), (48, 48)] and int(model.sub_round) == 1

def _psa_file(donor, path, **changes):
    "Save `donor`'s backbone + parent head in PSA's res38_cls.pth layout (backbone keys, fc8.weight)."
    sd = {k.removeprefix('backbone.'): v for k, v in donor.state_dict().items() if k.startswith('backbone.')}
    sd['fc8.weight'] = donor.classifier.weight.detach().clone()
    sd.update(changes); sd = {k: v for k, v in sd.items() if v is not None}
    torch.save(sd, path)
    return path

@pytest.mark.parametrize('restart', [True, False])
def test_round0_weights_start_round_1(smoke_data, tmp_path, restart):
    "round0_weights: epoch 0 is round 1; the features that get clustered come from the loaded classifier."
    ds = get_dataset('synthetic', smoke_data, 'train')
    K = ds.num_classes - 1
    torch.manual_seed(0); donor = SCCAMNet(Tiny(), K, n_sub=2)
    f = _psa_file(donor, tmp_path/'res38_cls.pth')
    m = get_method('sccam', rounds=2, n_sub=2, round_epochs=[0, 2], round0_weights=str(f), restart_each_round=restart, kmeans_n_init=1)
    assert m.starts(2) == [0, 0]
    torch.manual_seed(1); model = m.build_model(Tiny(), K)
    m.on_epoch_start(model, 0, MethodContext(dataset=ds, epochs=2))
    assert m.round == 1 and int(model.sub_round) == 1
    _, feats, labels = extract_gap_features(donor, ds)
    assert torch.equal(model.sub_labels, subcategory_labels(feats, labels, 2, n_init=1)[0])
    want = model._initial if restart else {k: v for k, v in donor.state_dict().items()}
    for k in ('backbone.conv.weight', 'backbone.conv.bias', 'classifier.weight'): assert torch.equal(model.state_dict()[k], want[k])

def test_round0_weights_errors(tmp_path):
    "A missing or unfitting round-0 file fails with a DataError naming it; contradictory round options fail at config time."
    torch.manual_seed(0); donor = SCCAMNet(Tiny(), 3, n_sub=2)
    model = SCCAMNet(Tiny(), 3, n_sub=2)
    with pytest.raises(DataError, match='res38_cls.pth'): load_round0_weights(model, tmp_path/'res38_cls.pth')
    bad = {'classes.pth': dict(**{'fc8.weight': torch.zeros(20, 4, 1, 1)}), 'missing.pth': {'conv.bias': None},
           'extra.pth': {'fc8_200.weight': torch.zeros(6, 4, 1, 1)}}
    for name, change in bad.items():
        with pytest.raises(DataError, match=name): load_round0_weights(model, _psa_file(donor, tmp_path/name, **change))
    torch.save([1, 2], tmp_path/'list.pth')
    with pytest.raises(DataError, match='list.pth'): load_round0_weights(model, tmp_path/'list.pth')
    with pytest.raises(DataError, match=r'classifier.weight \(20, 4, 1, 1\) vs \(3, 4, 1, 1\)'): load_round0_weights(model, tmp_path/'classes.pth')
    m = get_method('sccam', rounds=2, round_epochs=[0, 1], round0_weights=str(tmp_path/'nowhere.pth'))
    with pytest.raises(DataError, match='nowhere.pth'): m.on_epoch_start(m.build_model(Tiny(), 3), 0, MethodContext(dataset=[], epochs=1))
    for kw, msg in [(dict(round_epochs=[1, 1], round0_weights='r.pth'), r'round_epochs\[0\] to 0'), (dict(round_epochs=[0, 1]), 'needs round0_weights'),
                    (dict(rounds=1, round0_weights='r.pth'), 'rounds >= 2'), (dict(round_poly_epochs=[61]), 'one entry per round')]:
        with pytest.raises(ConfigError, match=msg): get_method('sccam', **{'rounds': 2, **kw})

def test_sccam_stage_with_round0_weights(smoke_data, tmp_path):
    "The released recipe through the classifier stage: round 0 loaded from a PSA-layout file, quirk on, 61-epoch-style decay."
    from wsss_nb.backbones import get_backbone
    ds = get_dataset('synthetic', smoke_data, 'train')
    torch.manual_seed(0); donor = SCCAMNet(get_backbone('efficientnet_lite0', pretrained=None, output_stride=16), ds.num_classes - 1, n_sub=3)
    f = _psa_file(donor, tmp_path/'res38_cls.pth')
    args = dict(rounds=2, n_sub=3, kmeans_n_init=1, round0_weights=str(f), round_epochs=[0, 1], round_poly_epochs=[15, 4], psa_momentum_quirk=True)
    st = S.train_classifier(run='r0', out_root=tmp_path/'out', data_root=smoke_data, method_args=args, epochs=1, max_images=4, **TRAIN, **COMMON)
    hist = load_json(st.path/'history.json')
    assert len(hist) == 1 and all(h['loss_sub'] > 0 for h in hist)   # round 1 from the first step
    assert (st.path/'subcategories'/'round_1.json').is_file()

@pytest.mark.parametrize('name', ['voc12_sccam', 'voc12_sccam_fixed'])
def test_voc12_configs_schedule(name):
    "The shipped VOC configs: rounds fit cls_epochs; the faithful one loads round 0 and cuts 61-epoch decays, the fixed one trains round 0."
    import yaml
    from conftest import ROOT
    cfg = load_config((ROOT/'configs'/f'{name}.yaml'))
    m = get_method('sccam', **cfg['method_args'])
    starts = m.starts(cfg['cls_epochs'])
    lengths = np.diff(starts + [cfg['cls_epochs']]).tolist()
    assert lengths[1:] == [31, 41, 51]                                   # script.sh: checkpoints of epochs 30 / 40 / 50
    faithful = name == 'voc12_sccam'
    assert m.psa_momentum_quirk == faithful and cfg['refiner_args']['border_quirk'] == faithful
    assert lengths[0] == (0 if faithful else 15) and (m.round0_weights is not None) == faithful
    assert m.poly_epochs(lengths)[1:] == ([61]*3 if faithful else [31, 41, 51])
    # the same step size: lr / (1 - momentum) of the fixed config = lr of the faithful one (momentum ≈ 0)
    assert cfg['cls_lr'] == (0.01 if faithful else 0.001) and cfg['method_args']['round0_lr'] == (0.1 if faithful else 0.01)
