package cli

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/spf13/pflag"
)

// Log keys every line uses (constant, so logs can be queried).
const (
	logKeyExecution = "execution" // the engine's key too
	logKeyNode      = "node"
)

// logFlags are on every command (root persistent flags, env defaults RECYCLER_LOG_*).
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level on stderr: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log format on stderr: text or json")
}

// logger validates the flags and builds the logger: log/slog to stderr. Every line
// about an execution carries its id (key "execution") and, once the command knows it,
// its node (key "node").
func (l *logFlags) logger(stderr io.Writer) (*slog.Logger, *execNodes, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil || !strings.EqualFold(lvl.String(), l.level) {
		return nil, nil, badInput("--log-level %q: use debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch l.format {
	case "text":
		h = slog.NewTextHandler(stderr, opts)
	case "json":
		h = slog.NewJSONHandler(stderr, opts)
	default:
		return nil, nil, badInput("--log-format %q: use text or json", l.format)
	}
	nodes := &execNodes{}
	return slog.New(&nodeTagger{Handler: h, nodes: nodes}), nodes, nil
}

// execNodes maps execution ids to the node they recycle, for the log lines.
type execNodes struct{ m sync.Map }

func (n *execNodes) set(id, node string) {
	if n != nil && id != "" && node != "" {
		n.m.Store(id, node)
	}
}

// nodeTagger adds the node to every record that names an execution the command knows.
type nodeTagger struct {
	slog.Handler
	nodes *execNodes
	attrs []slog.Attr // from WithAttrs, to find an execution given there
}

func (t *nodeTagger) Handle(ctx context.Context, r slog.Record) error {
	exec := ""
	find := func(a slog.Attr) bool {
		if a.Key == logKeyExecution {
			exec = a.Value.String()
			return false
		}
		return true
	}
	for _, a := range t.attrs {
		find(a)
	}
	r.Attrs(find)
	if node, ok := t.nodes.m.Load(exec); ok && exec != "" {
		r.AddAttrs(slog.String(logKeyNode, node.(string)))
	}
	return t.Handler.Handle(ctx, r)
}

func (t *nodeTagger) WithAttrs(as []slog.Attr) slog.Handler {
	return &nodeTagger{Handler: t.Handler.WithAttrs(as), nodes: t.nodes, attrs: append(append([]slog.Attr(nil), t.attrs...), as...)}
}

func (t *nodeTagger) WithGroup(name string) slog.Handler {
	return &nodeTagger{Handler: t.Handler.WithGroup(name), nodes: t.nodes, attrs: t.attrs}
}

type logCtxKey struct{}

type logging struct {
	log   *slog.Logger
	nodes *execNodes
}

func withLogging(ctx context.Context, l logging) context.Context {
	return context.WithValue(ctx, logCtxKey{}, l)
}

// loggingFrom returns the command's logger (set by the root command before any
// command runs; a discarding one outside Execute).
func loggingFrom(ctx context.Context) logging {
	if l, ok := ctx.Value(logCtxKey{}).(logging); ok {
		return l
	}
	return logging{log: slog.New(slog.DiscardHandler)}
}
