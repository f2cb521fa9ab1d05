"""The method template walks: the toy method made from `nbs/_template_method.ipynb` (its exported cells, as
`nbdev-export` would write them for a copy of the notebook) registers itself and runs through every stage on the smoke
dataset, in a fresh process (so the toy stays out of this process's method registry); its lesson cells run too."""
import json, subprocess, sys, textwrap
import pytest
from conftest import ROOT

TEMPLATE = ROOT/'nbs'/'_template_method.ipynb'

def _cells(): return [''.join(c['source']) for c in json.loads(TEMPLATE.read_text())['cells'] if c['cell_type'] == 'code']

def test_template_has_the_checklist():
    md = ''.join(''.join(c['source']) for c in json.loads(TEMPLATE.read_text())['cells'] if c['cell_type'] == 'markdown')
    for item in ('Register', 'Hyperparameters', 'Override only what differs', 'Lessons', 'Configs', 'Test', 'References'):
        assert item in md, item

@pytest.mark.slow
def test_toy_method_from_the_template_runs_through_all_stages(smoke_data, tmp_path):
    code = [c for c in _cells() if c.startswith('#| export')]
    assert len(code) >= 2, 'the template must export its imports and its method'
    (tmp_path/'toy_method.py').write_text('\n\n'.join(code))
    lessons = [c for c in _cells() if not c.startswith('#|')]
    (tmp_path/'toy_lessons.py').write_text('from toy_method import *\nfrom fastcore.test import *\n' + '\n\n'.join(lessons))
    cfg = dict(run='toy', out_root=str(tmp_path/'out'), dataset='synthetic', data_root=str(smoke_data), make_data=False,
               method='toy', method_args={'sparsity': 0.05}, pretrained=None, seg_pretrained=None, cls_epochs=1,
               cls_batch_size=4, cls_crop_size=48, cam_scales=[1.0], pseudo_bg_threshold=0.3, refiner='none',
               seg_iters=3, seg_batch_size=4, seg_crop_size=48, seg_rates=[1, 2], seg_msc=False, eval_max_images=3,
               train_gt_bound=False, device='cpu', amp=False, num_workers=0)
    script = textwrap.dedent(f'''
        import json, toy_method
        from wsss_nb.cam import methods
        from wsss_nb.distributed import run_stages
        assert 'toy' in methods.names()
        print(json.dumps(run_stages({cfg!r}, progress=False)))''')
    env = dict(__import__('os').environ, PYTHONPATH=f'{tmp_path}:{ROOT}')
    r = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    scores = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 <= scores['cam_miou'] <= 1 and 0 <= scores['seg_miou'] <= 1
    assert (tmp_path/'out'/'toy'/'cls'/'_done.json').is_file() and len(list((tmp_path/'out'/'toy'/'cams').glob('*.npz'))) == 16
    r = subprocess.run([sys.executable, 'toy_lessons.py'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
