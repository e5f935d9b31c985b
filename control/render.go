package control

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// stateOrder is the order in which `status` lists flow states: the life of a connection.
var stateOrder = []string{"syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait", "close"}

// WriteStatus writes s as the human-readable text of `seqshiftd status`.
func WriteStatus(w io.Writer, s Status) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "seqshiftd %s, up %s\n", s.Version, formatSeconds(s.UptimeSeconds))
	switch {
	case s.Steering:
		fmt.Fprintf(bw, "steering:     installed\n")
	case s.SteeringDetail != "":
		fmt.Fprintf(bw, "steering:     NOT INSTALLED: %s\n", s.SteeringDetail)
	default:
		fmt.Fprintf(bw, "steering:     NOT INSTALLED\n")
	}
	if s.Datapath != "" {
		fmt.Fprintf(bw, "datapath:     %s", s.Datapath)
		if s.DatapathDetail != "" {
			fmt.Fprintf(bw, " (%s)", s.DatapathDetail)
		}
		fmt.Fprintln(bw)
	}
	if s.LastReloadTime.IsZero() {
		fmt.Fprintf(bw, "policy:       generation %d, not reloaded since start\n", s.Generation)
	} else {
		fmt.Fprintf(bw, "policy:       generation %d, last reload %s (%s ago)\n", s.Generation,
			s.LastReloadTime.Local().Format(time.DateTime), formatSeconds(time.Since(s.LastReloadTime).Seconds()))
	}
	if s.LastReloadError != "" {
		fmt.Fprintf(bw, "last reload:  FAILED, generation %d stays in force: %s\n", s.Generation, s.LastReloadError)
	}
	fmt.Fprintf(bw, "flows:        %d active", s.FlowsActive)
	if states := formatStates(s.FlowsByState); states != "" {
		fmt.Fprintf(bw, " (%s)", states)
	}
	fmt.Fprintln(bw)
	if len(s.Counters) > 0 {
		names := make([]string, 0, len(s.Counters))
		width := 0
		for name := range s.Counters {
			names = append(names, name)
			width = max(width, len(name))
		}
		slices.Sort(names)
		fmt.Fprintln(bw, "counters:")
		for _, name := range names {
			fmt.Fprintf(bw, "  %-*s %d\n", width, name, s.Counters[name])
		}
	}
	return bw.Flush()
}

// formatStates lists non-zero states in connection-life order, unknown ones after, sorted.
func formatStates(byState map[string]int) string {
	var parts []string
	seen := make(map[string]bool, len(stateOrder))
	for _, st := range stateOrder {
		seen[st] = true
		if n := byState[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", st, n))
		}
	}
	var rest []string
	for st, n := range byState {
		if !seen[st] && n > 0 {
			rest = append(rest, fmt.Sprintf("%s %d", st, n))
		}
	}
	slices.Sort(rest)
	return strings.Join(append(parts, rest...), ", ")
}

// WriteFlowsTable writes one line per flow, like `conntrack -L`, as flows yields them:
//
//	tcp  established client=198.18.1.2:40000 server=198.18.2.2:5001 rule=r1 generation=1 shift_c2s=+123 shift_s2c=-456 packets_c2s=10 bytes_c2s=1234 packets_s2c=8 bytes_s2c=567 age_seconds=12 idle_seconds=1
//
// Shifts are the offsets as signed 32-bit deltas, which is how far each side's numbers move
// (offset 4294967173 is shift -123); `flows --json` has both. Exempt flows add exempt=REASON
// after the rule; with the kernel datapath, shifted_in=kernel|daemon says who shifts the flow's
// segments now. Every key is the JSON name of the same value (ages in whole seconds), so a
// script can switch between the two forms without a translation table.
func WriteFlowsTable(w io.Writer, flows func(yield func(FlowInfo) error) error) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	err := flows(func(f FlowInfo) error {
		line = appendFlowLine(line[:0], &f)
		_, err := bw.Write(line)
		return err
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}

func appendFlowLine(b []byte, f *FlowInfo) []byte {
	b = append(b, "tcp  "...)
	b = append(b, f.State...)
	for i := len(f.State); i < len("established"); i++ {
		b = append(b, ' ')
	}
	b = append(b, " client="...)
	b = f.Client.AppendTo(b)
	b = append(b, " server="...)
	b = f.Server.AppendTo(b)
	b = append(b, " rule="...)
	if f.Rule == "" {
		b = append(b, '-')
	} else {
		b = append(b, f.Rule...)
	}
	if f.Exempt != "" {
		b = append(b, " exempt="...)
		b = append(b, f.Exempt...)
	}
	if f.ShiftedIn != "" {
		b = append(b, " shifted_in="...)
		b = append(b, f.ShiftedIn...)
	}
	b = append(b, " generation="...)
	b = strconv.AppendUint(b, f.Generation, 10)
	b = append(b, " shift_c2s="...)
	b = appendDelta(b, f.OffsetC2S)
	b = append(b, " shift_s2c="...)
	b = appendDelta(b, f.OffsetS2C)
	b = append(b, " packets_c2s="...)
	b = strconv.AppendUint(b, f.PacketsC2S, 10)
	b = append(b, " bytes_c2s="...)
	b = strconv.AppendUint(b, f.BytesC2S, 10)
	b = append(b, " packets_s2c="...)
	b = strconv.AppendUint(b, f.PacketsS2C, 10)
	b = append(b, " bytes_s2c="...)
	b = strconv.AppendUint(b, f.BytesS2C, 10)
	b = append(b, " age_seconds="...)
	b = strconv.AppendUint(b, wholeSeconds(f.AgeSeconds), 10)
	b = append(b, " idle_seconds="...)
	b = strconv.AppendUint(b, wholeSeconds(f.IdleSeconds), 10)
	return append(b, '\n')
}

// appendDelta appends an offset as the signed distance it moves sequence numbers: adding
// 0xFFFFFF85 modulo 2^32 is subtracting 123.
func appendDelta(b []byte, off uint32) []byte {
	d := int64(int32(off))
	if d > 0 {
		b = append(b, '+')
	}
	return strconv.AppendInt(b, d, 10)
}

func wholeSeconds(sec float64) uint64 {
	if math.IsNaN(sec) || sec < 0 {
		return 0
	}
	return uint64(sec)
}

// formatSeconds renders a duration compactly with its two most significant units: 0s, 42s, 5m3s,
// 2h1m, 3d4h.
func formatSeconds(sec float64) string {
	if math.IsNaN(sec) || sec < 0 {
		sec = 0
	}
	s := uint64(sec)
	switch {
	case s < 60:
		return strconv.FormatUint(s, 10) + "s"
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// WriteFlowsJSON writes the flows as one JSON array, an element per line, as flows yields them:
// nothing is held in memory beyond one flow. When flows fails midway the array is left
// unterminated, so the output is not mistaken for a complete listing.
func WriteFlowsJSON(w io.Writer, flows func(yield func(FlowInfo) error) error) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	n := 0
	err := flows(func(f FlowInfo) error {
		f.ShiftC2S, f.ShiftS2C = int32(f.OffsetC2S), int32(f.OffsetS2C)
		b, err := json.Marshal(&f)
		if err != nil {
			return fmt.Errorf("encode flow %s -> %s: %w", f.Client, f.Server, err)
		}
		sep := ",\n  "
		if n == 0 {
			sep = "[\n  "
		}
		n++
		bw.WriteString(sep)
		_, err = bw.Write(b)
		return err
	})
	if err == nil {
		if n == 0 {
			_, err = bw.WriteString("[]\n")
		} else {
			_, err = bw.WriteString("\n]\n")
		}
	}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// WriteEvent writes one flow event as conntrack -E does, the flow line after the event's
// type ("[NEW] tcp  syn_sent client=..."), or as one JSON line.
func WriteEvent(w io.Writer, ev Event, asJSON bool) error {
	var b []byte
	if asJSON {
		ev.Flow.ShiftC2S, ev.Flow.ShiftS2C = int32(ev.Flow.OffsetC2S), int32(ev.Flow.OffsetS2C)
		var err error
		if b, err = json.Marshal(&ev); err != nil {
			return err
		}
		b = append(b, '\n')
	} else {
		tag := "[NEW]     "
		if ev.Type == EventDestroy {
			tag = "[DESTROY] "
		}
		b = appendFlowLine(append(b, tag...), &ev.Flow)
	}
	_, err := w.Write(b)
	return err
}
