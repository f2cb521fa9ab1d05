"Pipeline notebooks: one literal `parameters` cell, nothing exported, tags kept through nbdev-clean."
import ast, json
import pytest
from conftest import PIPELINES, ROOT

NOTEBOOKS = sorted(PIPELINES.glob('[0-9]*.ipynb'))

def test_pipeline_notebooks_found():
    assert [p.stem for p in NOTEBOOKS] == ['00_run_all', '01_train_cls', '02_make_cams', '03_make_pseudo', '04_train_seg', '05_evaluate', '06_compare']

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_one_literal_parameters_cell(nb):
    cells = json.loads(nb.read_text())['cells']
    tagged = [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(tagged) == 1, f'{nb.name}: {len(tagged)} parameters cells'
    tree = ast.parse(''.join(tagged[0]['source']))
    for node in tree.body:   # only `name = literal` lines, so papermill overrides are never stale
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), ast.dump(node)
        ast.literal_eval(node.value)
    code = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    assert not any(s.lstrip().startswith(('#| export', '#|export', '#| default_exp')) for s in code), f'{nb.name} exports code'

def test_library_notebooks_have_prologue():
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        assert ''.join(cells[0]['source']).startswith('#| default_exp'), nb.name

def test_exported_symbols_have_docstrings():
    import importlib
    from wsss_nb._modidx import d
    missing = []
    for mod, syms in d['syms'].items():
        m = importlib.import_module(mod)
        for name in syms:
            obj = m
            for part in name.split('.')[1:]: obj = getattr(obj, part, None)
            if obj is not None and callable(obj) and not name.split('.')[-1].startswith('_') and not (obj.__doc__ or '').strip():
                missing.append(name)
    assert not missing, f'exported symbols without docstrings: {missing}'

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_comments_have_no_equals_sign(nb):
    "papermill's own parameter parser gives up on a line whose comment holds '=' and warns 'unknown parameter'."
    cells = json.loads(nb.read_text())['cells']
    source = ''.join(next(c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', []))['source'])
    bad = [line for line in source.splitlines() if '#' in line and '=' in line.split('#', 1)[1]]
    assert not bad, f'{nb.name}: {bad}'
