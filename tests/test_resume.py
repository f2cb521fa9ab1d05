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
