"""Dense (PSA `infer_aff`) vs sparse random walk: time and peak memory at growing image sizes.

Usage: python benchmarks/bench_rw.py [--threads 1] [--dense-cap-mb 1024] [--channels 21] [--quick]

Each (walk, size) runs in a fresh subprocess, so one measurement's memory cannot hide in another's. Peak memory is the
largest resident set size (sampled every millisecond from /proc/self/statm by a background thread) above the resident
size just before the walk, i.e. what the walk itself needs: the affinity matrix / sparse transition, the scores and
temporaries. Inputs are random affinities (radius 5, 34 offsets) and random scores for `--channels` rows; the
AffinityNet forward pass is the same for both walks and is not timed. The dense walk is skipped where the estimate
(`wsss_nb.refine.rw.rw_memory_estimate`) exceeds `--dense-cap-mb`.
"""
import argparse, json, os, subprocess, sys, threading, time

SIZES = [((64, 64), 8), ((128, 128), 8), ((192, 256), 8), ((375, 500), 8), ((375, 500), 4), ((768, 1024), 4)]

def _rss_bytes():
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

def one(walk, H, W, stride, channels, threads, seed=0):
    "Run one walk in this process; print a JSON line with time, peak memory and a checksum."
    import torch
    from wsss_nb.refine.rw import dense_random_walk, sparse_random_walk
    torch.set_num_threads(threads)
    h, w = -(-H // stride), -(-W // stride)
    g = torch.Generator().manual_seed(seed)
    aff, sc = torch.rand(34, h, w, generator=g), torch.rand(channels, h, w, generator=g)
    fn = dense_random_walk if walk == 'dense' else sparse_random_walk
    fn(torch.rand(34, 6, 6), torch.rand(2, 6, 6), 5, 8, 2)        # warm up kernels / lazy init outside the measurement
    base, peak, stop = _rss_bytes(), [0], threading.Event()
    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes()); time.sleep(0.001)
    t = threading.Thread(target=sample, daemon=True); t.start()
    t0 = time.perf_counter()
    out = fn(aff, sc, 5, 8, 8)
    dt = time.perf_counter() - t0
    stop.set(); t.join()
    peak[0] = max(peak[0], _rss_bytes())
    print(json.dumps(dict(time_s=dt, peak_mb=(peak[0] - base) / 2**20, checksum=out[:, ::3, ::3].flatten().tolist())))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--dense-cap-mb', type=float, default=1024)
    ap.add_argument('--channels', type=int, default=21)
    ap.add_argument('--quick', action='store_true', help='only the three smallest sizes')
    ap.add_argument('--one', nargs=4, metavar=('WALK', 'H', 'W', 'STRIDE'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return one(a.one[0], int(a.one[1]), int(a.one[2]), int(a.one[3]), a.channels, a.threads)
    from wsss_nb.refine.rw import rw_memory_estimate
    print(f"threads={a.threads} channels={a.channels} radius=5 beta=8 logt=8 (t=256) dense cap={a.dense_cap_mb:.0f} MB")
    hdr = f"{'image HxW':>10} {'stride':>6} {'grid':>7} {'N':>6} | {'dense s':>8} {'dense MB':>9} {'est MB':>8} | {'sparse s':>8} {'sparse MB':>9} {'est MB':>7} | {'max |d-s|':>9}"
    print(hdr); print('-'*len(hdr))
    for (H, W), s in (SIZES[:3] if a.quick else SIZES):
        est = rw_memory_estimate(H, W, s, 5, a.channels)
        res = {}
        for walk in ('dense', 'sparse'):
            if walk == 'dense' and est['dense_bytes'] / 2**20 > a.dense_cap_mb: continue
            cmd = [sys.executable, __file__, '--one', walk, str(H), str(W), str(s), '--channels', str(a.channels), '--threads', str(a.threads)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode: raise SystemExit(p.stderr)
            res[walk] = json.loads(p.stdout.strip().splitlines()[-1])
        h, w = -(-H // s), -(-W // s)
        d = res.get('dense')
        diff = max(abs(x - y) for x, y in zip(d['checksum'], res['sparse']['checksum'])) if d else None
        dense_cols = (f"{d['time_s']:>8.2f} {d['peak_mb']:>9.1f}" if d else f"{'skipped':>8} {'(cap)':>9}")
        print(f"{f'{H}x{W}':>10} {s:>6} {f'{h}x{w}':>7} {h*w:>6} | {dense_cols} {est['dense_bytes']/2**20:>8.1f} | "
              f"{res['sparse']['time_s']:>8.2f} {res['sparse']['peak_mb']:>9.1f} {est['sparse_bytes']/2**20:>7.1f} | "
              f"{(f'{diff:.1e}' if diff is not None else '-'):>9}", flush=True)

if __name__ == '__main__': main()
