"Refiner 'rw' (AffinityNet + sparse random walk) through the stages API on the smoke dataset."
import numpy as np
import pytest
import torch
import wsss_nb.stages as S
from wsss_nb.stages.common import _without_masks
from wsss_nb.cam import load_cams
from wsss_nb.core import ConfigError
from wsss_nb.data import get_dataset, load_mask
from wsss_nb.refine import get_refiner
import wsss_nb.refine.rw as rw

COMMON = dict(run='r', dataset='synthetic', device='cpu', progress=False)
RW_ARGS = dict(backbone='efficientnet_lite0', pretrained=None, epochs=1, batch_size=8, crop_size=48, logt=6)

@pytest.fixture(scope='module')
def pseudo(smoke_data, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny convolutions: extra threads only wait on each other on a shared 2-core box
    out = tmp_path_factory.mktemp('rw')/'out'
    S.train_classifier(out_root=out, data_root=smoke_data, method='cam', backbone='efficientnet_lite0', pretrained=None,
                       epochs=1, batch_size=4, crop_size=48, **COMMON)
    S.make_cams(out_root=out, data_root=smoke_data, scales=[1.0], **COMMON)
    st = S.make_pseudo_labels(out_root=out, data_root=smoke_data, refiner='rw', refiner_args=RW_ARGS, **COMMON)
    yield out, smoke_data, st
    torch.set_num_threads(threads)

def test_rw_stage_labels(pseudo):
    out, data, st = pseudo
    assert st.done
    ds = get_dataset('synthetic', data, 'train')
    for i in ds.ids:
        lab = load_mask(st.path/'labels'/f'{i}.png')
        assert lab.shape == ds.load_raw(i)[0].shape[:2]
        assert set(np.unique(lab).tolist()) <= set(range(ds.num_classes))      # no 255: the walk labels every pixel
    ck = torch.load(st.path/'refiner'/'affinity.pt', weights_only=False)
    assert {'model', 'params', 'hash', 'history'} <= set(ck) and ck['params']['epochs'] == 1
    assert len(list((st.path/'refiner'/'aff_labels').glob('*.png'))) == len(ds.ids)

def test_second_fit_reuses_affinity_net(pseudo, monkeypatch):
    out, data, st = pseudo
    f = st.path/'refiner'/'affinity.pt'
    mtime = f.stat().st_mtime_ns
    def no_training(*a, **k): raise AssertionError('retrained although affinity.pt matches')
    monkeypatch.setattr(rw, '_train_affinity', no_training)
    ds = _without_masks(get_dataset('synthetic', data, 'train'))
    ref = get_refiner('rw', **{**RW_ARGS, 'beta': 4}).fit(ds, out/'r'/'cams', st.path/'refiner', device='cpu', progress=False)
    assert ref.fitted == 'loaded' and f.stat().st_mtime_ns == mtime
    img = ds.load_raw(ds.ids[0])[0]
    keys, cams = load_cams(out/'r'/'cams'/f'{ds.ids[0]}.npz')
    lab = ref(img, cams, keys)
    assert lab.dtype == np.uint8 and set(np.unique(lab).tolist()) <= {0} | set((keys + 1).tolist())
    # a training setting that changes the net does retrain
    with pytest.raises(AssertionError, match='retrained'):
        get_refiner('rw', **{**RW_ARGS, 'lr': 0.001}).fit(ds, out/'r'/'cams', st.path/'refiner', device='cpu', progress=False)

def test_sparse_equals_dense_on_random_input():
    g = torch.Generator().manual_seed(1)
    aff, sc = torch.rand(34, 6, 11, generator=g), torch.rand(4, 6, 11, generator=g)
    for quirk in (False, True):
        d = rw.dense_random_walk(aff, sc, 5, beta=8, logt=8, border_quirk=quirk)
        s = rw.sparse_random_walk(aff, sc, 5, beta=8, logt=8, border_quirk=quirk)
        assert torch.allclose(s, d, atol=1e-4)
    cams = torch.rand(2, 41, 85, generator=g).numpy()
    aff = torch.rand(34, 6, 11, generator=g)
    assert (rw.rw_labels(aff, cams, [3, 5], stride=8, dense=True) == rw.rw_labels(aff, cams, [3, 5], stride=8)).all()

def test_bad_refiner_args():
    with pytest.raises(ConfigError, match='Valid: backbone'): get_refiner('rw', epoch=3)
    with pytest.raises(ConfigError, match='radius'): get_refiner('rw', radius=1)
    with pytest.raises(ConfigError, match='fit'): get_refiner('rw')(np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8)), [0])
