"""Confusion-matrix throughput of `wsss_nb.metrics` on VOC-sized masks (pixels/s).

Uses the real VOC 2012 train masks in ../shared/data/voc12-gt-masks when present (predictions = the mask shifted by
8 px, 255 -> 0), else synthetic 375x500 masks. `confusion_matrix` has one implementation (numpy bincount); torch
inputs are converted to numpy first, so the torch row measures that conversion too.

    python benchmarks/bench_metrics.py --n 200 --repeat 3
"""
import argparse, time
from pathlib import Path
import numpy as np
import torch
from wsss_nb.metrics import ConfusionMeter, confusion_matrix

def masks(n, seed=0):
    root = Path(__file__).resolve().parent.parent.parent/'shared'/'data'/'voc12-gt-masks'
    if (root/'SegmentationClass').is_dir():
        from wsss_nb.data import load_mask
        files = sorted((root/'SegmentationClass').glob('*.png'))[:n]
        return [load_mask(f) for f in files], f'{len(files)} VOC 2012 train masks ({root.name})'
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = rng.integers(0, 21, (375//25, 500//25)).repeat(25, 0).repeat(25, 1).astype(np.uint8)
        m[::50] = 255; out.append(m)
    return out, f'{n} synthetic 375x500 masks'

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--n', type=int, default=200); ap.add_argument('--repeat', type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    gts, what = masks(a.n)
    preds = [np.where(np.roll(g, 8, axis=1) == 255, 0, np.roll(g, 8, axis=1)).astype(np.uint8) for g in gts]
    tgts, tpreds = [torch.from_numpy(g) for g in gts], [torch.from_numpy(p) for p in preds]
    npix = sum(g.size for g in gts)
    def bench(name, fn):
        best = float('inf')
        for _ in range(a.repeat):
            t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
        print(f'| {name} | {npix/best/1e6:.1f} | {best*1e3/len(gts):.2f} |', flush=True)
        return best
    print(f'{what}, {npix/1e6:.1f} Mpixels, best of {a.repeat}\n')
    print('| path | Mpixels/s | ms / image |\n|---|---|---|')
    ref = sum(confusion_matrix(p, g, 21) for p, g in zip(preds, gts))
    bench('confusion_matrix, numpy uint8 inputs', lambda: [confusion_matrix(p, g, 21) for p, g in zip(preds, gts)])
    bench('confusion_matrix, torch uint8 inputs', lambda: [confusion_matrix(p, g, 21) for p, g in zip(tpreds, tgts)])
    def meter():
        m = ConfusionMeter(21)
        for p, g in zip(preds, gts): m.update(p, g)
        assert (m.cm == ref).all()
    bench('ConfusionMeter.update (+ missed counts)', meter)

if __name__ == '__main__': main()
