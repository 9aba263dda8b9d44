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
	"strconv"
	"strings"
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
	switch {
	case len(args) == 0:
		usage(stderr)
		return 2
	case args[0] == "-h" || args[0] == "--help":
		usage(stdout)
		return 0
	case args[0] == "help" && len(args) == 1:
		usage(stdout)
		return 0
	case args[0] == "help":
		return run(ctx, append(args[1:len(args):len(args)], "--help"), stdout, stderr)
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

// subcommands are the commands one level down, listed under their parent.
var subcommands = map[string]string{
	"profile show": "print a plan's alpha, sparsity, k and threshold per projection, and plot them per layer",
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
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
		for sub, summary := range subcommands {
			if parent, _, _ := strings.Cut(sub, " "); parent == n {
				fmt.Fprintf(w, "  %-13s %s\n", sub, summary)
			}
		}
	}
	fmt.Fprintln(w, "\nWithout --model, commands run stories260K, built into the binary.")
	fmt.Fprintln(w, "Run 'acttail-gpu <command> --help' for a command's flags.")
}

// errUsage marks a command-line mistake already printed with the usage.
var errUsage = errors.New("usage")

// flagSet is one command's flags. --help prints its usage on stdout; a
// mistake prints the error and the usage on stderr (parse, usageError).
type flagSet struct {
	*pflag.FlagSet
	cmd, synopsis string // "profile show", "plan.json [--plot FILE]"
	stderr        io.Writer
}

// newFlags returns the flags of command cmd, whose usage line is
// "acttail-gpu cmd synopsis".
func newFlags(cmd, synopsis string, stdout, stderr io.Writer) *flagSet {
	fs := &flagSet{FlagSet: pflag.NewFlagSet(cmd, pflag.ContinueOnError), cmd: cmd, synopsis: synopsis, stderr: stderr}
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() { fs.printUsage(stdout) } // pflag calls it for --help and -h only
	return fs
}

// parse parses args, which must hold no positional arguments.
func parse(fs *flagSet, args []string) error { return parseN(fs, args, 0) }

// parseN parses args, which must hold exactly n positional arguments. A
// mistake is printed with the usage (errUsage); --help gives
// pflag.ErrHelp, the usage printed.
func parseN(fs *flagSet, args []string, n int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError(fs, "%v", err)
	}
	switch {
	case fs.NArg() > n:
		return usageError(fs, "unexpected arguments: %s", strings.Join(fs.Args()[n:], " "))
	case fs.NArg() < n:
		return usageError(fs, "missing arguments: want %d, have %d", n, fs.NArg())
	}
	return nil
}

// usageError prints a command-line mistake and the usage on stderr and
// returns errUsage.
func usageError(fs *flagSet, format string, a ...any) error {
	fmt.Fprintf(fs.stderr, "acttail-gpu %s: %s\n\n", fs.cmd, fmt.Sprintf(format, a...))
	fs.printUsage(fs.stderr)
	return errUsage
}

// printUsage writes the usage line, the summary and the flags.
func (fs *flagSet) printUsage(w io.Writer) {
	summary := subcommands[fs.cmd]
	if c, ok := commands[fs.cmd]; ok {
		summary = c.summary
	}
	fmt.Fprintf(w, "Usage: acttail-gpu %s %s\n\n%s.\n", fs.cmd, fs.synopsis, capitalize(summary))
	var own, device []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		switch {
		case f.Hidden:
		case f.Annotations[groupKey] != nil:
			device = append(device, f)
		default:
			own = append(own, f)
		}
	})
	if len(own) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		printFlags(w, fs.cmd, own)
	}
	if len(device) > 0 {
		fmt.Fprintln(w, "\nDevice flags:")
		printFlags(w, fs.cmd, device)
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// groupKey is the flag annotation that puts a flag under "Device flags".
const groupKey = "acttail-group"

// deviceFlag moves flag name of fs under "Device flags" in the usage.
func deviceFlag(fs *flagSet, name string) {
	fs.SetAnnotation(name, groupKey, []string{"device"})
}

// valueNames name a flag's value in the usage where its type would say
// little; the others show their type (int, float, string, list, ...).
var valueNames = map[string]string{
	"model": "PATH|NAME", "plan": "FILE", "serve --plan": "NAME=FILE", "data": "FILE", "calib": "FILE",
	"out": "PATH", "out-dir": "DIR", "fits": "FILE", "kernels": "FATBIN", "addr": "HOST:PORT", "api-key": "KEY",
	"plot": "FILE", "prompt": "TEXT", "shape": "NAME", "default-model": "NAME",
}

// typeNames are the value names of the flag types.
var typeNames = map[string]string{
	"string": "string", "int": "int", "int64": "int", "uint64": "uint", "float64": "float", "duration": "duration",
	"stringArray": "string", "stringSlice": "list", "float64Slice": "list", "size": "size",
}

// usageWidth is where flag descriptions wrap.
const usageWidth = 100

// printFlags writes one entry a flag: "--name VALUE", then the description
// and its default, wrapped and aligned.
func printFlags(w io.Writer, cmd string, flags []*pflag.Flag) {
	lefts := make([]string, len(flags))
	col := 0
	for i, f := range flags {
		lefts[i] = "  --" + f.Name
		name, ok := valueNames[f.Name]
		if n, cmdOK := valueNames[cmd+" --"+f.Name]; cmdOK {
			name, ok = n, true
		}
		if !ok {
			name = typeNames[f.Value.Type()]
		}
		if name != "" && f.Value.Type() != "bool" {
			lefts[i] += " " + name
		}
		if len(lefts[i]) <= 30 {
			col = max(col, len(lefts[i]))
		}
	}
	for i, f := range flags {
		text := f.Usage
		if d := defaultText(f); d != "" {
			text += " (default " + d + ")"
		}
		left := lefts[i]
		if len(left) > col {
			fmt.Fprintln(w, left)
			left = ""
		}
		for j, line := range wrap(text, usageWidth-col-2) {
			if j > 0 {
				left = ""
			}
			fmt.Fprintf(w, "%-*s  %s\n", col, left, line)
		}
	}
}

// defaultText is a flag's default as the usage shows it: nothing for a
// zero value (false, 0, "", an empty list), lists without brackets and
// with short numbers.
func defaultText(f *pflag.Flag) string {
	d := f.DefValue
	switch f.Value.Type() {
	case "bool":
		if d == "false" {
			return ""
		}
		return d
	case "float64Slice", "stringSlice", "stringArray":
		d = strings.TrimSuffix(strings.TrimPrefix(d, "["), "]")
		if f.Value.Type() != "float64Slice" || d == "" {
			return d
		}
		parts := strings.Split(d, ",")
		for i, p := range parts {
			if v, err := strconv.ParseFloat(p, 64); err == nil {
				parts[i] = strconv.FormatFloat(v, 'g', -1, 64)
			}
		}
		return strings.Join(parts, ",")
	}
	switch d {
	case "", "0", "0s", "[]":
		return ""
	}
	return d
}

// wrap breaks text into lines of at most width bytes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}
