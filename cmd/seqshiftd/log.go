package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// newLogger builds the daemon's logger. format "auto" picks a console encoder when stderr is a
// terminal (an operator running it by hand) and JSON otherwise (journald, log shippers). When w
// is the journal's stream (systemd's JOURNAL_STREAM names it), each line starts with its
// syslog priority, "<3>" for an error, which journald strips and records as PRIORITY=, so
// `journalctl -p err -u seqshiftd` shows the errors and nothing else.
func newLogger(format string, level zap.AtomicLevel, w io.Writer) *zap.Logger {
	if format == "" || format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			format = "console"
		}
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	if f, ok := w.(*os.File); ok && isJournalStream(f, os.Getenv("JOURNAL_STREAM")) {
		enc = priorityEncoder{enc}
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(w), level)
	return zap.New(core, zap.ErrorOutput(zapcore.AddSync(w)))
}

// isJournalStream reports whether f is the stream systemd connected to the journal: systemd
// sets JOURNAL_STREAM to "DEVICE:INODE" of that stream, and checking the numbers (rather than
// that the variable is set) keeps a child whose stderr was redirected elsewhere from writing
// priority prefixes into a file (sd_journal_stream_fd(3), systemd.exec(5)).
func isJournalStream(f *os.File, env string) bool {
	dev, ino, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return st.Dev == d && st.Ino == i
}

// priorityEncoder prefixes each encoded line with its syslog priority in journald's "<N>" form
// (SyslogLevelPrefix=yes, the default). The rest of the line is unchanged, JSON or console.
type priorityEncoder struct{ zapcore.Encoder }

var linePool = buffer.NewPool()

func (e priorityEncoder) Clone() zapcore.Encoder { return priorityEncoder{e.Encoder.Clone()} }

func (e priorityEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line, err := e.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return nil, err
	}
	out := linePool.Get()
	out.AppendByte('<')
	out.AppendInt(int64(syslogPriority(ent.Level)))
	out.AppendByte('>')
	_, _ = out.Write(line.Bytes())
	line.Free()
	return out, nil
}

// syslogPriority maps zap's levels to syslog(3) priorities: debug 7, info 6, warn 4, error 3,
// and the levels that end the process (dpanic, panic, fatal) 2 (critical).
func syslogPriority(l zapcore.Level) int {
	switch {
	case l <= zapcore.DebugLevel:
		return 7
	case l == zapcore.InfoLevel:
		return 6
	case l == zapcore.WarnLevel:
		return 4
	case l == zapcore.ErrorLevel:
		return 3
	}
	return 2
}

func parseLevel(s string) (zapcore.Level, error) {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q: %w", s, err)
	}
	return l, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
