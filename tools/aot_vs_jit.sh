#!/bin/sh
# AOT artifact vs the JIT (CPU device) on one model: median latency of each, interleaved so
# both see the same machine load, for each thread count, each measured ROUNDS times.
#
#   tools/aot_vs_jit.sh [MODEL] [N] [THREADS...]
#   tools/aot_vs_jit.sh /tmp/zoo/resnet50/model.onnx 20 1 2
#
# KILN (default target/release/kiln; cargo build --release --bin kiln first), CC, ROUNDS
# (default 2) and INPUT (the C runner's input, default the model's input_0.npy; the JIT
# runs on random inputs, which take the same time) come from the environment. Prints one line per measurement and the AOT/JIT ratio
# (below 1.05 meets issue 6's "within 5% of the JIT"), with the load average at the time.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-/tmp/zoo/resnet50/model.onnx}
n=${2:-20}
[ $# -gt 2 ] && shift 2 || set -- 1 2
kiln=${KILN:-$root/target/release/kiln}
cc=${CC:-cc}
rounds=${ROUNDS:-2}
input=${INPUT:-$(dirname "$model")/input_0.npy}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -f "$input" ] || { echo "no $input: give INPUT=FILE.npy" >&2; exit 2; }
"$kiln" compile "$model" --aot -o "$work/net" >/dev/null
"$cc" -O2 -I"$work" -DKILN_MODEL=net -DKILN_HEADER='"net.h"' "$root/examples/aot-c/main.c" \
    "$work/net.o" -lm -lpthread -o "$work/net"

echo "model $model, $n runs per measurement, $(nproc) cores"
printf '%-8s %-6s %12s %12s %8s  %s\n' threads round "aot ms" "jit ms" ratio "load average"
for t in "$@"; do
    r=1
    while [ "$r" -le "$rounds" ]; do
        load=$(cut -d' ' -f1-3 /proc/loadavg)
        aot=$("$work/net" --threads "$t" --bench "$n" "$input" | sed -n 's/^bench:.*median \([0-9.]*\) ms.*/\1/p')
        jit=$("$kiln" bench "$model" -d CPU --threads "$t" --niter "$n" 2>/dev/null |
            sed -n 's/^latency: *median \([0-9.]*\) ms.*/\1/p')
        printf '%-8s %-6s %12s %12s %8s  %s\n' "$t" "$r" "$aot" "$jit" \
            "$(awk -v a="$aot" -v j="$jit" 'BEGIN { if (j > 0) printf "%.3f", a / j; else print "?" }')" "$load"
        r=$((r + 1))
    done
done
