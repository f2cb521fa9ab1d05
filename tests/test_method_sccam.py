"SC-CAM through the stages: two rounds train, sub-category labels exist and are consistent, CAMs and pseudo-labels are valid, resume keeps the clusters."
import numpy as np
import pytest
import torch
import wsss_nb.stages as S
from wsss_nb.cam import load_cams
from wsss_nb.core import load_json
from wsss_nb.data import get_dataset, load_mask

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
    real, steps = S._checkpoint, []
    def crash_after_round_1_epoch(*a, **k):
        real(*a, **k); steps.append(a[4])
        if a[4] == 4: raise KeyboardInterrupt('killed')             # 2 steps per epoch; rounds start at epochs 0 and 1
    monkeypatch.setattr(S, '_checkpoint', crash_after_round_1_epoch)
    with pytest.raises(KeyboardInterrupt): S.train_classifier(**kw)
    cls = out/'r'/'cls'
    table = torch.load(cls/'last.pt', weights_only=False)['model']['sub_labels']
    stamp = (cls/'subcategories'/'round_1.json').stat().st_mtime_ns
    monkeypatch.setattr(S, '_checkpoint', real)
    st = S.train_classifier(**kw)
    assert st.done and st.summary()['steps'] == 6
    assert (cls/'subcategories'/'round_1.json').stat().st_mtime_ns == stamp   # not clustered again
    assert torch.equal(torch.load(cls/'model.pt', weights_only=False)['model']['sub_labels'], table)

def test_sccam_resnet38_psa_freeze():
    "With ResNet-38, conv1a, b2-b2_2 and every BatchNorm are frozen (PSA), BN stays in eval mode, and the groups skip them."
    from wsss_nb.backbones import get_backbone
    from wsss_nb.cam import get_method
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
