#!/usr/bin/env bash
# bench/vs-llamacpp.sh LLAMA_CPP_BIN_DIR: the project and llama.cpp back to
# back on the same GGUF files, and the ratios, in docs/results/vs-llamacpp.md.
#
# llama.cpp is built outside the repository as ../shared/docs/BASELINES.md
# says (llama-bench in LLAMA_CPP_BIN_DIR); none of it is committed. The files
# are made here: stories260K (built in) as f32 GGUF, and the synthetic 110M
# Llama shape in each of $DTYPES. Each file gets
#   llama-bench -t 2 -p 128 -n 64 -r $REPS            (pp128, tg64)
#   acttail-gpu bench --sparsity-sweep, speed only,   (prefill, decode at
#     uniform levels 0, 0.5 and 0.8, same prompt and decode lengths)
# one right after the other, with the peak RSS of each (GNU time, where
# installed). Nothing else should run meanwhile: on 2 cores the figures
# swing by ±20 % from run to run, so read the ratios, and repeat.
#
# Environment: WORK (scratch folder, default a new temporary one; the 110M
# files take about 1.3 GB), REPS (5), DTYPES ("f32 q8_0"; also f16, bf16),
# THREADS (2), OUT (docs/results/vs-llamacpp.md), LLAMA_CPP_COMMIT (the
# snapshot's commit, which a build from an archive does not know).
set -euo pipefail
if [ $# -ne 1 ] || [ ! -x "$1/llama-bench" ]; then
	echo "usage: $0 LLAMA_CPP_BIN_DIR (the folder holding llama-bench)" >&2
	exit 2
fi
lcpp=$(cd "$1" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-$(mktemp -d)}
reps=${REPS:-5}
threads=${THREADS:-2}
out=${OUT:-$root/docs/results/vs-llamacpp.md}
mkdir -p "$work"
bin="$work/acttail-gpu"
(cd "$root" && go build -o "$bin" ./cmd/acttail-gpu)

timed=()
if [ -x /usr/bin/time ]; then timed=(/usr/bin/time -f '%M' -o "$work/rss"); fi
rss() { # the peak RSS in MiB of the last timed command, or n/a
	if [ ${#timed[@]} -gt 0 ]; then awk '{printf "%.0f", $1/1024}' "$work/rss"; else echo n/a; fi
}

files=("$work/stories260K-f32.gguf")
[ -f "${files[0]}" ] || "$bin" convert --out "${files[0]}" --dtype f32 >/dev/null
[ -d "$work/s110m" ] || "$bin" synth --shape llama-110m --out "$work/s110m" >/dev/null
for dt in ${DTYPES:-f32 q8_0}; do
	f="$work/s110m-$dt.gguf"
	[ -f "$f" ] || "$bin" convert --model "$work/s110m" --out "$f" --dtype "$dt" >/dev/null
	files+=("$f")
done

rows=()
for f in "${files[@]}"; do
	name=$(basename "$f" .gguf)
	echo "== $name" >&2
	"${timed[@]}" "$lcpp/llama-bench" -m "$f" -t "$threads" -p 128 -n 64 -r "$reps" -o csv >"$work/$name-lcpp.csv" 2>"$work/$name-lcpp.err"
	lrss=$(rss)
	# avg_ts of the pp128 line and of the tg64 line
	read -r pp tg < <(awk -F, 'NR==1 { for (i = 1; i <= NF; i++) { gsub(/"/, "", $i); col[$i] = i } next }
		{ gsub(/"/, ""); if ($col["n_prompt"] == 128 && $col["n_gen"] == 0) pp = $col["avg_ts"]; if ($col["n_gen"] == 64) tg = $col["avg_ts"] }
		END { print pp, tg }' "$work/$name-lcpp.csv")
	"${timed[@]}" "$bin" bench --sparsity-sweep --model "$f" --device cpu --threads "$threads" --methods uniform \
		--levels 0,0.5,0.8 --prefill-tokens 128 --decode-tokens 64 --speed-repeats "$reps" --out-dir "$work/$name-sweep" \
		>/dev/null 2>"$work/$name-sweep.err"
	prss=$(rss)
	# level → decode tok/s; level 0 also prefill tok/s
	read -r pre d0 d5 d8 < <(awk -F, 'NR==1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		{ d[$col["level"] + 0] = $col["decode_tokens_per_s"]; if ($col["level"] == 0) p = $col["prefill_tokens_per_s"] }
		END { print p, d[0], d[0.5], d[0.8] }' "$work/$name-sweep/sweep.csv")
	size=$(du -m "$f" | cut -f1)
	rows+=("$(awk -v n="$name" -v s="$size" -v pp="$pp" -v tg="$tg" -v pre="$pre" -v d0="$d0" -v d5="$d5" -v d8="$d8" -v lr="$lrss" -v pr="$prss" \
		'BEGIN { printf "| %s | %s | %.0f | %.1f | %.0f | %.1f | %.1f | %.1f | %.2f× | %.2f× | %.2f× | %.2f× | %s | %s |", n, s, pp, tg, pre, d0, d5, d8, pre/pp, d0/tg, d5/tg, d8/tg, lr, pr }')")
done

{
	echo "# The project beside llama.cpp, on the same files"
	echo
	echo "Written by \`bench/vs-llamacpp.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $threads threads,"
	echo "project $(cd "$root" && git rev-parse --short HEAD), llama.cpp build ${LLAMA_CPP_COMMIT:-$(awk -F, 'NR==1 { for (i = 1; i <= NF; i++) { gsub(/"/, "", $i); col[$i] = i } next }
		NR==2 { gsub(/"/, ""); print $col["build_commit"]; exit }' "$work/$(basename "${files[0]}" .gguf)-lcpp.csv")}."
	echo "Tokens per second, medians (project, $reps runs) and means (llama-bench, $reps runs); ratios are project / llama.cpp"
	echo "(prefill against pp128, decode against tg64). RSS is each process's peak, MiB."
	echo
	echo "| file | MiB | llama.cpp pp128 | llama.cpp tg64 | prefill | dense decode | 0.5 uniform | 0.8 uniform | prefill ÷ pp | dense ÷ tg | 0.5 ÷ tg | 0.8 ÷ tg | llama.cpp RSS | project RSS |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
} >"$out"
echo "wrote $out" >&2
