"""The package's layers point down: no import cycle inside `wsss_nb` (module-level and function-level imports both
count), and the lower layers never reach up into the runners.

Edges are read from the source with `ast` (every `import` / `from ... import` anywhere in a module, including inside
functions), so a lazy import cannot hide a cycle. `from pkg import name` counts as an edge to `pkg.name` when that is a
module, else to `pkg`. Importing a submodule runs its package's `__init__` first; that implicit edge is not counted (a
package that re-exports its submodules would otherwise always form a 'cycle' with them)."""
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).parents[1]/'wsss_nb'

def _modules()->dict:
    "module name -> file, for every module of the package (`_modidx` is generated and imports nothing)."
    out = {}
    for f in PKG.rglob('*.py'):
        parts = list(f.relative_to(PKG.parent).with_suffix('').parts)
        if parts[-1] == '__init__': parts = parts[:-1]
        if parts[-1] != '_modidx': out['.'.join(parts)] = f
    return out

def _resolve(mod:str, is_pkg:bool, level:int, name:str)->str:
    if level == 0: return name
    base = mod.split('.') if is_pkg else mod.split('.')[:-1]
    base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([name] if name else []))

def import_graph()->dict:
    mods = _modules(); graph = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == '__init__.py'
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.Import): targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(m, is_pkg, node.level, node.module or '')
                targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods and '.' in t: t = t.rsplit('.', 1)[0]   # `import a.b.c` of a non-module tail
                if t in mods and t != m: graph[m].add(t)
    return graph

def find_cycle(graph:dict):
    "One cycle as a list of modules, or None."
    state, stack = {}, []
    def visit(n):
        state[n] = 1; stack.append(n)
        for t in sorted(graph[n]):
            if state.get(t) == 1: return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)): return c
        state[n] = 2; stack.pop()
    for n in sorted(graph):
        if n not in state and (c := visit(n)): return c

def test_graph_sees_the_package():
    g = import_graph()
    assert {'wsss_nb.core', 'wsss_nb.stages.train_cls', 'wsss_nb.refine.crf', 'wsss_nb.methods.l2g'} <= set(g)
    assert 'wsss_nb.core' in g['wsss_nb.stages.train_cls'] and 'wsss_nb.stages.common' in g['wsss_nb.stages.train_cls']
    assert 'wsss_nb.refine.crf' in g['wsss_nb.deeplab']          # a function-level import is an edge too

def test_cycle_detector_finds_a_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None

def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)

TOP = {'wsss_nb.cli', 'wsss_nb.__main__', 'wsss_nb.distributed', 'wsss_nb.compare', 'wsss_nb.docs'}   # the CLI (and `python -m wsss_nb`) and the runners

@pytest.mark.parametrize('rule', [
    ('wsss_nb.params', set()),                                        # the bottom (schema, plan, errors; no torch) imports nothing of the package
    ('wsss_nb.core', {'wsss_nb.params'}),
    ('wsss_nb.dist', {'wsss_nb.core'}),
    ('wsss_nb.cam', {'wsss_nb.core', 'wsss_nb.dist', 'wsss_nb.data', 'wsss_nb.photos', 'wsss_nb.backbones'}),   # the CAM lesson needs no DeepLab; photos is data
])
def test_low_layers_import_only_below(rule):
    mod, allowed = rule
    assert import_graph()[mod] <= allowed, f'{mod} imports {sorted(import_graph()[mod] - allowed)}'

def test_nothing_below_the_top_imports_the_top():
    g = import_graph()
    bad = {m: sorted(g[m] & TOP) for m in g if m not in TOP and g[m] & TOP}
    assert not bad, f'modules below the CLI/runners import them: {bad}'
