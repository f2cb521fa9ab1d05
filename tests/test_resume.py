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
    def crash_after_three(path, cams, keys, *args, **kw):     # CAM files are written by the stage's writer threads
        with lock:
            if len(calls) == 3: raise KeyboardInterrupt('killed')
            calls.append(path)
        real(path, cams, keys, *args, **kw)
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

@pytest.mark.slow
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

# ---- inputs by content: split lists and imported artifacts (issue 20, point 4) ----
import shutil

def _ran(capsys, name)->bool:
    "True if stage `name` did work (it did not print 'already done')."
    return f'{name}: already done' not in capsys.readouterr().out

def test_split_list_content_reruns_the_stages_that_read_it(smoke_data, tmp_path, capsys):
    "Editing a split list behind the same path reruns every stage that reads it (and after it); another split's list does not."
    data = tmp_path/'ds'; shutil.copytree(smoke_data, data)
    out, splits = tmp_path/'out', data/'ImageSets'/'Segmentation'
    kw = dict(out_root=out, data_root=data, **COMMON)
    def both():
        S.train_classifier(epochs=1, batch_size=8, crop_size=48, pretrained=None, **kw); cls = _ran(capsys, 'cls')
        S.make_cams(scales=[1.0], **kw); return cls, _ran(capsys, 'cams')
    assert both() == (True, True)
    assert both() == (False, False)                               # unchanged: skipped
    (splits/'val.txt').write_text('\n'.join((splits/'val.txt').read_text().split()[:-1]) + '\n')   # the val list: not read here
    assert both() == (False, False)
    ids = (splits/'train.txt').read_text().split()
    (splits/'train.txt').write_text('\n'.join(ids[:-1]) + '\n')   # one id fewer, same path
    assert both() == (True, True)
    assert len(list((out/'r'/'cams').glob('*.npz'))) == len(ids) - 1
    assert both() == (False, False)

def test_default_synthetic_saliency_is_fingerprinted_by_content(smoke_data, tmp_path, capsys):
    "With no `saliency_dir`, the synthetic set's own `Saliency/` maps are read by a saliency refiner, so their content is in"
    " its stage's fingerprint; the classifier of the `cam` method reads none, so a changed map does not rerun it (issue 24)."
    import numpy as np
    from PIL import Image
    data = tmp_path/'ds'; shutil.copytree(smoke_data, data)
    kw = dict(out_root=tmp_path/'out', data_root=data, **COMMON)
    cls = dict(epochs=1, batch_size=8, crop_size=48, pretrained=None, max_images=4)
    pseudo = dict(refiner='saliency', bg_threshold=0.3, max_images=4)
    S.train_classifier(**cls, **kw); assert _ran(capsys, 'cls')
    S.make_cams(scales=[1.0], max_images=4, **kw); S.make_pseudo_labels(**pseudo, **kw); assert _ran(capsys, 'pseudo')
    S.make_pseudo_labels(**pseudo, **kw); assert not _ran(capsys, 'pseudo')
    f = sorted((data/'Saliency').glob('*.png'))[0]
    a = np.array(Image.open(f)); Image.fromarray(255 - a).save(f)        # another saliency map behind the same path
    S.train_classifier(**cls, **kw); assert not _ran(capsys, 'cls')     # reads no saliency
    S.make_pseudo_labels(**pseudo, **kw); assert _ran(capsys, 'pseudo')

def test_cam_stage_reads_its_split_list_by_content(smoke_data, tmp_path, capsys):
    "The CAM stage alone (a classifier trained on another split): its own split list's content is in its fingerprint."
    data = tmp_path/'ds'; shutil.copytree(smoke_data, data)
    splits = data/'ImageSets'/'Segmentation'
    (splits/'few.txt').write_text('\n'.join((splits/'train.txt').read_text().split()[:3]) + '\n')
    kw = dict(out_root=tmp_path/'out', data_root=data, **COMMON)
    S.train_classifier(epochs=1, batch_size=8, crop_size=48, pretrained=None, **kw); capsys.readouterr()
    S.make_cams(scales=[1.0], split='few', **kw); assert _ran(capsys, 'cams')
    S.make_cams(scales=[1.0], split='few', **kw); assert not _ran(capsys, 'cams')
    (splits/'few.txt').write_text('\n'.join((splits/'train.txt').read_text().split()[:2]) + '\n')
    S.make_cams(scales=[1.0], split='few', **kw); assert _ran(capsys, 'cams')

def test_reimported_artifact_with_new_content_reruns_downstream(smoke_data, tmp_path, capsys):
    "An imported CAM folder enters the fingerprint by content: re-importing changed maps reruns pseudo-labels; the same maps do not."
    import numpy as np
    from wsss_nb.data import get_dataset, save_mask
    from wsss_nb.importers import import_cams
    ds = get_dataset('synthetic', smoke_data, 'train')
    cfg = dict(run='voc', out_root=str(tmp_path/'out'), dataset='synthetic', data_root=str(smoke_data), train_split='train')
    def write(seed):
        rng = np.random.default_rng(seed)
        for i in ds.ids:
            H, W = ds.load_raw(i)[0].shape[:2]
            for c in np.flatnonzero(ds.labels[i]): save_mask((rng.random((H, W))*255).astype(np.uint8), tmp_path/'cams'/f'{i}_{c}.png')
    def pseudo():
        S.make_pseudo_labels('voc_released', cfg['out_root'], 'synthetic', str(smoke_data), refiner='none', bg_threshold=0.3, progress=False)
        return _ran(capsys, 'pseudo')
    write(0); import_cams(tmp_path/'cams', 'png', cfg); capsys.readouterr()
    assert pseudo()
    import_cams(tmp_path/'cams', 'png', cfg); capsys.readouterr()
    assert not pseudo()                                          # same content: downstream stays done
    write(1); import_cams(tmp_path/'cams', 'png', cfg); capsys.readouterr()
    assert pseudo()                                              # new maps behind the same path

# ---- scores.json / report.md only for a complete run (issue 20, point 9) ----
def _fake_stages(monkeypatch, fail_at=None):
    "Replace papermill by stand-ins: each stage writes its _done.json from its parameters; 05_evaluate writes the results."
    import wsss_nb.cli as cli
    from wsss_nb.core import save_json, save_text, run_dir
    names = {'01_train_cls': 'cls', '02_make_cams': 'cams', '03_make_pseudo': 'pseudo', '04_train_seg': 'seg_pseudo', '05_evaluate': 'eval'}
    def execute(nb, out_dir, params, log_output):
        out = run_dir(params['out_root'], params['run'])
        if nb == fail_at: raise cli.StageFailed(nb, 'WSSSError', 'injected failure')
        rec = out/names[nb]/'_done.json'
        new = json.dumps(dict(epochs=params['cls_epochs'], stage=nb, labels=params.get('seg_labels')))
        if not rec.is_file() or rec.read_text() != new: rec.parent.mkdir(parents=True, exist_ok=True); rec.write_text(new)
        if nb == '05_evaluate':
            save_json(dict(cam_miou=params['cls_epochs']/10), out/'scores.json'); save_text(f"epochs {params['cls_epochs']}", out/'report.md')
    monkeypatch.setattr(cli, '_execute', execute)

def test_interrupted_rerun_leaves_no_stale_scores(tmp_path, monkeypatch):
    "Finished run, then a changed parameter and a failure before evaluation: no scores.json/report.md of the old result; a complete rerun writes them."
    import wsss_nb.cli as cli
    f = tmp_path/'c.yaml'; out = tmp_path/'out'/'x'
    def run(epochs, fail_at=None, stages=None):
        f.write_text(f'run: x\nout_root: {tmp_path/"out"}\ncls_epochs: {epochs}\ntrain_gt_bound: false\n')
        _fake_stages(monkeypatch, fail_at)
        return cli.main(['run', str(f), '--quiet'] + (['--stages', *stages] if stages else []))
    assert run(1) == 0 and load_json(out/'scores.json') == {'cam_miou': 0.1}
    assert run(2, fail_at='03_make_pseudo') == 2                  # cls and cams redone, then interrupted
    assert not (out/'scores.json').exists() and not (out/'report.md').exists()
    assert not list(out.glob('.*.prev'))
    assert run(2) == 0 and load_json(out/'scores.json') == {'cam_miou': 0.2} and (out/'report.md').read_text() == 'epochs 2'
    assert run(2, stages=['01_train_cls']) == 0                   # nothing changed: the results stay
    assert load_json(out/'scores.json') == {'cam_miou': 0.2}
    assert run(3, stages=['01_train_cls']) == 0                   # the classifier changed, no evaluation: results gone
    assert not (out/'scores.json').exists() and not (out/'report.md').exists()

def test_killed_rerun_leaves_no_stale_scores(tmp_path, monkeypatch):
    "kill -9 while stages run (no cleanup at all): the old results are under hidden names only, and the next run drops them."
    import wsss_nb.cli as cli
    f = tmp_path/'c.yaml'; f.write_text(f'run: x\nout_root: {tmp_path/"out"}\ntrain_gt_bound: false\n')
    out = tmp_path/'out'/'x'
    _fake_stages(monkeypatch); assert cli.main(['run', str(f), '--quiet']) == 0
    aside = cli._set_results_aside(out)                            # what run_pipeline does before the stages ...
    assert set(aside) == {'scores.json', 'report.md'} and not (out/'scores.json').exists()   # ... and a kill stops it here
    f.write_text(f'run: x\nout_root: {tmp_path/"out"}\ntrain_gt_bound: false\ncls_epochs: 5\n')
    _fake_stages(monkeypatch, fail_at='02_make_cams'); assert cli.main(['run', str(f), '--quiet']) == 2
    assert not (out/'scores.json').exists() and not list(out.glob('.*.prev'))
