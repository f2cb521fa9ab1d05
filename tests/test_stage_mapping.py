"""One mapping from config keys to stage arguments (`wsss_nb.stages.STAGES`), used by both drivers: the papermill
pipeline notebooks and the torchrun runner. These tests fail when a notebook's parameters and the mapping disagree."""
import inspect, json
from wsss_nb.cli import notebook_params, pipelines_dir, STAGE_NOTEBOOKS, RUN_ALL_ONLY
from wsss_nb.stages import STAGES, stage_kwargs

def _keys(nb): return set().union(*[set(s.config_keys()) for s in STAGES.values() if s.notebook == nb])

def test_every_stage_notebook_declares_exactly_its_stages_keys():
    for nb in STAGE_NOTEBOOKS:
        declared = set(notebook_params(nb))
        assert declared == _keys(nb), f'{nb}: missing {sorted(_keys(nb) - declared)}, unused {sorted(declared - _keys(nb))}'

def test_run_all_declares_every_key():
    assert set(notebook_params('00_run_all')) == set().union(*map(_keys, STAGE_NOTEBOOKS)) | RUN_ALL_ONLY

def test_defaults_agree_between_notebooks():
    run_all = notebook_params('00_run_all')
    for nb in STAGE_NOTEBOOKS:
        for k, v in notebook_params(nb).items(): assert run_all[k] == v, f'{nb}: {k} = {v!r} but 00_run_all has {run_all[k]!r}'

def test_notebooks_call_their_stages_through_the_mapping():
    for name, spec in STAGES.items():
        code = ''.join(''.join(c['source']) for c in json.loads((pipelines_dir()/f'{spec.notebook}.ipynb').read_text())['cells'])
        assert f"{spec.fn.__name__}(**stage_kwargs('{name}', globals()))" in code, f'{spec.notebook} does not call {spec.fn.__name__} via stage_kwargs'

def test_every_argument_is_mapped():
    p = notebook_params('00_run_all')
    for name, spec in STAGES.items():
        assert set(stage_kwargs(name, p)) == set(inspect.signature(spec.fn).parameters) - {'progress'}, name
