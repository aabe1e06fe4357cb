#!/usr/bin/env bash
# GPU speed checks: a list of timed commands, each a named section, for a machine with one CUDA GPU.
# What they measure: the cifar10-uncond preset's training loop against its network-only step on every
# precision path (scripts/bench_train.py: img/s, per-phase breakdown, host synchronisations, start-up), the
# network-only step per fast path and generate.py's sampling speed, the CUDA tests of the fast paths, and the
# loss curves of the fast path (bf16 + torch.compile + fused Adam) against the exact one.
#
# Usage (from the repository root, on the GPU machine):
#   scripts/gpu_speed_check.sh [--out DIR] [SECTION...]
# Outputs go to DIR (default: $OUT when set, else ./gpu-speed-check): gpu_speed_check.log (everything
# printed, section by section), results.jsonl (one bench_train JSON per bench section, with "section"),
# startup.txt, curve_exact.jsonl / curve_fast.jsonl / curves.tsv for the curve sections. At most 8 files.
# Environment: PYTHON (default python3), CURVE_KIMG (default 150).
#
# Sections, with their time limits (each runs under `timeout`, so a slow one cannot eat the next ones):
#   env              60 s  GPU, driver, torch, packages
#   tests           240 s  the CUDA tests of the fast paths (tests/test_fast_paths.py -m gpu)
#   exact           200 s  fp32, reference numerics (no TF32): network-only vs loop, phases, host syncs
#   fp16            150 s  EDM's fp16 network path
#   bf16            150 s  bf16 autocast, with host syncs
#   bf16-fused      150 s  bf16 + the fused Adam kernel
#   bf16-dataloader 150 s  bf16 with the DataLoader instead of the resident dataset (what the data path buys)
#   bf16-compile    330 s  bf16 + torch.compile (default mode) + fused Adam; compile time = first steps
#   bf16-compile-ro 330 s  the same with mode reduce-overhead (CUDA graphs)
#   paths           330 s  the network-only step per fast path (bench_train --mode paths), compile included
#   generate        120 s  generate.py's sampling path at NFE 35, batch 256, fp32 and fp16 (--mode generate)
#   startup         240 s  50,000 random 32x32 PNGs (CIFAR-10's size): bench start-up, and train.py's wall
#                          time for 2 steps in fp32 and in bf16 (imports, caching, cuDNN autotune, snapshot)
#   curves          570 s  train.py exact vs fast (bf16 + compile + fused Adam) for $CURVE_KIMG kimg each
#                          on real 32x32 data (scikit-learn digits, upscaled, RGB), then the loss curves side
#                          by side; curve-exact / curve-fast run one side each, and `compare` compares
#                          DIR/curve_exact.jsonl with DIR/curve_fast.jsonl.
# Default (no SECTION): env tests exact bf16 fp16 bf16-fused  (about 15 min of limits, 7-9 min expected).
# Batches that fit a 10-minute command each:
#   1. env tests exact bf16 fp16 bf16-fused
#   2. bf16-compile bf16-dataloader startup
#   3. paths generate
#   4. curves                (CURVE_KIMG=150; for a longer comparison run curve-exact, then curve-fast,
#                             with CURVE_KIMG=400 in separate commands, then `compare`)
set -uo pipefail

OUT_DIR="${OUT:-gpu-speed-check}"
if [[ "${1:-}" == "--out" ]]; then OUT_DIR="$2"; shift 2; fi
mkdir -p "$OUT_DIR"
SECTIONS=("$@")
if [[ ${#SECTIONS[@]} -eq 0 ]]; then SECTIONS=(env tests exact bf16 fp16 bf16-fused); fi
PY="${PYTHON:-python3}"
CURVE_KIMG="${CURVE_KIMG:-150}"
LOG="$OUT_DIR/gpu_speed_check.log"
RESULTS="$OUT_DIR/results.jsonl"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="$TMP/inductor"   # cold compiles: the compile time reported is the real one
BENCH=(--config cifar10 --reps 2 --steps 12 --warmup 4)

say() { echo "$*" | tee -a "$LOG"; }

run() {   # run NAME LIMIT_S CMD...: log the command, its output and its exit status
    local name=$1 limit=$2; shift 2
    say "=== $name ($(date -u +%FT%TZ), limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "=== $name: exit $rc after $((SECONDS - start)) s"
    return "$rc"
}

bench() {   # bench NAME LIMIT_S ARGS...: one bench_train run, its JSON appended to results.jsonl
    local name=$1 limit=$2; shift 2
    rm -f "$TMP/$name.json"
    run "$name" "$limit" "$PY" -m scripts.bench_train "${BENCH[@]}" --json "$TMP/$name.json" "$@"
    if [[ -f "$TMP/$name.json" ]]; then
        "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); d["section"] = sys.argv[2]; d["args"] = sys.argv[3:]; print(json.dumps(d))' \
            "$TMP/$name.json" "$name" "$@" >> "$RESULTS"
    fi
}

data_zip() {   # data_zip KIND PATH: random-50000 or digits32 archives for train.py
    "$PY" -c "
import sys
from scripts import bench_train as b
if sys.argv[1] == 'digits32':
    b.digits_image_zip(sys.argv[2])
else:
    b.random_image_zip(sys.argv[2], 50000)
" "$1" "$2"
}

train_curve() {   # train_curve NAME LIMIT_S FLAGS...: train.py on digits32, stats.jsonl -> DIR/curve_NAME.jsonl
    local name=$1 limit=$2; shift 2
    [[ -f "$TMP/digits32.zip" ]] || data_zip digits32 "$TMP/digits32.zip"
    run "curve-$name" "$limit" "$PY" train.py --preset cifar10-uncond --data "$TMP/digits32.zip" \
        --kimg "$CURVE_KIMG" --tick 10 --snap 100000 --dump 100000 --lr-rampup 10 --seed 0 --workers 2 \
        --device cuda --outdir "$TMP/curve-$name" --nosubdir "$@"
    cp "$TMP/curve-$name/stats.jsonl" "$OUT_DIR/curve_$name.jsonl" 2>/dev/null || say "no stats.jsonl for $name"
}

startup_train() {   # startup_train NAME FLAGS...: train.py's wall time for 2 steps of 512 on 50,000 PNGs
    local name=$1; shift
    local dir="$TMP/startup-$name" t0 t1
    t0=$(date +%s.%N)
    run "train.py-2-steps-$name" 120 "$PY" train.py --preset cifar10-uncond --data "$TMP/random50k.zip" \
        --kimg 1.024 --tick 1 --snap 100000 --dump 100000 --seed 0 --device cuda --outdir "$dir" --nosubdir "$@"
    t1=$(date +%s.%N)
    "$PY" - "$name" "$t0" "$t1" "$dir/stats.jsonl" <<'EOF' 2>&1 | tee -a "$LOG" "$OUT_DIR/startup.txt"
import json, sys
name, t0, t1, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
first = json.loads(open(path).readline())
print(f'train.py {name}: {t1 - t0:.1f} s process wall time for 2 steps of 512 (start-up, both steps, a snapshot, '
      f'exit); the loop reached the end of its first step {first["Timing/total_sec"]["mean"]:.1f} s after it started')
EOF
}

compare_curves() {   # the two loss curves side by side at equal kimg; DIR/curves.tsv
    "$PY" - "$OUT_DIR/curve_exact.jsonl" "$OUT_DIR/curve_fast.jsonl" "$OUT_DIR/curves.tsv" <<'EOF' 2>&1 | tee -a "$LOG"
import json, math, sys
def read(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return {round(r['Progress/kimg']['mean'], 3): (r['Loss/loss']['mean'], r['Timing/total_sec']['mean']) for r in rows}
exact, fast = read(sys.argv[1]), read(sys.argv[2])
common = sorted(set(exact) & set(fast))
with open(sys.argv[3], 'w') as f:
    f.write('kimg\tloss_exact\tloss_fast\trel_diff\tsec_exact\tsec_fast\n')
    print(f'{"kimg":>8} {"loss exact":>11} {"loss fast":>11} {"rel diff":>9} {"s exact":>9} {"s fast":>9}')
    for k in common:
        (le, te), (lf, tf) = exact[k], fast[k]
        rel = (lf - le) / le
        f.write(f'{k}\t{le}\t{lf}\t{rel}\t{te}\t{tf}\n')
        print(f'{k:>8g} {le:>11.4f} {lf:>11.4f} {rel:>+9.2%} {te:>9.1f} {tf:>9.1f}')
later = [abs(fast[k][0] - exact[k][0]) / exact[k][0] for k in common[len(common) // 2:]]
if later:
    print(f'mean |relative loss difference| over the second half: {sum(later) / len(later):.2%} ({len(later)} ticks)')
EOF
}

say "### gpu_speed_check $(date -u +%FT%TZ) sections: ${SECTIONS[*]} -> $OUT_DIR"
for section in "${SECTIONS[@]}"; do
    case "$section" in
        env)
            run env 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \
                $PY -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), torch.backends.cudnn.version())'; \
                $PY -m pip list 2>/dev/null | grep -iE '^(torch|triton|numpy|click|pillow|psutil|scikit-learn|pytest) '; nproc" ;;
        tests)
            run tests 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_fast_paths.py -m gpu ;;
        exact)
            bench exact 200 --sync-check ;;
        fp16)
            bench fp16 150 --fp16 ;;
        bf16)
            bench bf16 150 --bf16 --sync-check ;;
        bf16-fused)
            bench bf16-fused 150 --bf16 --fused-adam ;;
        bf16-dataloader)
            bench bf16-dataloader 150 --bf16 --loader dataloader ;;
        bf16-compile)
            bench bf16-compile 330 --bf16 --compile --fused-adam --reps 1 --steps 16 --warmup 6 ;;
        bf16-compile-ro)
            bench bf16-compile-ro 330 --bf16 --compile --compile-mode reduce-overhead --fused-adam --reps 1 \
                --steps 16 --warmup 6 ;;
        paths)
            bench paths 330 --mode paths --reps 1 ;;
        generate)
            bench generate-fp32 60 --mode generate --nfe 35 --batch 256 --reps 3
            bench generate-fp16 60 --mode generate --nfe 35 --batch 256 --reps 3 --fp16 ;;
        startup)
            bench startup 120 --bf16 --data-size 50000 --reps 1 --steps 6 --warmup 2 --no-breakdown
            data_zip random "$TMP/random50k.zip"
            startup_train fp32
            startup_train bf16 --bf16 ;;
        curves)
            train_curve exact 330
            train_curve fast 240 --bf16 --compile --fused-adam
            compare_curves ;;
        curve-exact)
            train_curve exact 570 ;;
        curve-fast)
            train_curve fast 570 --bf16 --compile --fused-adam ;;
        compare)
            compare_curves ;;
        *)
            say "unknown section $section (see the header of $0)"; exit 2 ;;
    esac
done
say "### done $(date -u +%FT%TZ)"
