"The Group-WSSS and L2G lessons are committed with their mechanism figures, drawn from runs that passed `learning_check`."
import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def _cells(nb): return [c for c in json.loads((ROOT/'nbs'/f'{nb}.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
def _text(c): return ''.join(''.join(o.get('text', '')) for o in c.get('outputs', []))
def _has_png(c): return any('image/png' in o.get('data', {}) for o in c.get('outputs', []))

# notebook -> (source fragment of each mechanism-figure cell, number of learned: lines of its toy runs)
MECH = {'13_group': (["step = gm['trace'][0]", 'strangers = '], 2),
        '15_l2g': (['return_parts=True', 'cda_paste(X[i], SAL[i]'], 2)}

@pytest.mark.parametrize('nb', sorted(MECH))
def test_mechanism_figures_committed(nb):
    cells, (frags, n_learned) = _cells(nb), MECH[nb]
    for frag in frags:
        hits = [c for c in cells if frag in ''.join(c['source'])]
        assert hits, f'{nb}: no cell contains {frag!r}'
        assert any(_has_png(c) for c in hits), f'{nb}: the cell with {frag!r} has no committed figure; execute the notebook'
    learned = [l for c in cells for l in _text(c).splitlines() if l.startswith('learned: ')]
    assert len(learned) >= n_learned, f'{nb}: {len(learned)} learned: lines, expected {n_learned}'
    for l in learned:
        assert '(down)' in l and '(above)' in l, f'{nb}: a run did not learn: {l}'

@pytest.mark.parametrize('nb', sorted(MECH))
def test_mechanism_outputs_clean(nb):
    for c in _cells(nb):
        for o in c.get('outputs', []):
            assert o.get('output_type') != 'error' and o.get('name') != 'stderr', f'{nb}: error or stderr output'
            t = ''.join(o.get('text', ''))
            assert 'Warning' not in t and not re.search(r'/tmp/|tmp[a-z0-9_]{6,}', t), f'{nb}: warning or temp path in {t[:200]!r}'
