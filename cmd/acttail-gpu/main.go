// Command acttail-gpu runs Llama-family models with ActTail activation
// sparsity on the CPU or a CUDA GPU.
//
//	acttail-gpu <command> [flags]
//
// Run `acttail-gpu help` for the commands and `acttail-gpu <command> --help`
// for their flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/spf13/pflag"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is filled in init: the commands refer to it for their usage.
var commands map[string]command

func init() {
	commands = map[string]command{
		"generate": {"stream a completion of a prompt", runGenerate},
		"eval":     {"perplexity of a text file with sliding windows", runEval},
		"info":     {"config, tensors and size of a checkpoint", runInfo},
		"convert":  {"write a checkpoint as a Hugging Face directory or GGUF file", runConvert},
		"synth":    {"write a random-weight model of a named shape (speed tests only)", runSynth},
		"bench":    {"perplexity, speed and energy over sparsity levels and allocation methods (--sparsity-sweep)", runBench},
		"profile":  {"fit heavy-tail exponents, allocate sparsity budgets, calibrate, write a plan", runProfile},
		"devices":  {"CPU and GPUs the runtime sees, and the backend --device auto picks", runDevices},
		"serve":    {"OpenAI-compatible HTTP server with streaming", runServe},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "acttail-gpu: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "acttail-gpu %s: %v\n", args[0], err)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "acttail-gpu: Llama-family inference with ActTail activation sparsity")
	fmt.Fprintln(w, "\nUsage: acttail-gpu <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'acttail-gpu <command> --help' for a command's flags.")
}

// errUsage marks a flag error already printed with the usage.
var errUsage = errors.New("usage")

// newFlags returns a flag set that prints its usage to stderr.
func newFlags(name, args string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: acttail-gpu %s %s\n\n%s.\n\nFlags:\n", name, args, commands[name].summary)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, mapping flag errors to errUsage (pflag printed them).
func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}
