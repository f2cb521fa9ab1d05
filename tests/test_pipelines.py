"""End to end: every pipeline notebook run through papermill with smoke parameters, asserting on the files it wrote.

The stage notebooks run in order on one scratch run (each reads the previous stage's files); the run-all driver then
runs over the same run and must skip every finished stage; changing one parameter reruns that stage and what follows."""
import json, math, re
from pathlib import Path
import papermill as pm
import pytest
from conftest import PIPELINES

pytestmark = pytest.mark.slow   # every test runs pipeline notebooks in Jupyter kernels (papermill)

SMOKE = dict(run='smoke', dataset='synthetic', make_data=False, cls_epochs=1, cls_batch_size=8, cls_crop_size=64,
             cam_scales=[1.0, 0.5], seg_iters=10, seg_batch_size=4, seg_crop_size=64, seg_rates=[2, 4, 6, 8])

def _run(nb, tmp, params, out_name=None):
    "Execute one pipeline notebook with papermill, passing only the parameters it declares."
    src = PIPELINES/f'{nb}.ipynb'
    declared = pm.inspect_notebook(str(src))
    sub = {k: v for k, v in params.items() if k in declared}
    out = tmp/'executed'/(out_name or f'{nb}.ipynb')
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(src), str(out), parameters=sub, kernel_name='python3', progress_bar=False, cwd=str(PIPELINES))
    return out

@pytest.fixture(scope='module')
def smoke_run(smoke_data, tmp_path_factory):
    "Run stages 01..05 in order; returns (params, run folder)."
    tmp = tmp_path_factory.mktemp('pipeline')
    params = dict(SMOKE, data_root=str(smoke_data), out_root=str(tmp/'outputs'))
    for nb in ['01_train_cls', '02_make_cams', '03_make_pseudo']: _run(nb, tmp, params)
    _run('04_train_seg', tmp, dict(params, seg_labels='pseudo'))
    _run('04_train_seg', tmp, dict(params, seg_labels='gt'), out_name='04_train_seg_gt.ipynb')
    _run('05_evaluate', tmp, params)
    return params, tmp/'outputs'/'smoke', tmp

def _done(run, stage): return json.loads((run/stage/'_done.json').read_text())

def test_classifier_stage(smoke_run):
    _, run, _ = smoke_run
    s = _done(run, 'cls')['summary']
    assert math.isfinite(s['final_loss']) and s['final_loss'] > 0
    assert (run/'cls'/'model.pt').stat().st_size > 1e6 and (run/'cls'/'loss.png').is_file()

def test_cam_stage(smoke_run):
    import numpy as np
    _, run, _ = smoke_run
    files = sorted((run/'cams').glob('*.npz'))
    assert len(files) == 16
    z = np.load(files[0])
    assert z['cam'].dtype == np.float16 and z['cam'].shape[1:] == (64, 64) and len(z['keys']) == z['cam'].shape[0] >= 1
    assert 0 <= z['cam'].min() and z['cam'].max() <= 1
    sc = json.loads((run/'cams'/'scores.json').read_text())
    assert 0 < sc['best_miou'] <= 1 and sc['best_miou'] == max(sc['mious'])

def test_pseudo_stage(smoke_run):
    import numpy as np
    from PIL import Image
    _, run, _ = smoke_run
    labels = sorted((run/'pseudo'/'labels').glob('*.png'))
    assert len(labels) == 16 and len(list((run/'pseudo'/'before').glob('*.png'))) == 16
    values = set(np.unique(np.concatenate([np.unique(np.array(Image.open(p))) for p in labels])).tolist())
    assert values <= set(range(9)) | {255}, values   # synthetic: background + 8 classes
    s = _done(run, 'pseudo')['summary']
    assert 0 < s['miou_before'] <= 1 and 0 < s['miou_after'] <= 1

def test_scores_and_report(smoke_run):
    _, run, _ = smoke_run
    sc = json.loads((run/'scores.json').read_text())
    for k in ('cam_miou', 'pseudo_miou_before_refine', 'pseudo_miou_after_refine', 'seg_miou', 'seg_gt_miou', 'seg_ratio_to_gt'):
        assert k in sc and math.isfinite(sc[k]), k
    assert 0 <= sc['seg_miou'] <= 1 and 0 <= sc['seg_gt_miou'] <= 1
    assert sc['seg_ratio_to_gt'] == pytest.approx(sc['seg_miou']/sc['seg_gt_miou'])
    report = (run/'report.md').read_text()
    assert 'Pseudo-label mIoU after refinement' in report
    images = re.findall(r'^!\[.*\]\((.+)\)$', report, flags=re.M)
    assert len(images) >= 6, images
    for img in images:
        assert (run/img).is_file(), img

def test_run_all_skips_finished_stages_and_reruns_changed_ones(smoke_run):
    params, run, tmp = smoke_run
    before = {s: _done(run, s)['fingerprint'] for s in ('cls', 'cams', 'pseudo', 'seg_pseudo', 'seg_gt')}
    mtime = (run/'cls'/'model.pt').stat().st_mtime_ns
    _run('00_run_all', tmp, dict(params, train_gt_bound=True))
    assert (run/'cls'/'model.pt').stat().st_mtime_ns == mtime          # skipped, not retrained
    assert (run/'notebooks'/'05_evaluate.ipynb').is_file() and (run/'notebooks'/'gt_bound'/'04_train_seg.ipynb').is_file()
    # change one pseudo-label parameter: pseudo and seg_pseudo rerun, the classifier and CAMs do not
    _run('00_run_all', tmp, dict(params, pseudo_bg_threshold=0.3))
    after = {s: _done(run, s)['fingerprint'] for s in before}
    assert after['cls'] == before['cls'] and after['cams'] == before['cams'] and after['seg_gt'] == before['seg_gt']
    assert after['pseudo'] != before['pseudo'] and after['seg_pseudo'] != before['seg_pseudo']
    assert _done(run, 'pseudo')['summary']['bg_threshold'] == 0.3
    assert (run/'cls'/'model.pt').stat().st_mtime_ns == mtime

def test_training_seed_is_independent_of_the_dataset_seed(smoke_data, tmp_path):
    "Another training `seed` on an existing synthetic dataset trains on it (the generator seed is `synth_seed`)."
    meta = (smoke_data/'synthetic.json').read_text()
    params = dict(SMOKE, run='seed1', seed=1, make_data=True, synth_n_train=16, synth_n_val=6, synth_size=64, synth_seed=0,
                  data_root=str(smoke_data), out_root=str(tmp_path/'outputs'), max_images=4)
    _run('01_train_cls', tmp_path, params)
    assert _done(tmp_path/'outputs'/'seed1', 'cls')['summary']['steps'] >= 1
    assert (smoke_data/'synthetic.json').read_text() == meta

def _copy_run(run, tmp_path):
    "A copy of the smoke run under a new out_root, so a test can rerun a stage without touching the shared one."
    import shutil
    out = tmp_path/'outputs'; shutil.copytree(run, out/'smoke'); return out

def test_eval_crf_also_scores_the_network_alone(smoke_run, tmp_path):
    "With eval_crf the stage scores the raw predictions in the same pass: they equal an evaluation without the CRF."
    from wsss_nb.stages import evaluate
    params, run, _ = smoke_run
    out = _copy_run(run, tmp_path)
    before = json.loads((out/'smoke'/'scores.json').read_text())
    assert 'seg_miou_no_crf' not in before and before.get('eval_crf') is None
    sc = evaluate(run='smoke', out_root=out, dataset='synthetic', data_root=params['data_root'], crf=True, progress=False)
    assert sc['eval_crf'] == 'deeplab_rgb'                 # true: deeplab-pytorch's parameters on the RGB image
    assert sc['seg_miou_no_crf'] == pytest.approx(before['seg_miou']) and sc['seg_gt_miou_no_crf'] == pytest.approx(before['seg_gt_miou'])
    assert (out/'smoke'/'eval'/'scores_seg_gt_no_crf.json').is_file()
    assert 'without the test-time CRF' in (out/'smoke'/'report.md').read_text()
    sc2 = evaluate(run='smoke', out_root=out, dataset='synthetic', data_root=params['data_root'], crf='deeplab', absent='ignore',
                   pred255='background', progress=False)                 # the originals' conventions: a new evaluation
    assert (sc2['eval_crf'], sc2['eval_absent'], sc2['eval_pred255']) == ('deeplab', 'ignore', 'background')
    assert sc2['seg_miou_no_crf'] >= sc['seg_miou_no_crf'] - 1e-9     # 'ignore' only drops classes (IoU 0) from the mean

def test_saliency_crf_refiner_ignores_where_the_cues_disagree(smoke_run, tmp_path):
    "refiner 'saliency_crf' in the pseudo stage: 255 exactly where the saliency rule and the CRF labels differ."
    import numpy as np
    from wsss_nb.stages import make_pseudo_labels
    from wsss_nb.cam import load_cams
    from wsss_nb.data import get_dataset, load_mask, load_saliency
    from wsss_nb.pseudo import saliency_labels
    from wsss_nb.refine.crf import crf_labels
    params, run, _ = smoke_run
    out = _copy_run(run, tmp_path)
    st = make_pseudo_labels(run='smoke', out_root=out, dataset='synthetic', data_root=params['data_root'], refiner='saliency_crf', progress=False)
    s = st.summary(); assert s['refiner'] == 'saliency_crf' and 0 < s['miou_after'] <= 1
    ds = get_dataset('synthetic', params['data_root'], 'train'); thr = s['bg_threshold']; n255 = 0
    for i in ds.ids[:4]:
        image, _ = ds.load_raw(i); keys, cams = load_cams(out/'smoke'/'cams'/f'{i}.npz'); cams = cams.astype(np.float32)
        sal = saliency_labels(cams, keys, load_saliency(ds.saliency_path(i), size=image.shape[:2]), variant='oaa')
        crf = crf_labels(image, cams, keys, bg_threshold=thr)
        lab = load_mask(out/'smoke'/'pseudo'/'labels'/f'{i}.png')
        np.testing.assert_array_equal(lab, np.where(sal == crf, sal, 255)); n255 += (lab == 255).sum()
    assert n255 > 0
