#!/usr/bin/env bash
# Issue 26's GPU measurements in one call: every benchmark, the demo timed per stage, a profiler summary of the slowest
# stage loop. Tables go to $OUT (at most 8 files: env.txt, pipeline_voc.txt, pipeline_demo.txt (with the profile),
# demo.txt, cam_infer.txt, crf.txt, demo_det.txt, summary.md); each step runs under its own timeout and the whole
# script under --budget seconds, so one call fits a 15-minute GPU lease with time left to rerun a part with --only.
#
# On the GPU machine (device tool `run`, carry .gpu; .gpu/ is made here by `bash ../shared/tools/gpu-prep.sh`):
#     source .gpu/setup.sh && bash benchmarks/gpu_check.sh --device cuda
# The CPU twin, the same code paths at tiny sizes (run it before spending GPU time):
#     OUT=/tmp/gpuout bash benchmarks/gpu_check.sh --device cpu --tiny
#
# Options: --device cuda|cpu (default cuda)   --tiny (tiny sizes, 10x step caps)   --budget SECONDS (default 360; tiny: 3600)
#          --only STEP,STEP (of: env pipeline_voc pipeline_demo demo cam crf demo_det; default all but demo_det,
#          which runs only when the budget still holds its cap at the end)
set -uo pipefail
cd "$(dirname "$0")/.."
DEV=cuda; TINY=0; BUDGET=""; ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEV="$2"; shift 2;;
    --tiny) TINY=1; shift;;
    --budget) BUDGET="$2"; shift 2;;
    --only) ONLY=",$2,"; shift 2;;
    -h|--help) sed -n '2,16p' "$0"; exit 0;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
case "$DEV" in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got $DEV" >&2; exit 2;; esac
[ -n "$BUDGET" ] || { [ "$TINY" = 1 ] && BUDGET=3600 || BUDGET=360; }
CAPX=1; [ "$TINY" = 1 ] && CAPX=10   # the CPU twin checks code paths, not speed: 10x the step caps on a shared CPU
OUT="${OUT:-/tmp/gpu_check_out}"; mkdir -p "$OUT"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
SUMMARY="$OUT/summary.md"
START=$SECONDS
echo "# gpu_check.sh --device $DEV$([ "$TINY" = 1 ] && echo ' --tiny') ($(date -u '+%Y-%m-%d %H:%M UTC'), budget ${BUDGET}s)" > "$SUMMARY"
if git rev-parse --short HEAD >/dev/null 2>&1; then
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' + local changes')" >> "$SUMMARY"; fi

want() { [ -z "$ONLY" ] && [ "$1" != demo_det ] || [[ "$ONLY" == *",$1,"* ]]; }
left() { echo $(( BUDGET - (SECONDS - START) )); }

# GPU memory in use, sampled every 250 ms by nvidia-smi while a step runs (the whole device: a check on torch's own peaks)
MEMPID=""
mem_start() { MEMPID=""; [ "$DEV" = cuda ] && command -v nvidia-smi >/dev/null || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$WORK/mem_$1.csv" 2>/dev/null & MEMPID=$!; }
mem_stop() { [ -n "$MEMPID" ] || { echo "-"; return; }; kill "$MEMPID" 2>/dev/null; wait "$MEMPID" 2>/dev/null
  sort -n "$WORK/mem_$1.csv" 2>/dev/null | tail -1 | awk '{print $1 " MiB"}'; }

# step NAME CAP_SECONDS FILE COMMAND...: run under min(CAP, budget left); its output to $OUT/FILE; its tables to summary.md
step() {
  local name="$1" cap="$2" file="$3"; shift 3
  want "$name" || return 0
  local t; t=$(left); cap=$((cap * CAPX)); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 20 ]; then echo -e "\n## $name: NOT RUN (budget spent: $(left)s left)" | tee -a "$SUMMARY"; return 0; fi
  echo -e "\n=== $name (timeout ${t}s): $*" | tee -a "$OUT/$file"
  local t0=$SECONDS rc; mem_start "$name"
  timeout --kill-after=10 "$t" "$@" >> "$OUT/$file" 2>&1; rc=$?
  local mem; mem=$(mem_stop "$name")
  local what="rc=$rc"; [ $rc = 124 ] || [ $rc = 137 ] && what="TIMED OUT after ${t}s (rc=$rc)"
  echo "[$name: $what, $((SECONDS - t0))s, GPU memory used at most: $mem]" | tee -a "$OUT/$file"
  { echo -e "\n## $name: $what, $((SECONDS - t0)) s wall, nvidia-smi peak $mem\n"; echo '```'; echo "$*"; echo '```'
    grep -E '^\||^Projected| size.*, device |^inputs:|^resnet|^\[wsss-nb\] [0-9]+_.* finished|mIoU|^\[bench_pipeline\]| img/s |^wsss_nb |^torch |^gpu |^python ' "$OUT/$file" | grep -v '^|-' | head -80
    sed -n '/^Profile of the stage/,/^Self CPU time total/p' "$OUT/$file"
    [ $rc = 0 ] || { echo -e '\nlast lines:\n```'; tail -15 "$OUT/$file"; echo '```'; }; } >> "$SUMMARY"
  return 0
}

T() { [ "$TINY" = 1 ] && echo "$1" || echo "$2"; }   # T tiny-args full-args

step env 60 env.txt "$PY" -c "
import sys, platform, torch, wsss_nb
from wsss_nb.refine.crf import has_pydensecrf
print('python', sys.version.split()[0], platform.platform())
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'threads', torch.get_num_threads())
print('wsss_nb', wsss_nb.__version__, 'pydensecrf', has_pydensecrf())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('gpu', torch.cuda.get_device_name(0), f'{p.total_memory/2**30:.1f} GiB', p.multi_processor_count, 'SMs')
elif '$DEV' == 'cuda': sys.exit('--device cuda but torch sees no CUDA device')
"
[ "$DEV" = cuda ] && command -v nvidia-smi >/dev/null && nvidia-smi >> "$OUT/env.txt" 2>&1

# 1. VOC size: ResNet-50 classifier @512, ResNet-101 DeepLab-v2 OS8 @321, the projected configs/voc12_cam.yaml wall time
step pipeline_voc 130 pipeline_voc.txt "$PY" benchmarks/bench_pipeline.py --size voc --device "$DEV" --project \
  $(T "--tiny --n-images 4 --cls-steps 1 --seg-iters 1 --repeat 1" "")
# 2. demo size, and torch.profiler's top 15 ops of the slowest stage loop (lowest loop / bare)
step pipeline_demo 100 pipeline_demo.txt "$PY" benchmarks/bench_pipeline.py --size demo --device "$DEV" --profile \
  $(T "--tiny --n-images 8 --cls-steps 2 --seg-iters 2 --repeat 1" "")
# 3. `wsss-nb demo` on the device, timed per stage (the CLI prints each stage's seconds), scores at the end
DEMO_TINY="synth_n_train=16 synth_n_val=6 synth_size=64 cls_epochs=1 cls_batch_size=8 cls_crop_size=64 cam_scales=[1.0] seg_iters=2 seg_batch_size=4 seg_crop_size=64 seg_rates=[2,4] seg_scales=[1.0] train_gt_bound=false"
step demo 130 demo.txt "$PY" -m wsss_nb demo device="$DEV" run=gpu_demo out_root="$WORK/out" data_root="$WORK/data/synthetic" \
  $(T "$DEMO_TINY" "") --quiet
# 4. CAM inference, ResNet-50, 4 scales + flip, VOC sizes: fp32 loop, batched, bf16, channels_last, compile
step cam 80 cam_infer.txt "$PY" benchmarks/bench_cam_infer.py --device "$DEV" \
  $(T "--n-images 2 --batch-size 2 --warmup 0" "--n-images 64 --batch-size 16")
# 5. crf_torch on the device vs pydensecrf (CPU), 500x375, 21 labels, 10 iterations
step crf 60 crf.txt "$PY" benchmarks/bench_crf.py --device "$DEV" $(T "--n-images 2 --batch 2 --size 125x94" "--n-images 32 --batch 8")
# 6. (only if the budget still holds it, or --only demo_det) the demo again with deterministic=true: cost and score shift
if [ -z "$ONLY" ] && [ "$(left)" -ge $((130 * CAPX)) ]; then ONLY=",demo_det,"; fi
step demo_det 130 demo_det.txt "$PY" -m wsss_nb demo device="$DEV" deterministic=true run=gpu_demo_det out_root="$WORK/out" \
  data_root="$WORK/data/synthetic" $(T "$DEMO_TINY" "") --quiet

echo -e "\ntotal $((SECONDS - START)) s of the ${BUDGET} s budget; files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$SUMMARY"
rm -rf "$WORK"
