#!/bin/sh
# accuracy.sh OUT_DIR: the selection × allocation ablation of
# docs/results/accuracy.md on stories260K, CPU backend.
#
# The calibration text is split by story: the first 4 of its 6 lines
# calibrate (calib-fit), the last 2 (calib-held) are the held-out split
# that hyper-parameters are chosen on, with sampled.txt: 12 stories the
# model samples itself (temperature 1, seeds 1-12). tinystories-eval and
# wikitext-2-test are only reported, never chosen on. Top-k mode, so every
# row realizes its level exactly (the realized columns say so).
set -eu
out=${1:?usage: bench/accuracy.sh OUT_DIR}
data=${DATA:-../shared/data}
mkdir -p "$out"
head -n 4 "$data/tinystories-calib.txt" >"$out/calib-fit.txt"
tail -n +5 "$data/tinystories-calib.txt" >"$out/calib-held.txt"
bin=$(mktemp -d)/acttail-gpu # not into OUT_DIR, which may be under docs/
go build -o "$bin" ./cmd/acttail-gpu
model=${MODEL:-../shared/models/stories260K/stories260K.bin}
for seed in 1 2 3 4 5 6 7 8 9 10 11 12; do
	"$bin" generate --model "$model" --temperature 1 --max-tokens 480 --seed $seed 2>/dev/null | tr '\n' ' '
	echo
done >"$out/sampled.txt"
nice "$bin" bench --model "$model" --sparsity-sweep --speed=false \
	--levels 0.5,0.6,0.7,0.8,0.9 --methods uniform,acttail \
	--selections magnitude,wina,wina-shared --eps-list 0.1,0.3 \
	--ctx 512 --stride 256 --max-eval-tokens 6000 \
	--fits "$out/fits.json" --calib "$out/calib-fit.txt" \
	--data "$out/calib-held.txt" --data "$out/sampled.txt" --data "$data/tinystories-eval.txt" --data "$data/wikitext-2-test.txt" \
	--out-dir "$out" 2>"$out/log.txt" | tee "$out/table.txt"
python3 bench/accuracy_table.py "$out" >"$out/table.md"
