"The PyTorch dense CRF (`wsss_nb.refine.crf_torch`): agreement with pydensecrf, the refiner registry, batching."
import inspect
import numpy as np
import pytest
import torch
from PIL import Image
from conftest import PAIRS
from wsss_nb.refine import refiners, get_refiner
from wsss_nb.refine.crf import dense_crf, CRF_PSA, CRF_DEEPLAB, CRF_MCIS
from wsss_nb.refine.crf_torch import (CRFTorchRefiner, dense_crf_torch, crf_torch_labels, crf_torch_labels_batch,
                                      fake_cams, compare_refiners)
from wsss_nb.data import get_dataset

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Small CRFs: on the shared 2-core CI machine a second torch thread only spin-waits (10x the CPU time, measured)."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _keys(gt): return np.array(sorted(set(np.unique(gt).tolist()) - {0, 255}), np.int64) - 1

def _voc_samples(half=True):
    out = []
    for f in sorted((PAIRS/'JPEGImages').glob('*.jpg')):
        im, gt = Image.open(f).convert('RGB'), Image.open(PAIRS/'SegmentationClass'/f'{f.stem}.png')
        if half:
            size = (gt.width // 2, gt.height // 2)
            im, gt = im.resize(size, Image.BILINEAR), gt.resize(size, Image.NEAREST)
        im, gt = np.array(im), np.array(gt)
        out.append((im, gt, fake_cams(gt, _keys(gt)), _keys(gt)))
    return out

def _pair(preset):
    return {'crf': get_refiner('crf', preset=preset), 'crf_torch': get_refiner('crf_torch', preset=preset, device='cpu')}

@pytest.mark.parametrize('preset', ['psa', 'deeplab'])
def test_agreement_voc_pairs9(preset):
    "≥ 97 % of pixels equal to pydensecrf's labels and mIoU within 0.5 points, on the 9 real VOC photos (half size)."
    res = compare_refiners(_voc_samples(), _pair(preset), bg_threshold=0.3)
    assert res['crf_torch']['agreement'] >= 0.97, res
    assert abs(res['crf_torch']['miou'] - res['crf']['miou']) <= 0.5, res

@pytest.fixture(scope='module')
def syn_samples(smoke_data):
    ds = get_dataset('synthetic', smoke_data, 'train')
    out = []
    for id_ in ds.ids:
        im, gt = ds.load_raw(id_)
        out.append((im, gt, fake_cams(gt, _keys(gt), stride=8, blur=3), _keys(gt)))
    return out, ds.num_classes

def test_agreement_synthetic(syn_samples):
    "The same targets on the 16 synthetic training images (64 px)."
    samples, num_classes = syn_samples
    for preset in ('psa', 'deeplab'):
        res = compare_refiners(samples, _pair(preset), bg_threshold=0.3, num_classes=num_classes)
        assert res['crf_torch']['agreement'] >= 0.97, (preset, res)
        assert abs(res['crf_torch']['miou'] - res['crf']['miou']) <= 0.5, (preset, res)

@pytest.mark.parametrize('preset', [CRF_PSA, CRF_DEEPLAB, CRF_MCIS], ids=['psa', 'deeplab', 'mcis'])
def test_marginals_match_pydensecrf(preset):
    "Same lattice, same constants: the marginals themselves agree, here with 21 labels on a noisy image."
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    img[:, 16:] //= 3                                                     # an edge
    probs = rng.dirichlet(np.ones(21), (24, 32)).transpose(2, 0, 1).astype(np.float32)
    q = dense_crf_torch(img, probs, **preset).numpy()
    ref = dense_crf(img, probs, **preset)
    assert q.shape == (21, 24, 32)
    np.testing.assert_allclose(q, ref, atol=2e-3)
    assert (q.argmax(0) == ref.argmax(0)).mean() >= 0.99

def test_registry_and_signature():
    assert 'crf_torch' in refiners.names()
    ref = get_refiner('crf_torch')
    assert isinstance(ref, CRFTorchRefiner) and ref.needs_saliency is False
    assert ref.params == CRF_PSA                                          # the same default preset as 'crf'
    params = list(inspect.signature(ref.__call__).parameters)
    assert params[:5] == ['image', 'cams', 'keys', 'bg_threshold', 'saliency']
    assert inspect.signature(ref.__call__).parameters['saliency'].default is None
    assert get_refiner('crf_torch', preset='deeplab').params == CRF_DEEPLAB
    assert get_refiner('crf_torch', preset='deeplab', n_iters=3).params['n_iters'] == 3
    with pytest.raises(ValueError, match='n_iter'): get_refiner('crf_torch', n_iter=3)
    with pytest.raises(ValueError, match='Valid presets'): get_refiner('crf_torch', preset='nope')

def test_batch_equals_single(syn_samples):
    "One batched call (images with 1..n classes, padded with `valid`) = one call per image, labels and marginals."
    samples, _ = syn_samples
    samples = samples[:6]
    ref = get_refiner('crf_torch', device='cpu')
    batched = ref.batch([s[0] for s in samples], [s[2] for s in samples], [s[3] for s in samples], 0.3)
    single = [ref(im, cams, k, 0.3) for im, gt, cams, k in samples]
    assert len({len(s[3]) for s in samples}) > 1, "want images with different class counts"
    for b, s in zip(batched, single): np.testing.assert_array_equal(b, s)
    imgs = np.stack([s[0] for s in samples[:3]])
    probs = np.random.default_rng(1).uniform(0, 1, (3, 4) + imgs.shape[1:3]).astype(np.float32)
    qb = dense_crf_torch(torch.from_numpy(imgs), torch.from_numpy(probs), **CRF_DEEPLAB)
    for i in range(3): torch.testing.assert_close(qb[i], dense_crf_torch(imgs[i], probs[i], **CRF_DEEPLAB), atol=1e-5, rtol=0)

def test_labels_helpers_and_errors(syn_samples):
    samples, _ = syn_samples
    im, gt, cams, k = samples[0]
    assert crf_torch_labels(im, cams, k, bg_threshold=0.3, device='cpu').dtype == np.uint8
    assert (crf_torch_labels(im, cams[:0], k[:0], bg_threshold=0.3) == 0).all()
    with pytest.raises(ValueError, match='exactly one'): crf_torch_labels(im, cams, k)
    with pytest.raises(ValueError, match='same length'): crf_torch_labels_batch([im], [cams, cams], [k], 0.3)
    with pytest.raises(ValueError, match='uint8'): dense_crf_torch(im.astype(np.float32), np.ones((2,) + gt.shape, np.float32))

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(syn_samples):
    samples, _ = syn_samples
    im, gt, cams, k = samples[0]
    probs = np.concatenate([np.full((1,) + gt.shape, 0.3, np.float32), cams])
    q_cpu = dense_crf_torch(im, probs, **CRF_PSA)
    q_gpu = dense_crf_torch(torch.from_numpy(im).cuda(), torch.from_numpy(probs).cuda(), **CRF_PSA)
    assert q_gpu.device.type == 'cuda'
    torch.testing.assert_close(q_gpu.cpu(), q_cpu, atol=1e-4, rtol=0)
