"A stage killed mid-way resumes cleanly: completed per-image files are kept, checkpoints resume training."
import importlib, threading
import pytest
import wsss_nb.stages as S
from wsss_nb.core import load_json

# the stage modules (`wsss_nb.stages.make_cams` the attribute is the function of the same name)
CAMS, CLS = (importlib.import_module(f'wsss_nb.stages.{m}') for m in ('make_cams', 'train_cls'))

COMMON = dict(run='r', dataset='synthetic', device='cpu', progress=False)

@pytest.fixture()
def trained(smoke_data, tmp_path):
    out = tmp_path/'out'
    S.train_classifier(out_root=out, data_root=smoke_data, epochs=1, batch_size=8, crop_size=64, **COMMON)
    return out, smoke_data

def test_cam_stage_resumes_after_a_crash(trained, monkeypatch):
    out, data = trained
    real, calls, lock = CAMS.save_cams, [], threading.Lock()
    def crash_after_three(path, cams, keys):     # CAM files are written by the stage's writer threads
        with lock:
            if len(calls) == 3: raise KeyboardInterrupt('killed')
            calls.append(path)
        real(path, cams, keys)
    monkeypatch.setattr(CAMS, 'save_cams', crash_after_three)
    with pytest.raises(KeyboardInterrupt): S.make_cams(out_root=out, data_root=data, scales=[1.0], **COMMON)
    stage = out/'r'/'cams'
    written = {p: p.stat().st_mtime_ns for p in stage.glob('*.npz')}
    assert len(written) == 3 and not (stage/'_done.json').exists() and not list(stage.glob('.*.tmp'))
    monkeypatch.setattr(CAMS, 'save_cams', real)
    st = S.make_cams(out_root=out, data_root=data, scales=[1.0], **COMMON)
    assert st.done and len(list(stage.glob('*.npz'))) == 16
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())   # kept, not recomputed

def test_training_resumes_from_checkpoint(smoke_data, tmp_path, monkeypatch, capsys):
    out = tmp_path/'out'
    kw = dict(out_root=out, data_root=smoke_data, epochs=2, batch_size=8, crop_size=64, **COMMON)
    real, steps = CLS._checkpoint, []
    def crash_after_first_checkpoint(*a, **k):
        real(*a, **k); steps.append(a[4])
        raise KeyboardInterrupt('killed after checkpoint')
    monkeypatch.setattr(CLS, '_checkpoint', crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt): S.train_classifier(**kw)
    assert steps == [2] and (out/'r'/'cls'/'last.pt').is_file() and not (out/'r'/'cls'/'model.pt').exists()
    monkeypatch.setattr(CLS, '_checkpoint', real)
    st = S.train_classifier(**kw)
    assert 'resuming' in capsys.readouterr().out
    assert st.done and st.summary()['steps'] == 4
    assert len(load_json(st.path/'history.json')) == 4

def test_changed_parameter_reruns_and_same_parameter_skips(trained, capsys):
    out, data = trained
    S.make_cams(out_root=out, data_root=data, scales=[1.0], **COMMON)
    capsys.readouterr()
    S.make_cams(out_root=out, data_root=data, scales=[1.0], **COMMON)
    assert 'already done' in capsys.readouterr().out
    st = S.make_cams(out_root=out, data_root=data, scales=[1.0, 0.5], **COMMON)
    assert st.done and 'already done' not in capsys.readouterr().out

# ---- exact resume after a real kill (issue 20) ----
import json, os, signal, subprocess, sys, time
import torch
from conftest import ROOT

CHILD = r'''
import json, sys, time
import wsss_nb.stages as S
from wsss_nb.stages import common, train_cls, train_seg
stage, out, data, pause = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == 'pause'
if pause:   # hold still after the first checkpoint so that the parent kills this process there (SIGKILL, no cleanup)
    mod = train_cls if stage == 'cls' else train_seg
    real = mod._checkpoint
    def slow(*a, **k):
        real(*a, **k); print('CHECKPOINT', a[4], flush=True); time.sleep(120)
    mod._checkpoint = slow
common_kw = dict(run='r', out_root=out, data_root=data, device='cpu', progress=False, crop_size=48, num_workers=0)
if stage == 'cls': S.train_classifier(epochs=3, batch_size=8, **common_kw)        # random crop, scale, flip, jitter on
else: train_seg.CHECKPOINT_EVERY = 6; S.train_segmentation(labels='gt', iters=9, batch_size=4, rates=[2], scales=[0.75, 1.0, 1.25], **common_kw)
print('DONE', flush=True)
'''

def _child(stage, out, data, pause=False):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1')
    return subprocess.Popen([sys.executable, '-c', CHILD, stage, str(out), str(data), 'pause' if pause else 'run'],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

def _kill_after_first_checkpoint(p):
    for line in p.stdout:
        if line.startswith('CHECKPOINT'):
            os.kill(p.pid, signal.SIGKILL); p.wait(); return int(line.split()[1])
    p.wait(); raise AssertionError(f'child ended before its first checkpoint (rc {p.returncode})')

@pytest.mark.parametrize('stage, folder, killed_at', [('cls', 'cls', 2), ('seg', 'seg_gt', 6)])
def test_killed_training_resumes_exactly(stage, folder, killed_at, smoke_data, tmp_path):
    """kill -9 right after the first checkpoint (cls: end of epoch 1 of 3; DeepLab: step 6 of 9, mid-epoch: 4 batches per epoch), rerun:
    the weights equal the uninterrupted run's bit for bit (CPU, same thread count), so every score computed from them does.
    Holds only if the checkpoint restores torch, NumPy and Python RNGs (augmentation) and the loader's generator and position."""
    ref = _child(stage, tmp_path/'ref', smoke_data); out = ref.communicate()[0]
    assert ref.returncode == 0 and 'DONE' in out, out[-3000:]
    p = _child(stage, tmp_path/'cut', smoke_data, pause=True)
    assert _kill_after_first_checkpoint(p) == killed_at
    assert not (tmp_path/'cut'/'r'/folder/'_done.json').exists()
    r = _child(stage, tmp_path/'cut', smoke_data); out = r.communicate()[0]
    assert r.returncode == 0 and f'at step {killed_at}' in out, out[-3000:]      # it did resume
    a, b = (torch.load(d/'r'/folder/'model.pt', weights_only=False)['model'] for d in (tmp_path/'ref', tmp_path/'cut'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    h1, h2 = (json.loads((d/'r'/folder/'history.json').read_text()) for d in (tmp_path/'ref', tmp_path/'cut'))
    assert h1 == h2
