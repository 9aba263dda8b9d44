#!/usr/bin/env bash
# reliability.sh: load and faults on `acttail-gpu serve`, on loopback only,
# bounded (under a minute with stories260K; killed at 10). From the repository root:
#
#   bench/reliability.sh [MODEL]
#
# It builds the binary and the driver (bench/reliability), which serves
# MODEL (default stories260K) on a free 127.0.0.1 port with --device cpu,
# runs concurrent streams, a burst past the queue (429), slow and vanishing
# clients, slowloris, a connection flood, malformed requests and SIGTERM
# drains, samples the server's RSS, and writes docs/results/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/reliability
mkdir -p "$out"
go build -o "$out/acttail-gpu" ./cmd/acttail-gpu
go build -o "$out/driver" ./bench/reliability
args=(-bin "$out/acttail-gpu" -out docs/results/reliability.md)
if [[ $# -gt 0 ]]; then
	args+=(-model "$1")
fi
exec timeout 600 "$out/driver" "${args[@]}"
