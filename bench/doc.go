// Package bench holds the project's end-to-end benchmarks (go test -bench)
// and the scripts that run them on other machines. Benchmarks report ratios
// measured in the same run (achieved vs measured memory bandwidth), never
// timed assertions.
package bench
