"""A full disk fails with one line ("no space left on <folder>") and leaves no half-written file, executed notebooks
included. The disk is not really filled: writes fail with `OSError(ENOSPC)` after a byte budget, in-process by
swapping the file class `atomic_write` opens, and in subprocesses (the CLI, papermill and the notebook kernel) by a
`sitecustomize` on `PYTHONPATH` that wraps `open` and `io.FileIO` for paths containing a marker."""
import errno, json, os, subprocess, sys
from pathlib import Path
import pytest
import torch
import yaml
import wsss_nb.core as core
from wsss_nb.core import DiskFullError, WSSSError, atomic_write, load_json, save_json, save_torch

ROOT = Path(__file__).resolve().parent.parent

class _FullAfter(core._WriteErrors):
    "The disk fills after `budget` bytes (shared by every file opened through `atomic_write`)."
    budget = 0
    def write(self, b):
        if len(b) > _FullAfter.budget:
            self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)); raise self.error
        _FullAfter.budget -= len(b); return super().write(b)

@pytest.fixture
def full_disk(monkeypatch):
    def fill(after_bytes=0): _FullAfter.budget = after_bytes; monkeypatch.setattr(core, '_WriteErrors', _FullAfter)
    return fill

@pytest.mark.parametrize('write', ['json', 'torch', 'text'])
def test_atomic_writers_keep_the_old_file(write, tmp_path, full_disk):
    "Every writer: the previous version stays byte for byte, no temporary file, one message naming the folder."
    f = tmp_path/'run'/'x.bin'
    save_json({'old': 1}, f); old = f.read_bytes()
    full_disk(after_bytes=64)
    with pytest.raises(DiskFullError) as e:
        if write == 'json': save_json({'new': 'x'*10_000}, f)
        elif write == 'torch': save_torch({'w': torch.zeros(10_000)}, f)   # torch itself says "inline_container.cc ... unexpected pos"
        else:
            with atomic_write(f, 'w') as fh: fh.write('y'*100_000)
    assert str(e.value).startswith(f'no space left on {f.parent} (writing x.bin)') and '\n' not in str(e.value)
    assert isinstance(e.value, WSSSError) and isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert f.read_bytes() == old and [p.name for p in f.parent.iterdir()] == ['x.bin']

def test_stage_on_a_full_disk_is_not_done(smoke_data, tmp_path, full_disk):
    "A classifier whose checkpoint cannot be written: DiskFullError, no done marker, no model, no temporary file."
    import wsss_nb.stages as S
    kw = dict(run='r', out_root=tmp_path, data_root=smoke_data, epochs=1, batch_size=8, crop_size=64, pretrained=None,
              device='cpu', progress=False)
    full_disk(after_bytes=20_000)               # room for _params.json, not for the weights
    with pytest.raises(DiskFullError, match='no space left on .*/r/cls'): S.train_classifier(**kw)
    cls = tmp_path/'r'/'cls'
    assert not (cls/'_done.json').exists() and not (cls/'model.pt').exists() and not list(cls.glob('.*.tmp'))

SITE = r'''
import builtins, errno, io, os
_MARK, _LEFT = os.environ.get('WSSS_TEST_FULL_MARK', ''), [int(os.environ.get('WSSS_TEST_FULL_AFTER', '0'))]
def _path(name):
    try: return os.readlink(f'/proc/self/fd/{name}') if isinstance(name, int) else os.path.abspath(os.fsdecode(name))
    except OSError: return ''
class _FullFileIO(io.FileIO):
    def __init__(self, name, mode='r', *a, **k):
        super().__init__(name, mode, *a, **k); self._full = bool(_MARK) and _MARK in _path(name if isinstance(name, int) else name)
    def write(self, b):
        if self._full:
            if len(b) > _LEFT[0]: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _LEFT[0] -= len(b)
        return super().write(b)
io.FileIO = _FullFileIO
_open = builtins.open
def _full_open(file, mode='r', buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
    if (_MARK and mode.strip('bt') in ('w', 'a', 'x') and isinstance(file, (str, os.PathLike))
            and _MARK in os.path.abspath(os.fspath(file))):
        raw = _FullFileIO(file, mode.strip('bt'), closefd=closefd, opener=opener)
        buf = io.BufferedWriter(raw)
        return buf if 'b' in mode else io.TextIOWrapper(buf, encoding=encoding, errors=errors, newline=newline)
    return _open(file, mode, buffering, encoding, errors, newline, closefd, opener)
builtins.open = _full_open
'''

def _cli(tmp_path, args, mark, after=0):
    "Run `python -m wsss_nb.cli ...` with writes to paths containing `mark` failing after `after` bytes."
    site = tmp_path/'site'; site.mkdir(exist_ok=True); (site/'sitecustomize.py').write_text(SITE)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(site), str(ROOT), os.environ.get('PYTHONPATH', '')]),
           'WSSS_TEST_FULL_MARK': mark, 'WSSS_TEST_FULL_AFTER': str(after), 'OMP_NUM_THREADS': '1'}
    p = subprocess.run([sys.executable, '-m', 'wsss_nb.cli', *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    err = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith('[IPKernelApp]')]   # the kernel's own warning
    return p.returncode, err

def _config(tmp_path, data, **kw):
    cfg = dict(run='r', out_root=str(tmp_path/'out'), dataset='synthetic', data_root=str(data), make_data=False, pretrained=None,
               cls_epochs=1, cls_batch_size=8, cls_crop_size=64, device='cpu', **kw)
    f = tmp_path/'cfg.yaml'; f.write_text(yaml.safe_dump(cfg)); return f

@pytest.mark.slow
def test_full_disk_before_any_stage(smoke_data, tmp_path):
    "The run's config.json cannot be written: one line `wsss-nb: no space left on <run folder>`, the old file intact."
    f = _config(tmp_path, smoke_data)
    run = tmp_path/'out'/'r'; run.mkdir(parents=True); (run/'config.json').write_text('{"old": true}')
    rc, err = _cli(tmp_path, ['run', str(f), '--stages', '01_train_cls', '--quiet'], mark='config.json')
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f'wsss-nb: no space left on {run} (writing config.json): '), err[0]
    assert (run/'config.json').read_text() == '{"old": true}' and not list(run.glob('.*.tmp'))

@pytest.mark.slow
def test_full_disk_writing_the_executed_notebook(smoke_data, tmp_path):
    "Papermill cannot save the executed notebook: one line naming the stage; the last good notebook kept, no 0-byte copy."
    f = _config(tmp_path, smoke_data)
    nbs = tmp_path/'out'/'r'/'notebooks'; nbs.mkdir(parents=True)
    (nbs/'01_train_cls.ipynb').write_text('{"previous": "run"}')
    rc, err = _cli(tmp_path, ['run', str(f), '--stages', '01_train_cls', '--quiet'], mark='.partial.ipynb')
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f'wsss-nb: 01_train_cls failed: no space left on {nbs} (writing the executed notebook 01_train_cls.ipynb)'), err[0]
    assert sorted(p.name for p in nbs.iterdir()) == ['01_train_cls.ipynb']          # no partial, no empty .failed copy
    assert (nbs/'01_train_cls.ipynb').read_text() == '{"previous": "run"}'

@pytest.mark.slow
def test_full_disk_inside_a_stage(smoke_data, tmp_path):
    "Through papermill and the kernel: the classifier's checkpoint hits the full disk; one line, no half-written file, not done."
    f = _config(tmp_path, smoke_data)
    rc, err = _cli(tmp_path, ['run', str(f), '--stages', '01_train_cls', '--quiet'], mark='/r/cls/', after=20_000)
    cls, nbs = tmp_path/'out'/'r'/'cls', tmp_path/'out'/'r'/'notebooks'
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f'wsss-nb: 01_train_cls failed: no space left on {cls} (writing '), err[0]
    assert err[0].endswith(f"(notebook: {nbs/'01_train_cls.failed.ipynb'})")
    assert 'inline_container' not in err[0]
    assert not (cls/'_done.json').exists() and not (cls/'model.pt').exists() and not list(cls.glob('.*.tmp'))
    json.loads((nbs/'01_train_cls.failed.ipynb').read_text())            # the failed notebook is whole (the traceback is in it)
