#!/usr/bin/env bash
# End-to-end wall time of the default runs on one GPU, eager step against the captured CUDA-graph
# step, with each run's report. Usage (from the project root, dimo installed):
#   bash benchmarks/gpu_end_to_end.sh [OUT_DIR] [PLUGINS...]      # default: runs/gpu toy maskgit meissonic
# Prints one line per run (plugin, cuda_graph, exit code, seconds, any capture note) and the student rows.
set -u
out=${1:-runs/gpu}; shift || true
plugins=("$@"); (( ${#plugins[@]} )) || plugins=(toy maskgit meissonic)
mkdir -p "$out"
for plugin in "${plugins[@]}"; do
  for graph in false true; do
    dir="$out/$plugin-graph-$graph"; rm -rf "$dir"
    tic=$(date +%s%N)
    dimo run plugins="$plugin" device="${DEVICE:-cuda}" out_dir="$dir" eval.after_run=true performance.cuda_graph="$graph" \
      --no-progress > "$dir.log" 2>&1
    rc=$?
    ms=$(( ($(date +%s%N) - tic) / 1000000 ))
    note=$(grep -a "^note:" "$dir.log" | head -1)
    printf '%-10s cuda_graph=%-5s rc=%s %d.%03d s %s\n' "$plugin" "$graph" "$rc" $((ms / 1000)) $((ms % 1000)) "$note"
    grep -a -E '^\| \*?\*?student' "$dir/report.md" 2>/dev/null | sed 's/^/    /'
  done
done
