"""The demo's real results on a few val images, for the pipeline lessons (`nbs/09_stages` and `09b`-`09f`).

The pipeline lessons cannot train the demo's networks inside their 2-minute budget (the demo takes about 10 minutes
on an idle 2-core machine), so they load this small result instead of a run of their own:

    python benchmarks/demo_lesson_results.py            # runs `wsss-nb run configs/demo.yaml` first (skipped if done)

It (1) runs `configs/demo.yaml` through the pipeline (stages already done with the same parameters are skipped), (2)
takes the run's trained classifier, refiner and DeepLab-v2 networks and, with the run's own recipe (CAM scales and
flip, background threshold, refiner, evaluation scales and test-time CRF), computes on **every** val image the CAMs,
the pseudo-labels before and after refinement and both networks' predictions, scores each against the val masks,
and (3) writes

- `benchmarks/results/demo_lesson.json`: the config it ran (`config`, compared with `configs/demo.yaml` by
  `tests/test_lessons_learned.py`, as is the synthetic generator's version in `data`), the run's own `scores.json`, the val scores of each step, the all-background
  floors, the per-step training losses of the classifier and of both DeepLab-v2 networks, and the ids shown;
- `benchmarks/results/demo_lesson.npz`: for the first `--n-images` val images, the image, its CAMs (uint8, x255),
  both pseudo-labels, both predictions and the mask.

The val segmentation scores are recomputed here and must equal the run's `eval/` scores (checked below), so the
lesson's numbers are the run's numbers. The README's demo table is generated from the same record (one run, one set of
numbers; `tests/test_readme.py` checks it):

    python benchmarks/demo_lesson_results.py --readme   # rewrite README.md's demo block from demo_lesson.json (runs nothing)
"""
import argparse, datetime, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'

def run_demo(config:Path, run:str):
    "The pipeline on `config` (papermill, like `wsss-nb run`); finished stages are skipped."
    subprocess.run([sys.executable, '-m', 'wsss_nb.cli', 'run', str(config), f'run={run}', '--quiet'], check=True, cwd=ROOT)

def _params(rd:Path, stage:str)->dict: return json.loads((rd/stage/'_params.json').read_text())['params']

def _losses(rd:Path, stage:str)->list:
    f = rd/stage/'history.json'
    return [round(float(h['loss']), 5) for h in json.loads(f.read_text())] if f.is_file() else None

def extract(rd:Path, n_images:int=4, device:str='cpu')->tuple:
    "(json dict, npz arrays) of the finished run in folder `rd`."
    from wsss_nb.cam import MethodContext, normalize_cams
    from wsss_nb.data import load_saliency
    from wsss_nb.metrics import ConfusionMeter, all_background_floor
    from wsss_nb.pseudo import threshold_labels
    from wsss_nb.refine import get_refiner
    from wsss_nb.refine.crf import crf_image
    from wsss_nb.deeplab import crf_postprocess
    from wsss_nb.stages.common import _dataset, _without_masks
    from wsss_nb.stages.train_cls import load_classifier
    from wsss_nb.stages.train_seg import load_segmenter
    from wsss_nb.stages.evaluate import EVAL_CRF, _predict_probs
    dev = torch.device(device)
    pc, pp, pe = _params(rd, 'cams'), _params(rd, 'pseudo'), _params(rd, 'eval')
    thr = json.loads((rd/'pseudo'/'_done.json').read_text())['summary']['bg_threshold']
    refine = get_refiner(pp['refiner'], **pp['refiner_args'])
    ds = _dataset(pe['dataset'], pe['data_root'], pe['split'], pp['saliency_dir'], refine.needs_saliency)
    train = _dataset(pc['dataset'], pc['data_root'], pc['split'])
    wsss, cls_model, meta = load_classifier(rd/'cls'/'model.pt', dev)
    ctx = MethodContext(dataset=_without_masks(ds), device=dev, amp=False, scales=tuple(pc['scales']), flip=pc['flip'],
                        cls_dir=rd/'cls')
    segs = {n: load_segmenter(rd/n/'model.pt', dev)[0] for n in ('seg_pseudo', 'seg_gt') if (rd/n/'model.pt').is_file()}
    C = ds.num_classes
    meters = {k: ConfusionMeter(C) for k in ('cam', 'before', 'after', *segs, *(f'{n}_no_crf' for n in segs))}
    arrays, ids, keys_shown, gts = {}, [], [], []
    for i in range(len(ds)):
        s = ds[i]; image, gt = s['raw'], s['mask'].numpy(); gts.append(gt)
        keys = torch.nonzero(s['label']).flatten()
        ctx.index, ctx.label = i, s['label']
        with torch.inference_mode(): cams = wsss.infer(cls_model, s['image'], ctx)
        cam = normalize_cams(cams[keys.to(cams.device)].float()).cpu().numpy().astype(np.float16).astype(np.float32)  # as the CAM files
        keys = keys.numpy()
        sal = load_saliency(ds.saliency_path(s['id']), size=image.shape[:2]) if refine.needs_saliency else None
        before = threshold_labels(cam, keys, thr)
        after = refine(image, cam, keys, bg_threshold=thr, saliency=sal)
        meters['cam'].update(before, gt); meters['before'].update(before, gt); meters['after'].update(after, gt)
        preds = {}
        for n, model in segs.items():
            with torch.inference_mode(): probs = _predict_probs(model, s['image'], pe['scales'], pe['flip'], dev, False)
            meters[f'{n}_no_crf'].update(probs.argmax(0), gt)
            if pe['crf']:
                preset, mode = EVAL_CRF[pe['crf']]
                probs = crf_postprocess(crf_image(image, mode), probs, preset=preset)
            preds[n] = probs.argmax(0).astype(np.uint8); meters[n].update(preds[n], gt)
        if i < n_images:
            k = len(ids); ids.append(s['id']); keys_shown.append(keys.tolist())
            arrays.update({f'image_{k}': image, f'cam_{k}': np.round(cam*255).astype(np.uint8), f'before_{k}': before,
                           f'after_{k}': np.asarray(after, np.uint8), f'gt_{k}': gt.astype(np.uint8),
                           **{f'{n}_{k}': p for n, p in preds.items()}})
    val = {k: float(m.scores(ds.class_names)['miou']) for k, m in meters.items()}
    run_scores = json.loads((rd/'scores.json').read_text())
    for n, key in (('seg_pseudo', 'seg_miou'), ('seg_gt', 'seg_gt_miou')):   # the run's own evaluation, recomputed
        if n in segs and abs(val[n] - run_scores[key]) > 1e-6:
            raise SystemExit(f"{n}: val mIoU recomputed {val[n]:.6f} != the run's {run_scores[key]:.6f}: not the run's recipe")
    meta = Path(pc['data_root'])/'synthetic.json'          # the generated dataset's parameters and generator version
    out = dict(data=json.loads(meta.read_text()) if meta.is_file() else None, val=val, floor_val=all_background_floor(gts, C),
               floor_train=all_background_floor((train.load_raw(i)[1] for i in train.ids), C),
               scores=run_scores, bg_threshold=thr, refiner=pp['refiner'], eval_crf=pe['crf'],
               cam_scales=pc['scales'], cam_flip=pc['flip'], eval_split=pe['split'], n_val=len(ds), n_train=len(train),
               losses={n: _losses(rd, n) for n in ('cls', 'seg_pseudo', 'seg_gt')},
               ids=ids, keys=keys_shown, class_names=list(ds.class_names))
    return out, arrays

README_BEGIN = ('<!-- demo scores: generated by `python benchmarks/demo_lesson_results.py --readme` from '
                'benchmarks/results/demo_lesson.json; do not edit -->')
README_END = '<!-- /demo scores -->'

def readme_block(info:dict)->str:
    "The README's demo table (between `README_BEGIN` and `README_END`) from a `demo_lesson.json` record."
    s, pc = info['scores'], lambda v: f"{100*v:.1f}"
    ratio_no_crf = s['seg_miou_no_crf'] / s['seg_gt_miou_no_crf']
    return '\n'.join([
        README_BEGIN,
        f"Scores of `{info['config_file']}` (seed {info['config'].get('seed', 0)}), from the committed record "
        f"`benchmarks/results/demo_lesson.json` that the pipeline lessons (`09_stages`, `09b`–`09f`) print: made with "
        f"`{info['command']}` (run `{info['run']}`) on {info['created']} (torch {info['torch']}, {info['torch_threads']} CPU "
        f"thread(s)). mIoU %; CAM at the best background threshold ({s['cam_best_threshold']:g}); pseudo-labels scored on the "
        f"{info['n_train']} train images, every 255 pixel counted as a miss; DeepLab-v2 on the {info['n_val']} {info['eval_split']} "
        f"images, with its test-time CRF and, in brackets, without:",
        '',
        '| seed | refiner | CAM | pseudo-labels before → after refinement | DeepLab-v2 on pseudo-labels | DeepLab-v2 on ground truth | weak / full |',
        '|---|---|---|---|---|---|---|',
        f"| {info['config'].get('seed', 0)} | `{s['refiner']}` (the demo) | {pc(s['cam_miou'])} | {pc(s['pseudo_miou_before_refine'])} → "
        f"{pc(s['pseudo_miou_after_refine'])} | **{pc(s['seg_miou'])}** ({pc(s['seg_miou_no_crf'])}) | {pc(s['seg_gt_miou'])} "
        f"({pc(s['seg_gt_miou_no_crf'])}) | {s['seg_ratio_to_gt']:.2f} ({ratio_no_crf:.2f}) |",
        README_END])

def update_readme(readme:Path, info:dict)->bool:
    "Replace the demo block of `readme` with `readme_block(info)`; True if the file changed."
    text = readme.read_text()
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise SystemExit(f"{readme}: expected one demo block ({README_BEGIN!r} ... {README_END!r})")
    i, j = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    new = text[:i] + readme_block(info) + text[j:]
    if new != text: readme.write_text(new)
    return new != text

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--config', default='configs/demo.yaml', help='the demo config (relative to the project root)')
    ap.add_argument('--run', default='demo', help='run name under out_root (default: the config\'s)')
    ap.add_argument('--n-images', type=int, default=4, help='val images stored for the figures')
    ap.add_argument('--no-run', action='store_true', help='do not (re)run the pipeline; extract from the finished run')
    ap.add_argument('--dest', default=str(RESULTS), help='folder of demo_lesson.json / .npz')
    ap.add_argument('--run-dir', default=None, help='extract from this finished run folder instead (implies --no-run; for testing the script)')
    ap.add_argument('--readme', action='store_true', help="only rewrite README.md's demo table from the record in --dest (runs nothing)")
    a = ap.parse_args(argv)
    if a.readme:
        changed = update_readme(ROOT/'README.md', json.loads((Path(a.dest)/'demo_lesson.json').read_text()))
        print(f"README.md demo table {'updated' if changed else 'already current'} from {Path(a.dest)/'demo_lesson.json'}"); return
    from wsss_nb.core import load_config, resolve_path, run_dir
    cfg = load_config(ROOT/a.config)
    if not (a.no_run or a.run_dir): run_demo(ROOT/a.config, a.run)
    rd = Path(a.run_dir) if a.run_dir else run_dir(resolve_path(cfg.get('out_root', 'outputs')), a.run)
    out, arrays = extract(rd, a.n_images)
    out = dict(command='python benchmarks/demo_lesson_results.py', config_file=a.config, config=cfg, run=a.run,
               torch_threads=torch.get_num_threads(), torch=torch.__version__,
               created=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), **out)
    dest = Path(a.dest); dest.mkdir(parents=True, exist_ok=True)
    (dest/'demo_lesson.json').write_text(json.dumps(out, indent=1) + '\n')
    np.savez_compressed(dest/'demo_lesson.npz', **arrays)
    print({k: round(100*v, 1) for k, v in out['val'].items()}, f"floor {100*out['floor_val']:.1f}")
    print(f"wrote {dest/'demo_lesson.json'} and {dest/'demo_lesson.npz'}; now `python benchmarks/demo_lesson_results.py --readme`")

if __name__ == '__main__': main()
