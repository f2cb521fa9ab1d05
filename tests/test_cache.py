"""The stage cache never returns a stale result (issue 24): fingerprints hold the content of every image, mask and saliency
map a stage reads (and only those); done records hold the sha1 of every output; damaged outputs and checkpoints are
rebuilt with one line; a loss that explodes stops the stage; a killed run leaves no temporary file; Ctrl-C, a read-only
out_root and OS errors are one line."""
import os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import yaml
from PIL import Image
import wsss_nb.stages as S
from wsss_nb.core import DataError, WSSSError, load_json
from conftest import ROOT

COMMON = dict(run='r', dataset='synthetic', device='cpu', progress=False)
CLS = dict(epochs=1, batch_size=8, crop_size=64, max_images=8, pretrained=None)

def _copy(src, tmp): dst = tmp/'ds'; shutil.copytree(src, dst); return dst

def _ids(root, split='train'): return (Path(root)/'ImageSets'/'Segmentation'/f'{split}.txt').read_text().split()

def _relabel(mask:Path, new:int=None):
    "Change one object's class in a palette mask (its first foreground class -> `new`, default another valid class)."
    im = Image.open(mask); a = np.array(im)
    old = int(next(v for v in np.unique(a) if v not in (0, 255)))
    a[a == old] = new if new is not None else (old % 8) + 1
    out = Image.fromarray(a, mode='P'); out.putpalette(im.getpalette()); out.save(mask)

def _cfg(tmp, data, **kw):
    cfg = dict(run='r', dataset='synthetic', data_root=str(data), make_data=False, out_root=str(tmp/'out'), device='cpu',
               cls_epochs=1, cls_batch_size=8, cls_crop_size=64, pretrained=None, max_images=8, cam_scales=[1.0],
               seg_iters=2, seg_batch_size=4, seg_crop_size=64, seg_rates=[2, 4])
    cfg.update(kw)
    f = tmp/'cfg.yaml'; f.write_text(yaml.safe_dump(cfg)); return f

def _err_lines(err): return [l for l in err.splitlines() if l.strip() and not l.startswith('[IPKernelApp]')]   # the kernel's own warning

# ---- inputs by content ----

def test_changed_image_reruns_the_stages_that_read_it_and_saliency_only_those_that_read_saliency(smoke_data, tmp_path, capsys):
    data = _copy(smoke_data, tmp_path); kw = dict(out_root=tmp_path/'out', data_root=data, **COMMON)
    S.train_classifier(**CLS, **kw); S.make_cams(scales=[1.0], max_images=8, **kw); capsys.readouterr()
    ids = _ids(data)
    sal = data/'Saliency'/f'{ids[0]}.png'; Image.fromarray(255 - np.array(Image.open(sal))).save(sal)   # the method `cam` reads none
    S.train_classifier(**CLS, **kw); S.make_cams(scales=[1.0], max_images=8, **kw)
    assert capsys.readouterr().out.count('already done') == 2
    shutil.copy(data/'JPEGImages'/f'{ids[1]}.jpg', data/'JPEGImages'/f'{ids[0]}.jpg')   # one JPEG copied over another
    st = S.train_classifier(**CLS, **kw)
    out = capsys.readouterr().out
    assert 'already done' not in out and 'params.inputs.images changed since it finished' in out and st.done, out
    S.make_cams(scales=[1.0], max_images=8, **kw); assert 'already done' not in capsys.readouterr().out   # its upstream changed
    shutil.copy(data/'JPEGImages'/f'{ids[1]}.jpg', data/'JPEGImages'/f'{ids[-1]}.jpg')   # an image past max_images=8: not read
    S.train_classifier(**CLS, **kw); assert 'already done' in capsys.readouterr().out

@pytest.mark.slow
def test_relabelled_mask_reruns_its_stages_through_the_cli(smoke_data, tmp_path, capsys):
    "The probe of issue 24: class 2 -> 3 in one train mask, rerun: stage 01 is redone (it was 'already done', exit 0)."
    from wsss_nb.cli import main
    data = _copy(smoke_data, tmp_path); f = _cfg(tmp_path, data)
    assert main(['run', str(f), '--stages', '01_train_cls', '--quiet']) == 0
    done = tmp_path/'out'/'r'/'cls'/'_done.json'; before = load_json(done)['fingerprint']; capsys.readouterr()
    _relabel(data/'SegmentationClass'/f'{_ids(data)[0]}.png')
    assert main(['run', str(f), '--stages', '01_train_cls', '--quiet']) == 0
    out = (tmp_path/'out'/'r'/'notebooks'/'01_train_cls.ipynb').read_text()   # the stage's output, in the executed notebook
    assert 'cls: params.inputs.masks changed since it finished: starting it again' in out and 'already done' not in out, out
    assert load_json(done)['fingerprint'] != before

def test_mask_with_an_unknown_class_is_refused_before_stage_01(smoke_data, tmp_path, capsys):
    from wsss_nb.cli import main
    data = _copy(smoke_data, tmp_path); f = _cfg(tmp_path, data)
    m = data/'SegmentationClass'/f'{_ids(data)[1]}.png'; _relabel(m, 40)
    assert main(['run', str(f)]) == 2
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and str(m) in err[0] and 'class index 40' in err[0] and "train_split='train'" in err[0], err
    assert not (tmp_path/'out'/'r'/'cls').exists()

# ---- outputs by content ----

def test_swapped_output_of_the_same_size_is_detected_and_rebuilt(smoke_data, tmp_path, capsys):
    kw = dict(data_root=smoke_data, **CLS, **COMMON)
    st = S.train_classifier(out_root=tmp_path/'out', **kw); other = S.train_classifier(out_root=tmp_path/'other', seed=1, **kw)
    mine, theirs = st.path/'model.pt', other.path/'model.pt'
    assert mine.stat().st_size == theirs.stat().st_size and mine.read_bytes() != theirs.read_bytes()
    original = mine.read_bytes(); shutil.copy(theirs, mine); capsys.readouterr()   # another run's model copied in
    with pytest.raises(DataError, match='cls/model.pt has other content than the stage wrote'): S.make_cams(out_root=tmp_path/'out', data_root=smoke_data, **COMMON)
    st = S.train_classifier(out_root=tmp_path/'out', **kw)
    out = capsys.readouterr().out
    assert 'cls: model.pt has other content than the stage wrote (replaced): writing it again' in out and 'already done' not in out, out
    assert st.done and mine.read_bytes() == original   # rebuilt from the stage's own checkpoint

def test_truncated_cam_file_is_rebuilt_with_one_line(smoke_data, tmp_path, capsys):
    kw = dict(out_root=tmp_path/'out', data_root=smoke_data, **COMMON)
    S.train_classifier(**CLS, **kw); cams = S.make_cams(scales=[1.0], max_images=8, **kw)
    f = sorted(cams.path.glob('*.npz'))[2]; good = f.read_bytes(); f.write_bytes(good[:len(good)//2]); capsys.readouterr()
    st = S.make_cams(scales=[1.0], max_images=8, **kw)
    out = capsys.readouterr().out
    assert f'cams: {f.name} has {len(good)//2} bytes instead of {len(good)} (truncated or replaced): writing it again' in out, out
    assert st.done and f.read_bytes() == good

def test_unreadable_file_of_an_interrupted_stage_is_rebuilt(smoke_data, tmp_path, capsys):
    kw = dict(out_root=tmp_path/'out', data_root=smoke_data, **COMMON)
    S.train_classifier(**CLS, **kw); cams = S.make_cams(scales=[1.0], max_images=8, **kw)
    (cams.path/'_done.json').unlink()                          # as if killed before it finished ...
    f = sorted(cams.path.glob('*.npz'))[0]; good = f.read_bytes(); f.write_bytes(good[:100])   # ... with a damaged file
    capsys.readouterr(); st = S.make_cams(scales=[1.0], max_images=8, **kw)
    assert f'cams: {f.name} is unreadable (truncated?): writing it again' in capsys.readouterr().out and st.done and f.read_bytes() == good

def test_corrupt_resume_checkpoint_is_set_aside_and_training_restarts(smoke_data, tmp_path, monkeypatch, capsys):
    import importlib
    mod = importlib.import_module('wsss_nb.stages.train_cls')
    kw = dict(out_root=tmp_path/'out', data_root=smoke_data, **{**CLS, 'epochs': 2}, **COMMON)
    real = mod._checkpoint
    def killed(*a, **k): real(*a, **k); raise KeyboardInterrupt('killed')
    monkeypatch.setattr(mod, '_checkpoint', killed)
    with pytest.raises(KeyboardInterrupt): S.train_classifier(**kw)
    monkeypatch.setattr(mod, '_checkpoint', real)
    ck = tmp_path/'out'/'r'/'cls'/'last.pt'; ck.write_bytes(ck.read_bytes()[:1000]); capsys.readouterr()
    st = S.train_classifier(**kw)
    out = capsys.readouterr().out
    assert f'cls: the resume checkpoint {ck} cannot be read' in out and 'set aside as last.pt.corrupt; training starts again' in out, out
    assert (ck.parent/'last.pt.corrupt').is_file() and st.done and st.summary()['steps'] == 2 and 'resuming' not in out

# ---- divergence ----

@pytest.mark.slow
def test_finite_divergence_stops_the_stage_through_the_cli(smoke_data, tmp_path, capsys):
    "cls_lr=10000: the loss goes from 0.7 to ~1e5 without a NaN; the stage stops with one line and is not done."
    from wsss_nb.cli import main
    f = _cfg(tmp_path, smoke_data, cls_lr=10000, max_images=0)   # 16 images: 2 steps, the least the check compares
    assert main(['run', str(f), '--stages', '01_train_cls', '--quiet']) == 2
    err = _err_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith('wsss-nb: 01_train_cls failed: cls: loss diverged: ') and 'diverge_factor=10 x its start' in err[0], err
    assert 'lower `cls_lr`' in err[0] and not (tmp_path/'out'/'r'/'cls'/'_done.json').exists()

# ---- temporaries of killed runs, set-aside results ----

@pytest.mark.slow
def test_stale_temporaries_and_report_figures_are_cleared(smoke_data, tmp_path):
    import wsss_nb.core as core, wsss_nb.cli as cli
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True).stdout.strip()
    kw = dict(out_root=tmp_path/'out', data_root=smoke_data, **COMMON)
    st = S.train_classifier(**{**CLS, 'epochs': 2}, **kw); (st.path/'_done.json').unlink()
    stale = st.path/f'.last.pt.{core._HOST}-{dead}.k3j2.tmp'; stale.write_bytes(b'x'*1000)   # a SIGKILLed writer's temporary
    legacy = st.path/'.last.pt.abc123.tmp'; legacy.write_bytes(b'x')                      # an older version's (no writer tag)
    live = st.path/f'.model.pt.{core._WRITER}.q.tmp'; live.write_bytes(b'x')             # a live writer's: kept
    S.train_classifier(**{**CLS, 'epochs': 2}, **kw)
    assert not stale.exists() and not legacy.exists() and live.exists()
    run = tmp_path/'out'/'r'
    (run/'notebooks').mkdir(); (run/'notebooks'/'.01_train_cls.partial.ipynb').write_text('{}')   # papermill's copy, CLI killed
    (run/'cls'/f'.model.pt.{core._HOST}-{dead}.z.tmp').write_bytes(b'x')
    monkey = cli._execute; cli._execute = lambda *a, **k: None
    try: cli.run_pipeline(yaml.safe_load(_cfg(tmp_path, smoke_data).read_text()), stages=['01_train_cls'])
    finally: cli._execute = monkey
    assert not list(run.rglob('.*.partial.ipynb')) and not (run/'cls'/f'.model.pt.{core._HOST}-{dead}.z.tmp').exists()
    for n in ('scores.json', 'report.md', 'report_iou.png', 'report_pseudo.png'): (run/n).write_text('old')
    aside = cli._set_results_aside(run)
    assert not list(run.glob('report*')) and not (run/'scores.json').exists() and len(aside) == 4
    cli._settle_results(run, aside, {'changed': b''})           # a stage changed: the old results and figures go
    assert not list(run.glob('report*')) and not list(run.glob('.*.prev'))

# ---- one line for every failure ----

def test_read_only_out_root_is_one_line_before_stage_01(smoke_data, tmp_path, capsys):
    from wsss_nb.cli import main
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o555)
    try:
        f = _cfg(tmp_path, smoke_data, out_root=str(ro))
        assert main(['run', str(f)]) == 2
        err = _err_lines(capsys.readouterr().err)
        assert err == [f"wsss-nb: error: {f}: out_root: cannot write to {ro} (read-only folder): choose a writable out_root, "
                       f"or fix that folder's permissions"], err
        assert list(ro.iterdir()) == []
    finally: ro.chmod(0o755)

def test_os_error_writing_a_notebook_is_one_line(smoke_data, tmp_path, capsys, monkeypatch):
    import papermill, wsss_nb.cli as cli
    def denied(*a, **k): raise PermissionError(13, 'Permission denied', str(tmp_path/'out'/'r'/'notebooks'/'.01_train_cls.partial.ipynb'))
    monkeypatch.setattr(papermill, 'execute_notebook', denied)
    assert cli.main(['run', str(_cfg(tmp_path, smoke_data)), '--stages', '01_train_cls']) == 2
    err = _err_lines(capsys.readouterr().err)
    assert err == [f"wsss-nb: 01_train_cls failed: PermissionError: Permission denied: {tmp_path/'out'/'r'/'notebooks'/'.01_train_cls.partial.ipynb'}"], err

def _kernels_of(pid:int)->list:
    "Live processes started by `pid` as Jupyter kernels (they carry JPY_PARENT_PID)."
    out = []
    for d in Path('/proc').glob('[0-9]*'):
        try:
            if f'JPY_PARENT_PID={pid}'.encode() in (d/'environ').read_bytes().split(b'\0') and ' Z ' not in (d/'stat').read_text(): out.append(int(d.name))
        except OSError: pass
    return out

@pytest.mark.slow
@pytest.mark.parametrize('to', ['group', 'process'])
def test_ctrl_c_is_one_line_exit_130_and_stops_the_kernel(smoke_data, tmp_path, to):
    "Ctrl-C at a terminal signals the CLI's process group; `kill -INT` the CLI alone: either way one line, exit 130, no kernel left."
    f = _cfg(tmp_path, smoke_data, cls_epochs=200)
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    p = subprocess.Popen([sys.executable, '-m', 'wsss_nb.cli', 'run', str(f), '--quiet'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, cwd=ROOT, env=env)
    try:
        t0 = time.time()
        while not (tmp_path/'out'/'r'/'cls'/'_params.json').exists() and time.time() - t0 < 90 and p.poll() is None: time.sleep(0.2)
        assert p.poll() is None, p.communicate()
        kernels = _kernels_of(p.pid); assert kernels
        time.sleep(1)
        os.killpg(p.pid, signal.SIGINT) if to == 'group' else p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err
    assert _err_lines(err) == ['wsss-nb: interrupted at stage 01_train_cls; rerun the same command to resume'], err
    assert 'Traceback' not in out + err and _kernels_of(p.pid) == [] and not any(Path(f'/proc/{k}').exists() for k in kernels)
    assert not (tmp_path/'out'/'r'/'cls'/'_done.json').exists() and not (tmp_path/'out'/'r'/'.lock').exists()
