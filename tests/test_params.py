"""The parameter schema (`wsss_nb.params`) is the one definition of every pipeline key: the notebooks' parameters cells,
the README table and the checks come from it. The plan is one list both launchers run; `--dry-run` prints the same
report from both; `--stages` refuses upstream results made with other parameters; `--help` does not import torch."""
import contextlib, io, json, subprocess, sys, time
from pathlib import Path
import pytest, yaml
from wsss_nb import params as P
from wsss_nb.core import load_config

ROOT = Path(__file__).resolve().parent.parent

def test_parameters_cells_are_generated_from_the_schema():
    for nb in P.PIPELINE_NOTEBOOKS:
        cells = [c for c in json.loads((ROOT/'nbs'/'pipelines'/f'{nb}.ipynb').read_text())['cells']
                 if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(cells) == 1 and ''.join(cells[0]['source']) == P.params_cell(nb), \
            f"{nb}: run `python -c \"from wsss_nb.params import write_params_cells; write_params_cells('nbs/pipelines')\"`"

def test_readme_schema_table_is_generated():
    text = (ROOT/'README.md').read_text()
    start, end = '<!-- params:start -->\n', '\n<!-- params:end -->'
    assert start in text and end in text
    assert text.split(start)[1].split(end)[0] == P.schema_table(), 'regenerate with `wsss-nb params --markdown`'

def test_choices_are_the_librarys():
    from wsss_nb.cam import IMAGE_RESIZES, UPSAMPLES
    from wsss_nb.metrics import ABSENT, PRED255
    from wsss_nb.stages.evaluate import EVAL_CRF
    S = P.SCHEMA
    assert S['cam_image_resize'].choices == IMAGE_RESIZES and S['cam_upsample'].choices == UPSAMPLES
    assert set(S['eval_absent'].choices) == set(ABSENT) and set(S['eval_pred255'].choices) == set(PRED255)
    assert set(S['eval_crf'].choices) == set(EVAL_CRF)

def _main(args):
    "(exit code, stdout, stderr) of `wsss-nb ARGS` in this process."
    from wsss_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(args)
    return rc, out.getvalue(), err.getvalue()

def _cfg(tmp_path, data, **kw):
    cfg = dict(run='r', out_root=str(tmp_path/'out'), dataset='synthetic', data_root=str(data), make_data=False, pretrained=None,
               cls_epochs=1, cls_batch_size=8, cls_crop_size=64, device='cpu', train_gt_bound=False, **kw)
    f = tmp_path/'c.yaml'; f.write_text(yaml.safe_dump(cfg)); return f

@pytest.mark.parametrize('override,says', [
    ('pseudo_bg_threshold=2.5', "pseudo_bg_threshold=2.5 (expected >= 0 and <= 1 or 'best')"),
    ('pseudo_bg_threshold=bestt', "(did you mean best?)"),
    ('cam_upsample=foo', "cam_upsample='foo' (expected one of 'direct', 'strided_crop')"),
    ('cam_image_resize=pil_bicubik', "(did you mean pil_bicubic?)"),
    ('seg_labels=foo', "seg_labels='foo' (expected one of 'pseudo', 'gt')"),
    ('cls_lrr=0.1', 'unknown key(s): cls_lrr (did you mean cls_lr?)'),
    ('method=camm', 'did you mean cam?'),
    ('refiner=crff', 'did you mean crf?'),
    ('backbone=resnet5O', 'did you mean resnet50?'),
])
def test_bad_values_refused_up_front(tmp_path, smoke_data, override, says):
    rc, out, err = _main(['run', str(_cfg(tmp_path, smoke_data)), override, '--quiet'])
    assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path/'out').exists()

def test_empty_config_refused(tmp_path):
    f = tmp_path/'empty.yaml'; f.write_text('# only a comment\n')
    rc, out, err = _main(['run', str(f)])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'empty.yaml is empty' in err, err

def test_yaml_exponent_accepted_and_dry_run_writes_nothing(tmp_path, smoke_data):
    f = tmp_path/'c.yaml'; f.write_text(_cfg(tmp_path, smoke_data).read_text() + 'cls_lr: 1e-3\n')
    assert yaml.safe_load(f.read_text())['cls_lr'] == '1e-3'          # YAML 1.1: a string
    rc, out, err = _main(['run', str(f), '--dry-run'])
    assert rc == 0, err
    assert '  cls_lr = 0.001  *' in out and '01_train_cls     01_train_cls    -> cls/        run: not run yet' in out
    assert not (tmp_path/'out').exists()

def test_fixed_configs_differ_from_their_base_only_in_their_fixes():
    for f in sorted((ROOT/'configs').glob('voc12_*_fixed.yaml')):
        own = yaml.safe_load(f.read_text())
        base = load_config(f.parent/own.pop('base'))
        unset = own.pop('unset', [])
        fixed = load_config(f)
        flat = lambda c: {f'{k}.{s}' if isinstance(v, dict) else k: x for k, v in c.items()
                          for s, x in (v.items() if isinstance(v, dict) else [(None, v)])}
        a, b, mine = flat(base), flat(fixed), flat(own)
        differ = {k for k in set(a) | set(b) if a.get(k, '<unset>') != b.get(k, '<unset>')}
        assert differ == set(mine) | set(unset), (f.name, differ ^ (set(mine) | set(unset)))   # every line written is a fix
        assert fixed['run'] == f.stem

@pytest.mark.slow
def test_help_is_fast_and_imports_no_torch():
    for args in (['--help'], ['run', '--help'], ['demo', '--help'], ['params'], ['params', '--json'], ['compare', '--help'], ['--version']):
        t = time.time()
        p = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'wsss_nb', *args], capture_output=True, text=True, cwd=ROOT)
        dt = time.time() - t
        assert p.returncode == 0, p.stderr[-2000:]
        assert not any(l.rstrip().endswith(('| torch', '| numpy')) for l in p.stderr.splitlines()), args
        assert dt < 1.0, (args, dt)   # under a second
    p = subprocess.run([sys.executable, '-m', 'wsss_nb', '--version'], capture_output=True, text=True, cwd=ROOT)
    import wsss_nb
    assert p.stdout.strip() == f'wsss-nb {wsss_nb.__version__}'
    js = json.loads(subprocess.run([sys.executable, '-m', 'wsss_nb', 'params', '--json'], capture_output=True, text=True, cwd=ROOT).stdout)
    assert {d['name'] for d in js} == set(P.SCHEMA) and all({'default', 'type', 'stages', 'doc'} <= set(d) for d in js)

@pytest.mark.slow
def test_launchers_share_plan_dry_run_and_refuse_stale_upstream(tmp_path, smoke_data):
    "cls finished; both launchers' --dry-run print the same report; a --stages run on a classifier trained with other parameters is refused."
    from wsss_nb import distributed as D
    f = _cfg(tmp_path, smoke_data, max_images=8)
    D.run_stages(load_config(f), ['cls'], progress=False, where=str(f))          # the classifier, once (seconds on CPU)
    out_cli = _main(['run', str(f), '--dry-run'])[1]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): assert D.main(['run', str(f), '--dry-run']) == 0
    assert out_cli == buf.getvalue() and '-> cls/        reuse: finished with these parameters' in out_cli, out_cli
    assert '02_make_cams     02_make_cams    -> cams/       run: not run yet' in out_cli
    changed = _main(['run', str(f), 'cls_lr=0.5', '--dry-run'])[1]
    assert '-> cls/        run: changed: cls_lr' in changed and 'cams/       run: upstream cls/ reruns' in changed, changed
    cfg_json = tmp_path/'out'/'r'/'config.json'
    before = cfg_json.read_bytes() if cfg_json.exists() else None
    rc, out, err = _main(['run', str(f), 'cls_lr=0.5', '--stages', '02_make_cams', '--quiet'])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and '01_train_cls (cls/) changed: cls_lr' in err, err
    assert (cfg_json.read_bytes() if cfg_json.exists() else None) == before    # the run's record is not rewritten
    with pytest.raises(P.ConfigError, match='changed: cls_lr'): D.run_stages({**load_config(f), 'cls_lr': 0.5}, ['cams'], where=str(f))

def test_tensorboard_events_when_installed_and_nothing_otherwise(tmp_path, monkeypatch):
    from wsss_nb.stages.common import write_tensorboard
    history = [{'loss': 0.7, 'aux': 0.1}, {'loss': 0.5, 'aux': 0.2}]
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)      # as without the package: no file, no error
    assert write_tensorboard(tmp_path/'none', history) is False and not (tmp_path/'none').exists()
    monkeypatch.undo()
    pytest.importorskip('tensorboard')
    assert write_tensorboard(tmp_path/'tb', history) is True
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(tmp_path/'tb')); ea.Reload()
    assert [(e.step, round(e.value, 6)) for e in ea.Scalars('loss/loss')] == [(1, 0.7), (2, 0.5)]

def _other(p:P.Param, v):
    "Another valid value of `p` (None: no simple one, e.g. paths, registries, mappings)."
    if p.registry or p.kind in ('path', 'mapping'): return None
    if p.kind == 'bool': return True if v is None else not v
    if p.choices and p.kind == 'str': return next(c for c in p.choices if c != v)
    if p.kind == 'int': return 2 if v is None else v + 1
    if p.kind == 'float': return 0.5 if not isinstance(v, (int, float)) or v == 0.5 else v * 0.5
    if p.kind == 'numbers': return [1.0] if v != [1.0] else [1.0, 0.5]
    if p.name.endswith('split'): return 'val' if v != 'val' else 'train'
    return None

def test_fingerprint_column_is_what_the_stages_record(smoke_data, tmp_path):
    "For each key a stage reads: changing it changes that stage's fingerprint exactly when the schema says `fingerprint`."
    from wsss_nb.cli import _probing, _Probed
    from wsss_nb.stages import STAGES, stage_kwargs
    out = tmp_path/'out'
    for name in ('cls', 'cams', 'pseudo', 'seg_pseudo', 'seg_gt'):        # finished upstream records (no files)
        (out/'r'/name).mkdir(parents=True); (out/'r'/name/'_done.json').write_text('{"fingerprint": "x", "files": {}}')
    base = {**P.defaults(), 'run': 'r', 'out_root': str(out), 'data_root': str(smoke_data), 'make_data': False, 'device': 'cpu'}
    def fingerprint(call, params):
        try:
            with _probing(): STAGES[call].fn(**stage_kwargs(call, params), progress=False)
        except _Probed as e: return e.stage.fingerprint
        raise AssertionError(f'{call}: no done check reached')
    checked = 0
    for call in ('cls', 'cams', 'pseudo', 'seg', 'eval'):
        ref = fingerprint(call, base)
        for key in STAGES[call].config_keys():
            p = P.SCHEMA[key]
            if key in ('run', 'out_root') or (alt := _other(p, base[key])) is None: continue
            assert P.check_value(p, alt)[1] is None, (key, alt)
            changed = fingerprint(call, {**base, key: alt}) != ref
            assert changed == p.fingerprint, f"{call}: {key}={alt!r} {'changes' if changed else 'does not change'} the fingerprint, schema says fingerprint={p.fingerprint}"
            checked += 1
    assert checked > 40, checked

@pytest.mark.slow
def test_run_writes_log_txt(tmp_path, smoke_data):
    "outputs/<run>/log.txt: the terminal's lines, the stage's own output (its progress bar's last state), and on a rerun 'already done'."
    f = _cfg(tmp_path, smoke_data, max_images=8)
    for _ in range(2): assert _main(['run', str(f), '--stages', '01_train_cls', '--quiet'])[0] == 0
    log = (tmp_path/'out'/'r'/'log.txt').read_text()
    assert log.count('=== ') == 2 and log.count('[wsss-nb] 01_train_cls finished in') == 2, log
    assert 'cls: 100%' in log and 'cls: already done with these parameters' in log, log
    assert '\r' not in log
    rc, _, err = _main(['run', str(f), 'cls_lr=0.5', '--stages', '02_make_cams', '--quiet'])
    assert rc == 2 and err.strip() in (tmp_path/'out'/'r'/'log.txt').read_text()   # a refused run's one line is in the log too
