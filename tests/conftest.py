"Shared fixtures: a smoke-sized synthetic dataset and a scratch output root."
import os
from pathlib import Path
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT/'nbs'/'pipelines'
SHARED = ROOT.parent/'shared'/'data'          # the project's shared data beside the checkout (optional: tests skip without it)
PAIRS = ROOT/'nbs'/'data'/'voc12-pairs9'      # the 9 real VOC pairs the lessons read, in the repository

# Tests run on CPU with few threads, like CI (2 cores).
os.environ.setdefault('OMP_NUM_THREADS', '2')

@pytest.fixture(scope='session')
def smoke_data(tmp_path_factory):
    "A tiny synthetic dataset (16 train / 6 val images of 64 px), generated once per session."
    from wsss_nb.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp('data')/'synthetic', n_train=16, n_val=6, size=64, seed=0)

def assert_cam_files(cam_dir, ds):
    "Every image of `ds` has a CAM file whose keys are its image-level classes, full-size maps, finite, in [0,1]."
    import numpy as np
    from wsss_nb.cam import load_cams
    for i in ds.ids:
        keys, cam = load_cams(Path(cam_dir)/f'{i}.npz')
        np.testing.assert_array_equal(keys, np.flatnonzero(ds.labels[i]))
        assert cam.shape == (len(keys), *ds.load_raw(i)[0].shape[:2])
        assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1

def assert_label_files(label_dir, ds):
    "Every image of `ds` has an image-sized label PNG with values in {0..num_classes-1, 255}."
    import numpy as np
    from wsss_nb.data import load_mask
    for i in ds.ids:
        lab = load_mask(Path(label_dir)/f'{i}.png')
        assert lab.shape == ds.load_raw(i)[0].shape[:2]
        assert set(np.unique(lab)) <= set(range(ds.num_classes)) | {255}

def config_lines(path)->dict:
    "{dotted key: (value text, comment)} of a config's non-comment lines (one level of nesting)."
    out, parent = {}, None
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith('#'): continue
        body, _, comment = line.partition('#')
        key, _, val = body.partition(':')
        if line.startswith(' '): key = f'{parent}.{key.strip()}'
        else: parent = key.strip(); key = key.strip()
        out[key] = (val.strip(), comment.strip())
    return out

def faithful_and_fixed(method:str)->tuple:
    "(faithful, fixed, changed keys) of configs/voc12_<method>.yaml and its _fixed twin, after the checks both pairs share:\n    every faithful line is commented, both have the same keys, and exactly the changed keys (but `run`) say FIX."
    faithful, own = config_lines(ROOT/'configs'/f'voc12_{method}.yaml'), config_lines(ROOT/'configs'/f'voc12_{method}_fixed.yaml')
    assert all(c for _, c in faithful.values()), [k for k, (_, c) in faithful.items() if not c]
    assert own.pop('base')[0] == f'voc12_{method}.yaml'   # the fixed config holds only `base:` and its fixes
    unset = set(yaml.safe_load(own.pop('unset')[0]) if 'unset' in own else [])
    fixed = {k: v for k, v in {**faithful, **own}.items() if k not in unset}
    assert set(faithful) - unset == set(fixed)
    changed = {k for k in faithful if faithful[k][0] != fixed[k][0]}
    assert {k for k, (_, c) in fixed.items() if c.startswith('FIX')} == changed - {'run'}
    return faithful, fixed, changed

# ---- the fast loop: `pytest -m "not slow"` starts no process (issue 24, point 8) ----
# A test that starts a Jupyter kernel, a Python subprocess, torchrun, a shell script or a browser is marked
# `@pytest.mark.slow`; one that is not fails at teardown naming the command. DataLoader workers (os.fork) and helper
# programs libraries run for themselves (fc-list, ldconfig, ip) are allowed.
import sys
_SPAWNERS = ('python', 'ipykernel', 'jupyter', 'papermill', 'torchrun', 'chromium', 'chrome', 'bash', 'sh', 'nbdev', 'wsss-nb')
_running, _started = [None], {}

def _audit(event, args):
    if event != 'subprocess.Popen' or _running[0] is None: return
    argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
    exe = os.path.basename(str(args[0] or (argv[0] if argv else '')))
    if exe.startswith(_SPAWNERS): _started.setdefault(_running[0], []).append(' '.join(map(str, argv))[:120])
sys.addaudithook(_audit)

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running[0] = None if item.get_closest_marker('slow') else item.nodeid
    try: yield
    finally: _running[0] = None

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if call.when == 'teardown' and _started.get(item.nodeid) and rep.passed:
        rep.outcome = 'failed'
        rep.longrepr = (f'{item.nodeid} starts a process but is not marked slow: add @pytest.mark.slow '
                        f'(started: {_started.pop(item.nodeid)[0]})')
