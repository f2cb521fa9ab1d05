"""CAM inference throughput: the per-image loop of the CAM stage vs `wsss_nb.stages.batched_cams` (same-size images
batched with their flips), ResNet-50 CAM network at VOC size, 4 scales + flip. Both write the same CAM files.

    python benchmarks/bench_cam_infer.py --device cpu --n-images 4 --batch-size 4 --threads 2
    python benchmarks/bench_cam_infer.py --device cuda --n-images 64 --batch-size 16      # adds bf16 / channels_last / compile
"""
import argparse, shutil, tempfile, time
from pathlib import Path
import numpy as np
import torch
from wsss_nb.backbones import get_backbone
from wsss_nb.cam import CAMNet, infer_cams, load_cams, normalize_cams, save_cams
from wsss_nb.stages.make_cams import _maybe_compile, batched_cams

class Images:
    "Random 'VOC' images: sizes drawn from the common VOC shapes, 1-3 image-level classes of 20."
    SIZES = [(375, 500), (500, 375), (333, 500), (375, 500), (500, 333), (375, 500)]
    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            h, w = self.SIZES[i % len(self.SIZES)]
            lab = torch.zeros(20); lab[torch.randperm(20, generator=g)[:1 + i % 3]] = 1
            self.items.append(dict(id=f'{i:04d}', image=torch.randn(3, h, w, generator=g), label=lab))
    def __len__(self): return len(self.items)
    def __getitem__(self, i): return self.items[i]

def loop(fn, ds, out, scales, device, amp, cl):
    for s in ds.items:
        keys = torch.nonzero(s['label']).flatten()
        cams = infer_cams(fn, s['image'], scales=scales, flip=True, device=device, amp=amp, channels_last=cl)
        save_cams(Path(out)/f"{s['id']}.npz", normalize_cams(cams[keys.to(cams.device)]).cpu().numpy(), keys.numpy())

def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu'); ap.add_argument('--n-images', type=int, default=4)
    ap.add_argument('--batch-size', type=int, default=4); ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--scales', default='1.0,0.5,1.5,2.0'); ap.add_argument('--backbone', default='resnet50')
    ap.add_argument('--no-compile', action='store_true'); ap.add_argument('--warmup', type=int, default=1)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev, scales = torch.device(a.device), tuple(float(s) for s in a.scales.split(','))
    torch.manual_seed(0)
    model = CAMNet(get_backbone(a.backbone, pretrained=None, output_stride=16), 20).to(dev).eval()
    ds = Images(a.n_images)
    variants = [('per-image loop', 'loop', False, False, False), ('batched', 'batch', False, False, False)]
    if dev.type == 'cuda':
        variants += [('per-image loop bf16', 'loop', True, False, False), ('batched bf16', 'batch', True, False, False),
                     ('batched bf16 + channels_last', 'batch', True, True, False)]
        if not a.no_compile: variants.append(('batched bf16 + channels_last + compile', 'batch', True, True, True))
    rows, ref = [], None
    for name, kind, amp, cl, comp in variants:
        m = model.to(memory_format=torch.channels_last) if cl else model.to(memory_format=torch.contiguous_format)
        fn = _maybe_compile(lambda x: m.cam(x), comp)
        out = Path(tempfile.mkdtemp())
        run = (lambda: loop(fn, ds, out, scales, dev, amp, cl)) if kind == 'loop' else \
              (lambda: batched_cams(fn, ds, range(len(ds)), out, scales=scales, flip=True, batch_size=a.batch_size,
                                    device=dev, amp=amp, channels_last=cl))
        warm = Images(min(a.warmup*a.batch_size, 6), seed=1) if a.warmup else None
        if warm is not None:   # warm-up (cudnn autotune, compile) on other images of the same sizes
            wout = Path(tempfile.mkdtemp())
            if kind == 'loop': loop(fn, warm, wout, scales, dev, amp, cl)
            else: batched_cams(fn, warm, range(len(warm)), wout, scales=scales, flip=True, batch_size=a.batch_size, device=dev, amp=amp, channels_last=cl)
            shutil.rmtree(wout)
        sync(dev); t0 = time.perf_counter(); run(); sync(dev); dt = time.perf_counter() - t0
        cams = {s['id']: load_cams(out/f"{s['id']}.npz")[1] for s in ds.items}
        if ref is None: ref = cams
        err = max(float(np.abs(cams[k] - ref[k]).max()) for k in ref)
        rows.append((name, a.n_images/dt, dt, err)); shutil.rmtree(out)
        print(f'{name:<42} {a.n_images/dt:8.3f} img/s  ({dt:.1f} s)  max |CAM - loop fp32| = {err:.4f}', flush=True)
    print(f'\n{a.backbone}, {a.n_images} VOC-size images (375x500 / 500x375 / 333x500 mix), scales {scales} + flip, '
          f'batch {a.batch_size}, device {dev}{"" if not a.threads else f", {a.threads} threads"}\n')
    print('| variant | images/s | time (s) | speed-up | max abs diff vs loop fp32 |\n|---|---|---|---|---|')
    for name, ips, dt, err in rows: print(f'| {name} | {ips:.3f} | {dt:.1f} | {ips/rows[0][1]:.2f}x | {err:.4f} |')

if __name__ == '__main__': main()
