#!/usr/bin/env bash
# check-fatbin.sh: is the embedded fatbin built from the current kernels?
#
#   cuda/check-fatbin.sh           # CI: fail if the sources changed since the
#                                  # embedded fatbin was built, and rebuild
#                                  # them to prove they compile
#   cuda/check-fatbin.sh --update  # rebuild, refresh the embedded fatbin and
#                                  # its SOURCES.sha256
#
# Fatbin bytes differ between nvcc versions, so the check compares a hash
# list of the sources and the nvcc flags (SOURCES.sha256), not the binary.
# Needs nvcc >= 11.8 on PATH (or NVCC=...); run from anywhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
nvcc=${NVCC:-nvcc}
kernels=runtime/backend/cuda/kernels
record=$kernels/SOURCES.sha256

sources() {
	echo "# nvcc flags: $(head -n1 cuda/fatbin.flags)"
	find cuda -maxdepth 1 \( -name '*.cu' -o -name '*.cuh' -o -name fatbin.flags \) -print0 |
		LC_ALL=C sort -z | xargs -0 sha256sum
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
read -r -a flags <cuda/fatbin.flags
"$nvcc" -fatbin "${flags[@]}" -o "$tmp/acttail.fatbin" cuda/acttail.cu
echo "built with $("$nvcc" --version | tail -n1)"

if [[ ${1:-} == --update ]]; then
	cp "$tmp/acttail.fatbin" "$kernels/acttail.fatbin"
	sources >"$record"
	echo "updated $kernels/acttail.fatbin ($(wc -c <"$kernels/acttail.fatbin") bytes) and $record"
	exit 0
fi
if ! diff -u "$record" <(sources); then
	echo "check-fatbin: $kernels/acttail.fatbin is stale: run cuda/check-fatbin.sh --update and commit both files" >&2
	exit 1
fi
echo "check-fatbin: embedded fatbin matches the sources"
