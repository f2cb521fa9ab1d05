"""Fast paths give the files of the simple paths: batched CAM inference (images grouped by size, DataLoader workers,
torch.compile flag) vs the per-image loop, and pseudo-labelling in worker processes vs the serial loop."""
import importlib, json, shutil, warnings
import numpy as np
import pytest
import torch
import torch.nn as nn
import wsss_nb.stages as S
from wsss_nb.cam import CAMNet, WSSSMethod, infer_cams, load_cams, normalize_cams
from wsss_nb.data import load_mask

COMMON = dict(dataset='synthetic', device='cpu', progress=False)

class _Tiny(nn.Module):
    "Stride-4 conv net with BN and a bias, so padding would show in the maps."
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.out_channels = 16
    def forward(self, x): return self.body(x)

class _Items:
    "A dataset of images of different sizes."
    def __init__(self, sizes, K=3):
        g = torch.Generator().manual_seed(0)
        self.items = [dict(id=f'im{i}', image=torch.randn(3, h, w, generator=g), label=(torch.rand(K, generator=g) > .4).float())
                      for i, (h, w) in enumerate(sizes)]
        for it in self.items: it['label'][0] = 1
    def __len__(self): return len(self.items)
    def __getitem__(self, i): return self.items[i]

def test_batched_cams_equal_per_image_for_mixed_sizes(tmp_path):
    torch.manual_seed(0)
    net = CAMNet(_Tiny(), 3).eval()
    fn = lambda x: net.cam(x)
    ds = _Items([(32, 40), (40, 32), (32, 40), (24, 24), (32, 40), (40, 32), (33, 41)])
    assert [len(g) for g in S.group_by_size([ds[i] for i in range(5)])] == [3, 1, 1]
    S.batched_cams(fn, ds, range(len(ds)), tmp_path, scales=(1.0, 0.5, 1.5), flip=True, batch_size=4)
    for s in ds.items:
        keys = torch.nonzero(s['label']).flatten()
        ref = normalize_cams(infer_cams(fn, s['image'], scales=(1.0, 0.5, 1.5), flip=True)[keys])
        k, c = load_cams(tmp_path/f"{s['id']}.npz")
        np.testing.assert_array_equal(k, keys.numpy())
        np.testing.assert_allclose(c, ref.numpy(), atol=2e-3)        # float16 files
        assert c.shape[1:] == tuple(s['image'].shape[1:])

@pytest.fixture(scope='module')
def trained(smoke_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('fast')/'out'
    torch.set_num_threads(1)
    S.train_classifier(run='a', out_root=out, data_root=smoke_data, epochs=1, batch_size=8, crop_size=64, **COMMON)
    S.make_cams(run='a', out_root=out, data_root=smoke_data, scales=[1.0, 0.5], **COMMON)          # the per-image loop
    return out, smoke_data

def _copy_cls(out, run):
    shutil.copytree(out/'a'/'cls', out/run/'cls')

def _same_cams(d1, d2):
    files = sorted(p.name for p in d1.glob('*.npz'))
    assert len(files) == 16 and files == sorted(p.name for p in d2.glob('*.npz'))
    for n in files:
        (k1, c1), (k2, c2) = load_cams(d1/n), load_cams(d2/n)
        np.testing.assert_array_equal(k1, k2); np.testing.assert_allclose(c1, c2, atol=2e-3)

def test_cam_stage_batched_with_workers_matches_loop(trained):
    out, data = trained
    _copy_cls(out, 'b')
    st = S.make_cams(run='b', out_root=out, data_root=data, scales=[1.0, 0.5], batch_size=5, num_workers=2, **COMMON)
    _same_cams(out/'a'/'cams', st.path)
    s1, s2 = (json.loads((out/r/'cams'/'scores.json').read_text()) for r in ('a', 'b'))
    assert s1['best_threshold'] == s2['best_threshold'] and s1['best_miou'] == pytest.approx(s2['best_miou'], abs=1e-4)

def test_compile_flag_falls_back_to_eager(trained, monkeypatch):
    out, data = trained
    _copy_cls(out, 'c')
    def broken_compile(fn, **kw):
        def f(x): raise RuntimeError('no compiler here')
        return f
    monkeypatch.setattr(torch, 'compile', broken_compile)
    with pytest.warns(UserWarning, match='torch.compile failed'):
        st = S.make_cams(run='c', out_root=out, data_root=data, scales=[1.0, 0.5], batch_size=4, compile=True, **COMMON)
    _same_cams(out/'a'/'cams', st.path)

def test_method_with_own_infer_keeps_the_per_image_path(trained, monkeypatch):
    out, data = trained
    _copy_cls(out, 'd')
    cams_module = importlib.import_module('wsss_nb.stages.make_cams')   # the module, not the function of the same name
    calls, real = [], cams_module.load_classifier
    class OwnInfer(WSSSMethod):
        def infer(self, model, image, ctx):
            calls.append(tuple(image.shape)); return super().infer(model, image, ctx)
    def load(path, device='cpu'):
        _, model, meta = real(path, device); return OwnInfer(), model, meta
    monkeypatch.setattr(cams_module, 'load_classifier', load)
    st = S.make_cams(run='d', out_root=out, data_root=data, scales=[1.0, 0.5], batch_size=8, **COMMON)
    assert len(calls) == 16 and all(c == (3, 64, 64) for c in calls)     # one call per image, unbatched
    _same_cams(out/'a'/'cams', st.path)

def test_pseudo_labels_with_workers_match_serial_and_resume(trained):
    out, data = trained
    kw = dict(out_root=out, data_root=data, bg_threshold=0.3, dataset='synthetic', progress=False)
    serial = S.make_pseudo_labels(run='a', **kw)
    _copy_cls(out, 'e'); shutil.copytree(out/'a'/'cams', out/'e'/'cams')
    par = S.make_pseudo_labels(run='e', num_workers=2, **kw)
    for sub in ('before', 'labels'):
        pngs = sorted((serial.path/sub).glob('*.png'))
        assert len(pngs) == 16
        for p in pngs: np.testing.assert_array_equal(load_mask(p), load_mask(par.path/sub/p.name))
    assert json.loads((serial.path/'scores.json').read_text()) == json.loads((par.path/'scores.json').read_text())
    # resume with workers: delete the done marker and 3 labels; only those 3 are written again
    (par.path/'_done.json').unlink()
    labels = sorted((par.path/'labels').glob('*.png'))
    for p in labels[:3]: p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in labels[3:]}
    again = S.make_pseudo_labels(run='e', num_workers=2, **kw)
    assert again.done and len(list((par.path/'labels').glob('*.png'))) == 16
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert again.summary()['miou_after'] == serial.summary()['miou_after']
