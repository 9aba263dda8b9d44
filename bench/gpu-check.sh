#!/usr/bin/env bash
# gpu-check.sh: the one GPU run. On a CUDA host (nvcc, no Go, no network),
# from the repository root:
#
#   bench/gpu-check.sh [CARRY [SHARED]]
#
# CARRY (default ./carry) holds test binaries built elsewhere (docs/cuda.md):
#   cuda.test     go test -c ./runtime/backend/cuda
#   cudadrv.test  go test -c ./cgo/cudadrv
#   acttail-gpu   go build ./cmd/acttail-gpu (the command-line run; skipped without it)
# SHARED (default $ACTTAIL_SHARED, else ../shared, else ./shared) holds
# models/stories260K (the whole-model test skips without it) and
# data/tinystories-{calib,eval}.txt (for the command-line sweep).
#
# It (a) builds the kernels with this host's nvcc for sm_90, (b) runs the
# correctness tests against the CPU backend with the embedded fatbin, (c)
# runs the benchmarks, then the tests again with the host-built fatbin and
# under compute-sanitizer when present, and (d) prints a summary and writes
# docs/gpu-results.md.
# It changes no GPU setting. Budget: under 8 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
carry=${1:-./carry}
shared=${2:-${ACTTAIL_SHARED:-}}
if [[ -z $shared ]]; then
	for d in ../shared ./shared; do [[ -d $d/models ]] && shared=$d && break; done
fi
out=build/gpu-check
mkdir -p "$out"
results=docs/gpu-results.md
# On the kernel emulator (ACTTAIL_LIBCUDA set) the run is a rehearsal: its
# results are not GPU results and stay out of docs/.
[[ -n ${ACTTAIL_LIBCUDA:-} ]] && results=$out/gpu-results.md
status=()
note() { echo "== $*"; }
record() { status+=("$(printf '%-34s %s' "$1" "$2")"); }
deadline=455 # seconds: every step is cut to fit (+5 s for timeout -k), so the script ends within 8 minutes
run() { # name, timeout seconds, command...
	local name=$1 limit=$2
	shift 2
	((limit > deadline - SECONDS)) && limit=$((deadline - SECONDS))
	if ((limit < 10)); then
		record "$name" "skipped (out of time)"
		return 1
	fi
	note "$name (limit $limit s): $*"
	local t0=$SECONDS
	# timeout signals the step's whole process group (compute-sanitizer's
	# target too), and -k kills what ignores SIGTERM.
	timeout -k 5 "$limit" "$@" >"$out/$name.log" 2>&1
	local rc=$?
	tail -n 40 "$out/$name.log"
	if ((rc == 0)); then record "$name" "ok ($((SECONDS - t0)) s)"; else record "$name" "FAILED rc=$rc ($((SECONDS - t0)) s, $out/$name.log)"; fi
	return $rc
}

note "host"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true; } | tee "$out/host.txt"
{ nvcc --version | tail -n1 || echo "no nvcc"; } | tee -a "$out/host.txt"

# (a) kernels with this host's nvcc: CMake (sm_80, sm_90, sm_90a, compute_90
# PTX) when present, else nvcc for sm_90 with the flags of cuda/fatbin.flags.
fatbin=
major=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
sm90a=OFF
((${major:-0} >= 12)) && sm90a=ON
if command -v cmake >/dev/null; then
	run cmake-configure 60 cmake -S . -B build/cmake -DACTTAIL_SM90A=$sm90a &&
		run cmake-build 120 cmake --build build/cmake && fatbin=build/cmake/acttail.fatbin
fi
if [[ -z $fatbin ]]; then
	read -r -a flags <cuda/fatbin.flags
	sm90=()
	for f in "${flags[@]}"; do [[ $f == -gencode=* ]] || sm90+=("$f"); done
	sm90+=(-gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90)
	run nvcc-sm90 120 nvcc -fatbin "${sm90[@]}" -o "$out/acttail-sm90.fatbin" cuda/acttail.cu &&
		fatbin=$out/acttail-sm90.fatbin
fi

# cuBLAS (optional) is searched on the loader's path, then in
# /usr/local/cuda/lib64; put the toolkit's directory on the path so that
# libcublas finds its libcublasLt beside it.
[[ -d /usr/local/cuda/lib64 ]] && export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

export ACTTAIL_MODEL_DIR=""
[[ -n $shared && -d $shared/models/stories260K ]] && export ACTTAIL_MODEL_DIR=$shared/models/stories260K
echo "model dir: ${ACTTAIL_MODEL_DIR:-none (whole-model test skips)}"

# Order: what matters most first, since every step gets only what is left
# of the budget: the tests with the embedded kernels (the ones the binary
# ships), the benchmarks with those kernels, then the host-built kernels'
# tests, then compute-sanitizer.
# (b) correctness: every op and whole-model logits against the CPU backend.
run cgo-tests 30 "$carry/cudadrv.test" -test.v -test.skip Emulated
run tests-embedded 90 "$carry/cuda.test" -test.v -test.run '^TestGPU'

# (c) benchmarks, embedded kernels.
run bench-kernels 75 "$carry/cuda.test" -test.run '^$' -test.bench 'Copy|MatVec|Sparse|Prefill|DecodeFloor' -test.benchtime 200x
run bench-decode7b 150 "$carry/cuda.test" -test.run '^$' -test.bench 'Decode7B' -test.benchtime 40x

# The product on the GPU: what devices sees (NVML, cuBLAS), a generation,
# and a short sparsity sweep with perplexity, speed and NVML energy.
if [[ -x $carry/acttail-gpu && -n $ACTTAIL_MODEL_DIR ]]; then
	run cli-devices 15 "$carry/acttail-gpu" devices
	run cli-generate 20 "$carry/acttail-gpu" generate --device cuda --model "$ACTTAIL_MODEL_DIR" \
		--prompt "Once upon a time" --max-tokens 64 --temperature 0
	if [[ -f $shared/data/tinystories-calib.txt && -f $shared/data/tinystories-eval.txt ]]; then
		run cli-sweep 60 "$carry/acttail-gpu" bench --sparsity-sweep --device cuda --model "$ACTTAIL_MODEL_DIR" \
			--calib "$shared/data/tinystories-calib.txt" --data "$shared/data/tinystories-eval.txt" \
			--levels 0,0.5,0.8 --methods uniform,acttail --eps-list 0.1 --directions smaller-alpha-sparser \
			--max-eval-tokens 4096 --speed-repeats 1 \
			--out-dir "$out/sweep"
	fi
else
	record cli "skipped (no $carry/acttail-gpu or no model)"
fi

# (b, continued) the kernels this host's nvcc built, and the sanitizers.
if [[ -n $fatbin ]]; then
	run tests-host-nvcc 90 env ACTTAIL_KERNELS="$fatbin" "$carry/cuda.test" -test.v -test.run '^TestGPU'
fi
if command -v compute-sanitizer >/dev/null; then
	run sanitizer 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
		"$carry/cuda.test" -test.run 'GPU(Elementwise|RoPE|RoPECache|Embed|Attention|SiteTables|ArgmaxSample)$'
	# The products on the odd shapes only (-test.short): tails, 16-byte loads
	# and the top-k select are where an out-of-bounds access would be.
	run sanitizer-products 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
		"$carry/cuda.test" -test.short -test.run 'GPU(MatMul|SparseMatMul|Groups)$'
	# Shared-memory races: the radix select and block scan, the block sum.
	run sanitizer-race 40 compute-sanitizer --tool racecheck --error-exitcode 9 \
		"$carry/cuda.test" -test.short -test.run 'GPU(SiteTables|Elementwise)$'
else
	record sanitizer "skipped (no compute-sanitizer)"
fi

# (d) summary.
{
	echo "# GPU check results"
	echo
	echo "Written by bench/gpu-check.sh on $(date -u +%Y-%m-%dT%H:%MZ)."
	echo
	echo '```'
	cat "$out/host.txt"
	echo '```'
	echo
	echo "## Status"
	echo
	echo '```'
	printf '%s\n' "${status[@]}"
	echo '```'
	echo
	echo "## Benchmarks"
	echo
	echo '```'
	grep -h '^Benchmark' "$out"/bench-*.log 2>/dev/null
	echo '```'
	echo
	echo "## The command line on the GPU"
	echo
	echo '```'
	for f in devices generate "bench --sparsity-sweep"; do
		log=$out/cli-${f%% *}.log
		[[ $f == bench* ]] && log=$out/cli-sweep.log
		[[ -f $log ]] && { echo "\$ acttail-gpu $f ..."; tail -n 25 "$log"; echo; }
	done
	echo '```'
	echo
	echo "## Where a decode step's device time goes"
	echo
	echo "Op by op, with CUDA events around each (BenchmarkDecode7B, 8 steps a level):"
	echo
	echo '```'
	grep -h '^timing ' "$out"/bench-*.log 2>/dev/null
	echo '```'
	echo
	echo "## Failures"
	echo
	echo '```'
	grep -h -E -- '--- FAIL|panic:|_test.go:[0-9]+:|ERROR SUMMARY' "$out"/*.log 2>/dev/null | head -n 200
	echo '```'
} >"$results"
echo
echo "================ summary (full: $results, logs: $out/) ================"
printf '%s\n' "${status[@]}"
if command -v column >/dev/null; then
	grep -h '^Benchmark' "$out"/bench-*.log 2>/dev/null | awk '{$2=""; print}' | column -t
else
	grep -h '^Benchmark' "$out"/bench-*.log 2>/dev/null
fi
# On the lent device machine only $OUT comes back: leave the results there.
if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
	mkdir -p "$OUT/gpu-check"
	cp "$results" "$OUT/" 2>/dev/null
	cp "$out"/*.log "$out"/host.txt "$OUT/gpu-check/" 2>/dev/null
	[[ -d $out/sweep ]] && cp -r "$out/sweep" "$OUT/gpu-check/"
	echo "copied $results and the logs to $OUT"
fi
