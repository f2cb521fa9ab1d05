"Lesson notebooks (nbs/NN_*.ipynb and nbs/index.ipynb) are committed executed, with their figures, and cleaned by nbdev-clean."
import ast, json, re
import pytest
from conftest import ROOT

NBS = ROOT/'nbs'
LESSONS = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith('_') and (p.stem == 'index' or re.match(r'\d+[a-z]?_', p.name)))
SKIP_FLAGS = {'notest', 'slow', 'cuda'}   # tst_flags in pyproject.toml: cells nbdev-test does not run
NO_FIGURE = {'10a_main'}   # `python -m wsss_nb`: an entry point, nothing to draw (its lesson runs the command)
HINT = 'execute it and commit the outputs: `wsss-nb docs --execute` (or wsss_nb.docs.execute_notebooks), then `nbdev-clean`'

def _directives(cell)->dict:
    out = {}
    for line in ''.join(cell['source']).splitlines():
        m = re.match(r'\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$', line)
        if not m: break
        out[m[1]] = m[2]
    return out

def _run_by_nbdev_test(cell)->bool:
    d = _directives(cell)
    return cell['cell_type'] == 'code' and not (SKIP_FLAGS & d.keys()) and d.get('eval', '').lower() != 'false'

def _shows_a_value(source:str)->bool:
    "Does the cell end with a bare expression that is not a call (a name, attribute, subscript, literal...), so Jupyter must show it?"
    lines = [l for l in source.splitlines() if not l.lstrip().startswith(('%', '!'))]
    try: tree = ast.parse('\n'.join(lines))
    except SyntaxError: return False
    if not tree.body or source.rstrip().endswith(';'): return False
    last = tree.body[-1]
    return isinstance(last, ast.Expr) and not isinstance(last.value, (ast.Call, ast.Await, ast.Yield, ast.Constant))

def test_lessons_found():
    from wsss_nb.docs import lesson_notebooks
    assert {'index', '08_viz', '20_docs'} <= {p.stem for p in LESSONS}
    assert LESSONS == sorted(lesson_notebooks(NBS))                      # the set `wsss-nb docs --execute` runs

@pytest.mark.parametrize('nb', LESSONS, ids=lambda p: p.stem)
def test_committed_with_outputs(nb):
    cells = json.loads(nb.read_text())['cells']
    run = [c for c in cells if _run_by_nbdev_test(c)]
    outputs = [o for c in run for o in c.get('outputs', [])]
    assert outputs, f'{nb.name}: no code cell has outputs; {HINT}'
    if nb.stem not in NO_FIGURE: assert any('image/png' in o.get('data', {}) for o in outputs), f'{nb.name}: no image/png output; {HINT}'
    errors = [o.get('ename') for o in outputs if o['output_type'] == 'error']
    assert not errors, f'{nb.name}: committed with errors {errors}'
    silent = [''.join(c['source']).splitlines()[-1] for c in run if not c.get('outputs') and _shows_a_value(''.join(c['source']))]
    assert not silent, f'{nb.name}: cells ending in a value but without output (not executed?): {silent}'
    skipped_with_output = [c['id'] for c in cells if c['cell_type'] == 'code' and not _run_by_nbdev_test(c) and c.get('outputs')]
    assert not skipped_with_output, f'{nb.name}: cells nbdev-test skips still hold outputs: {skipped_with_output}'

@pytest.mark.parametrize('nb', LESSONS, ids=lambda p: p.stem)
def test_cleaned_by_nbdev_clean(nb):
    "After executing, nbdev-clean must have run: no execution counts or timings, only `tags` in cell metadata."
    nbj = json.loads(nb.read_text())
    for c in nbj['cells']:
        assert set(c.get('metadata', {})) <= {'tags'}, f"{nb.name}: cell {c.get('id')} metadata {sorted(c['metadata'])}"
        if c['cell_type'] == 'code':
            assert c.get('execution_count') is None, f"{nb.name}: execution counts left; run nbdev-clean"
            assert all(o.get('execution_count') is None for o in c.get('outputs', []) if 'execution_count' in o), nb.name
    assert set(nbj['metadata']) <= {'kernelspec', 'jupytext'}, f"{nb.name}: notebook metadata {sorted(nbj['metadata'])}"
