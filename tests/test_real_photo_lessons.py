"The committed outputs of the real-photo lessons hold their real-photo figures and printed scores (issue 18 point 2)."
import json, re
import pytest
from conftest import ROOT

NBS = ROOT/'nbs'
# notebook -> printed markers of its real-photo cells (each must be in a code cell whose output, or the next code cell's, has a figure)
MARKERS = {
    '02a_photos': [r'\d+ photos \((with|without) the 9 VOC pairs\)'],
    '04_cam': [r"raw peak of the VOC 'cat' map: [\d.]+ on the cat photo", r'real photos with masks.*mIoU [\d.]+% \(all background: [\d.]+%\)',
               r'raw peaks: \w+ \(absent\)'],
    '06_pseudo': [r'real photos: mIoU peaks at tau = [\d.]+ \([\d.]+%; all background [\d.]+%\)'],
    '06b_refine.crf': [r'real photos, real CAMs, tau = [\d.]+: none [\d.]+%, crf_deeplab [\d.]+%'],
    '16_rw': [r'mIoU vs the real mask: CAM > 0.3 [\d.]+%, RW, untrained head [\d.]+%, RW, trained head [\d.]+%',
              r'learned: AffinityNet head on one real photo \(16_rw\): .*\(down\).*\(above\)'],
}

def _cells(stem): return [c for c in json.loads((NBS/f'{stem}.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
def _text(c): return ''.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')) for o in c.get('outputs', []))
def _has_png(c): return any('image/png' in o.get('data', {}) for o in c.get('outputs', []))

@pytest.mark.parametrize('stem', list(MARKERS))
def test_real_photo_outputs_committed(stem):
    cells = _cells(stem)
    for pat in MARKERS[stem]:
        hits = [i for i, c in enumerate(cells) if re.search(pat, _text(c))]
        assert hits, f'{stem}: no committed output matches {pat!r}; re-execute the notebook'
        i = hits[0]
        assert any(_has_png(c) for c in cells[i:i + 2]), f'{stem}: the cell printing {pat!r} (or the next) has no figure'

@pytest.mark.parametrize('stem', list(MARKERS))
def test_no_warnings_or_temp_paths(stem):
    for c in _cells(stem):
        for o in c.get('outputs', []):
            assert o.get('name') != 'stderr', f'{stem}: stderr output {"".join(o.get("text", ""))[:200]!r}'
            t = _text({'outputs': [o]})
            assert 'Warning' not in t and '/tmp/' not in t, f'{stem}: {t[:200]!r}'

def test_real_photo_figures_are_readable():
    "Figures of the real-photo cells are drawn at >= 110 dpi (the figure's pixel width / its inch width)."
    import base64, io
    from PIL import Image
    for stem in MARKERS:
        for c in _cells(stem):
            src = ''.join(c['source'])
            if 'dpi=110' not in src: continue
            for o in c.get('outputs', []):
                if 'image/png' in o.get('data', {}):
                    w, h = Image.open(io.BytesIO(base64.b64decode(o['data']['image/png']))).size
                    assert w >= 2*110, f'{stem}: figure {w}x{h} px is too small'
