"""Each pipeline stage's loop against the bare network step on the same device, in the same run.

For every stage the script times (a) the *bare step*: the network alone on a batch already on the device (forward +
backward + SGD step for training, forward passes for inference, the refiner on in-memory arrays for pseudo-labels),
and (b) the *stage loop*: the stage function of `wsss_nb.stages` on a generated dataset, with its data loading,
augmentation, logging, checkpoints and file writes. It prints images/s of both and their ratio (the target on a GPU is
>= 70 % for the classifier and DeepLab-v2). With `--project` it also projects the wall time of
`configs/voc12_cam.yaml` end to end from the stage loops' rates measured here.

    python benchmarks/bench_pipeline.py --size demo --device cpu
    python benchmarks/bench_pipeline.py --size voc --device cuda --project     # ResNet-50 cls @512, ResNet-101 DeepLab-v2 @321
    python benchmarks/bench_pipeline.py --size demo --device cuda --profile    # + torch.profiler top 15 ops of the slowest loop

`--profile` runs the stage loop furthest below its bare step (lowest loop / bare; of classifier, CAMs, pseudo-labels and
DeepLab-v2, or `--profile-stage`) once more under
`torch.profiler` and prints its top 15 operators by self CUDA time (on CUDA) and by self CPU time; `--profile-out DIR`
also writes both tables there (`profile_<size>.txt`).

Sizes: `demo` = the synthetic 128-px set with EfficientNet-Lite0 (the demo's networks); `voc` = a generated
VOC-layout set of 500x375 / 375x500 JPEGs with ResNet-50 (classifier, 512 crops) and ResNet-101 DeepLab-v2 OS8 (321
crops), random init (no download). Weights are random, so only speed is measured, never scores.
"""
import argparse, math, shutil, tempfile, time
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from wsss_nb.core import configure_determinism, get_device, load_config, resolve_path
from wsss_nb.data import save_mask
from wsss_nb.backbones import get_backbone
from wsss_nb.cam import get_method, infer_cams
from wsss_nb.deeplab import build_deeplab, msc_loss, predict
from wsss_nb.refine import get_refiner
from wsss_nb.stages import train_classifier, make_cams, make_pseudo_labels, train_segmentation, evaluate

SIZES = dict(  # per size: image side, then (backbone, crop, batch on (cpu, cuda)) and DeepLab-v2 (... , ASPP rates, output stride)
    demo=dict(side=None, cls=('efficientnet_lite0', 128, (16, 16)), seg=('efficientnet_lite0', 128, (8, 8), [1, 2, 3, 4], 16)),
    voc=dict(side=(500, 375), cls=('resnet50', 512, (2, 16)), seg=('resnet101', 321, (2, 10), [6, 12, 18, 24], 8)))
TINY = dict(  # `--tiny`: the same networks and code paths at a quarter (VOC) / half (demo) of the side, for a CPU check run
    demo=dict(side=None, synth=64, cls=('efficientnet_lite0', 64, (16, 16)), seg=('efficientnet_lite0', 64, (8, 8), [1, 2, 3, 4], 16)),
    voc=dict(side=(125, 94), cls=('resnet50', 128, (2, 16)), seg=('resnet101', 81, (2, 10), [6, 12, 18, 24], 8)))

def make_voc_like(root:Path, n:int, seed:int=0, side=(500, 375))->Path:
    "A VOC-layout set (JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt) of 500x375 / 375x500 images (or `side`)."
    rng = np.random.default_rng(seed)
    for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'): (root/d).mkdir(parents=True, exist_ok=True)
    ids = [f'2007_{i:06d}' for i in range(n)]
    for k, i in enumerate(ids):
        W, H = side if k % 3 else side[::-1]
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8); mask = np.zeros((H, W), np.uint8)
        for _ in range(rng.integers(1, 4)):
            c = int(rng.integers(1, 21)); y, x = rng.integers(0, H - 80), rng.integers(0, W - 80)
            h, w = rng.integers(60, H - y + 1), rng.integers(60, W - x + 1)
            mask[y:y + h, x:x + w] = c; img[y:y + h, x:x + w] = (img[y:y + h, x:x + w] // 2 + c * 6).astype(np.uint8)
        mask[mask.shape[0] // 2, :] = 255   # a VOC-style ignore line
        Image.fromarray(img).save(root/'JPEGImages'/f'{i}.jpg', quality=90); save_mask(mask, root/'SegmentationClass'/f'{i}.png')
    for split in ('train', 'val'): (root/'ImageSets'/'Segmentation'/f'{split}.txt').write_text('\n'.join(ids) + '\n')
    return root

def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def _add(rows:list, peaks:list, row:tuple):
    "Append (stage, bare images/s, loop images/s) and print it at once (a run cut short by a timeout keeps its rows)."
    rows.append(row); pk = peaks[len(rows) - 1] if len(peaks) >= len(rows) else None
    print(f'[bench_pipeline] {row[0]}: bare {row[1]:.2f} images/s, loop {row[2]:.2f} images/s ({row[2]/row[1]:.0%})'
          + ('' if pk is None else f', loop peak GPU {pk:.0f} MB'), flush=True)

def _peak(dev, fn, peaks:list):
    "Run `fn`; append its peak GPU memory in MB to `peaks` (None off CUDA); return what `fn` returned."
    if dev.type == 'cuda': torch.cuda.synchronize(dev); torch.cuda.reset_peak_memory_stats(dev)
    out = fn()
    peaks.append(torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == 'cuda' else None)
    return out

REPEAT = 3  # timed calls per bare measurement (best of); `--repeat`

def _rate(fn, n_items, dev, warmup=1, repeat=None)->float:
    "Items per second of `fn` (after `warmup` calls), best of `repeat`."
    repeat = repeat or REPEAT
    for _ in range(warmup): fn()
    best = float('inf')
    for _ in range(repeat):
        _sync(dev); t0 = time.perf_counter(); fn(); _sync(dev); best = min(best, time.perf_counter() - t0)
    return n_items / best

def bare_cls(backbone, batch, crop, dev, amp):
    from wsss_nb.core import autocast
    m = get_method('cam'); net = m.build_model(get_backbone(backbone, pretrained=None, output_stride=16), 20).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, crop, crop, device=dev); y = (torch.rand(batch, 20, device=dev) > 0.8).float()
    def step():
        with autocast(dev, amp): loss = m.loss(net, dict(image=x, label=y))['loss']
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return _rate(step, batch, dev)

def bare_cams(backbone, images, dev, amp, batch):
    net = get_method('cam').build_model(get_backbone(backbone, pretrained=None, output_stride=16), 20).to(dev).eval()
    x = torch.randn(batch, 3, *images, device=dev)
    return _rate(lambda: infer_cams(lambda t: net.cam(t), x, device=dev, amp=amp), batch, dev, repeat=min(2, REPEAT))

def bare_seg(backbone, batch, crop, dev, amp, rates, os_):
    from wsss_nb.core import autocast
    net = build_deeplab(backbone, 21, pretrained=None, output_stride=os_, rates=tuple(rates), msc=True).to(dev).train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, crop, crop, device=dev); y = torch.randint(0, 21, (batch, crop, crop), device=dev)
    def step():
        with autocast(dev, amp): outs = net(x); loss = msc_loss(outs if isinstance(outs, (list, tuple)) else [outs], y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return _rate(step, batch, dev)

def bare_eval(backbone, image_hw, dev, amp, rates, os_):
    net = build_deeplab(backbone, 21, pretrained=None, output_stride=os_, rates=tuple(rates), msc=True).to(dev).eval()
    x = torch.randn(3, *image_hw, device=dev)
    def run():
        with torch.inference_mode(): predict(net, x, scales=(1.0,), amp=amp)
    return _rate(run, 1, dev)

def bare_pseudo(refiner, ds, cam_dir, n, dev):
    from wsss_nb.cam import load_cams
    items = [(ds.load_raw(i)[0], *load_cams(Path(cam_dir)/f'{i}.npz')) for i in ds.ids[:n]]
    ref = get_refiner(refiner, **({'device': str(dev)} if refiner == 'crf_torch' else {}))
    if ref.batched: run = lambda: ref.batch([i for i, _, _ in items], [c for _, _, c in items], [k for _, k, _ in items], 0.3)
    else: run = lambda: [ref(im, c, k, 0.3) for im, k, c in items]
    return _rate(run, len(items), dev, repeat=min(2, REPEAT))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--size', choices=list(SIZES), default='demo')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--n-images', type=int, default=None, help='images of the generated set (default: 64 demo / 8 voc on CPU, 256 / 128 on CUDA)')
    ap.add_argument('--cls-steps', type=int, default=None, help='classifier steps of the stage loop (default: a few epochs)')
    ap.add_argument('--seg-iters', type=int, default=None, help='DeepLab-v2 iterations of the stage loop')
    ap.add_argument('--refiner', default=None, help="pseudo-label refiner (default: crf_torch on CUDA, crf on CPU)")
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    ap.add_argument('--repeat', type=int, default=3, help='timed calls per bare-step measurement (best of)')
    ap.add_argument('--project', action='store_true', help='project configs/voc12_cam.yaml wall time from the measured stage loops')
    ap.add_argument('--tiny', action='store_true', help='a quarter (voc) / half (demo) of the image and crop side: the CPU twin of a GPU run')
    ap.add_argument('--profile', action='store_true', help='rerun the slowest stage loop (lowest loop / bare) under torch.profiler: top 15 ops by CUDA and CPU time')
    ap.add_argument('--profile-out', default=None, help='folder for profile_<size>.txt (with --profile)')
    ap.add_argument('--profile-stage', default='auto', choices=['auto', 'classifier', 'cams', 'pseudo', 'seg', 'eval'],
                    help="stage to profile; auto: the training/CAM/pseudo loop with the lowest loop / bare (evaluation's known fixed costs excluded)")
    a = ap.parse_args(argv)
    global REPEAT
    if a.threads: torch.set_num_threads(a.threads)
    REPEAT = a.repeat
    dev = get_device(a.device); cuda = dev.type == 'cuda'; amp = cuda
    configure_determinism(None, dev)
    cfg = (TINY if a.tiny else SIZES)[a.size]; n = a.n_images or {('demo', False): 64, ('voc', False): 8, ('demo', True): 256, ('voc', True): 128}[(a.size, cuda)]
    refiner = a.refiner or ('crf_torch' if cuda else 'crf')
    cb, crop, cbs = cfg['cls']; cls_bs = cbs[cuda]
    sb, scrop, sbs, rates, os_ = cfg['seg']; seg_bs = sbs[cuda]
    tmp = Path(tempfile.mkdtemp(prefix='bench_pipeline_'))
    try:
        if cfg['side'] is None:
            from wsss_nb.synthetic import make_synthetic
            side = cfg.get('synth', 128)
            data, dataset, img_hw = make_synthetic(tmp/'data', n_train=n, n_val=max(n//4, 4), size=side, seed=0), 'synthetic', (side, side)
        else: data, dataset, img_hw = make_voc_like(tmp/'data', n, side=cfg['side']), 'voc12', cfg['side'][::-1]
        kw = dict(run='bench', out_root=tmp/'out', dataset=dataset, data_root=data, device=str(dev), amp=amp, progress=False)
        rows, peaks = [], []   # peaks: the stage loop's peak GPU memory (torch.cuda.max_memory_allocated), MB
        cls_steps = a.cls_steps or (3 if not cuda and a.size == 'voc' else max(20, 2*n // cls_bs))
        epochs = max(1, math.ceil(cls_steps / max(n // cls_bs, 1)))
        cls = lambda: train_classifier(**kw, method='cam', backbone=cb, pretrained=None, crop_size=crop, batch_size=cls_bs,
                                       epochs=epochs, num_workers=None, lr=1e-3)
        st = _peak(dev, cls, peaks)
        s = st.summary(); _add(rows, peaks, ('classifier', bare_cls(cb, cls_bs, crop, dev, amp), s['steps']*cls_bs/s['train_time_s']))
        reruns = {'classifier': ('cls', cls)}
        cams = lambda: make_cams(**kw, num_workers=None, batch_size=None)
        st = _peak(dev, cams, peaks)
        _add(rows, peaks, ('CAMs (4 scales + flip)', bare_cams(cb, img_hw, dev, amp, 8 if cuda else 1), n/st.summary()['time_s']))
        reruns['CAMs (4 scales + flip)'] = ('cams', cams)
        pseudo = lambda: make_pseudo_labels(**{k: v for k, v in kw.items() if k != 'amp'}, bg_threshold=0.3, refiner=refiner, num_workers=None)
        st = _peak(dev, pseudo, peaks)
        _add(rows, peaks, (f'pseudo-labels ({refiner})', bare_pseudo(refiner, _ds(dataset, data), tmp/'out'/'bench'/'cams', min(n, 16), dev), n/st.summary()['time_s']))
        reruns[rows[-1][0]] = ('pseudo', pseudo)
        iters = a.seg_iters or (3 if not cuda and a.size == 'voc' else 40)
        seg = lambda: train_segmentation(**kw, labels='pseudo', backbone=sb, pretrained=None, output_stride=os_, rates=rates, iters=iters,
                                         batch_size=seg_bs, crop_size=scrop, num_workers=None)
        st = _peak(dev, seg, peaks)
        s = st.summary(); _add(rows, peaks, ('DeepLab-v2', bare_seg(sb, seg_bs, scrop, dev, amp, rates, os_), s['steps']*seg_bs/s['train_time_s']))
        reruns['DeepLab-v2'] = ('seg_pseudo', seg)
        n_val = len(_ds(dataset, data, 'val').ids)
        ev = lambda: evaluate(**kw, max_images=n_val)
        t0 = time.perf_counter(); _peak(dev, ev, peaks); t_eval = time.perf_counter() - t0
        _add(rows, peaks, ('evaluation (1 scale)', bare_eval(sb, img_hw, dev, amp, rates, os_), n_val/t_eval))
        reruns['evaluation (1 scale)'] = ('eval', ev)
        name = torch.cuda.get_device_name(dev) if cuda else f'cpu ({torch.get_num_threads()} threads)'
        print(f'\n{a.size} size{" (--tiny)" if a.tiny else ""}, device {name}, {n} images, classifier {cb} {cls_bs}x{crop}^2, DeepLab-v2 {sb} {seg_bs}x{scrop}^2, amp={amp}\n')
        print('| stage | bare network images/s | stage loop images/s | loop / bare | loop peak GPU MB |\n|---|---|---|---|---|')
        for (stage, bare, loop), pk in zip(rows, peaks):
            print(f'| {stage} | {bare:.2f} | {loop:.2f} | {loop/bare:.0%} | {"-" if pk is None else f"{pk:.0f}"} |')
        if a.project: print(project(dict((r[0], r[2]) for r in rows), refiner)
                            + ('\n(--tiny: not VOC sizes, so these hours mean nothing; the run only checks the code path)' if a.tiny else ''))
        if a.profile:
            pick = dict(classifier=0, cams=1, pseudo=2, seg=3, eval=4)
            stage = (min(rows[:4], key=lambda r: r[2] / r[1]) if a.profile_stage == 'auto' else rows[pick[a.profile_stage]])[0]
            folder, rerun = reruns[stage]
            text = profile_stage(stage, folder, rerun, tmp/'out'/'bench', dev)
            print(text)
            if a.profile_out:
                Path(a.profile_out).mkdir(parents=True, exist_ok=True)
                (Path(a.profile_out)/f'profile_{a.size}.txt').write_text(text + '\n')
    finally: shutil.rmtree(tmp, ignore_errors=True)

def profile_stage(stage:str, folder:str, rerun, run_dir:Path, dev, top:int=15)->str:
    "Delete the stage's folder, run it again under torch.profiler; its top `top` ops by self CUDA time (CUDA) and self CPU time."
    from torch.profiler import ProfilerActivity, profile
    shutil.rmtree(run_dir/folder, ignore_errors=True)            # not 'already done': the loop runs again
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == 'cuda' else [])
    _sync(dev); t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        rerun(); _sync(dev)
    dt = time.perf_counter() - t0
    ka = prof.key_averages()
    out = [f'\nProfile of the stage loop {stage}, rerun under torch.profiler in {dt:.1f} s\n']
    if dev.type == 'cuda':
        out += [f'Top {top} ops by self CUDA time:', ka.table(sort_by='self_device_time_total', row_limit=top, max_name_column_width=60)]
    out += [f'Top {top} ops by self CPU time:', ka.table(sort_by='self_cpu_time_total', row_limit=top, max_name_column_width=60)]
    return '\n'.join(out)

def _ds(dataset, root, split='train'):
    from wsss_nb.data import get_dataset
    return get_dataset(dataset, root, split)

def project(loop_rates:dict, refiner:str, n_train:int=10582, n_val:int=1449)->str:
    "Projected wall time of configs/voc12_cam.yaml (train_aug, val) from stage-loop images/s measured at VOC size."
    c = load_config(resolve_path('configs/voc12_cam.yaml'))
    cls_imgs = c['cls_epochs'] * (n_train // c['cls_batch_size']) * c['cls_batch_size']
    seg_imgs = c['seg_iters'] * c['seg_batch_size'] * (2 if c.get('train_gt_bound') else 1)
    r = list(loop_rates.values())
    parts = [('classifier', cls_imgs / r[0]), ('CAMs', n_train / r[1]), (f'pseudo-labels ({refiner})', n_train / r[2]),
             ('DeepLab-v2 (pseudo + GT bound)', seg_imgs / r[3]), ('evaluation (x2 networks)', 2 * n_val / r[4])]
    lines = ['\nProjected configs/voc12_cam.yaml end to end (stage-loop rates above; eval at 1 scale, the config uses 3):\n',
             '| stage | work | hours |', '|---|---|---|']
    work = [f'{cls_imgs} images', f'{n_train} images', f'{n_train} images', f'{seg_imgs} crops', f'{2*n_val} images']
    lines += [f'| {p} | {w} | {t/3600:.2f} |' for (p, t), w in zip(parts, work)]
    return '\n'.join(lines + [f'| total | | {sum(t for _, t in parts)/3600:.2f} |'])

if __name__ == '__main__': main()
