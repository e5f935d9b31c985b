// Package footprint keeps the record of what seqshiftd installed on the system, so that
// `seqshiftd teardown` can remove exactly that even when the configuration file is broken,
// edited since the start, or gone.
//
// The daemon writes the record before it installs anything (write-ahead: a crash half-way
// through installing still leaves a record of everything that may be there) and keeps, beside
// its own objects, those a previous run recorded and did not remove. The record is a small
// JSON document listing objects by kind, so that datapaths other than policy routing (tc
// filters of a kernel datapath) add a kind, not a format:
//
//	{"version":1,"pid":1234,"written":"...","config":"/etc/seqshiftd/seqshiftd.yaml",
//	 "objects":[{"kind":"steering","tun":"seqshift0","ifaces":["eth0","eth1"],
//	             "ids":{"table":5813,"priority":5813,"protocol":213}},
//	            {"kind":"tc","tun":"seqshift0","ifaces":["eth0","eth1"],"ids":{"priority":5813},
//	             "paths":{"pin_dir":"/sys/fs/bpf/seqshiftd"}}]}
//
// What footprint must never do: follow a symbolic link or block on a FIFO at the record's path,
// trust a record that others could have written (a planted record would make teardown remove
// objects of the attacker's choosing), read an unbounded file, or leave a half-written record
// (it is replaced atomically).
package footprint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kinds of objects a record lists. A kind is the name teardown dispatches on.
const (
	// KindSteering is the policy routing of package steering: rules and routes found by
	// IDs "table", "priority" and "protocol"; Tun and Ifaces describe them.
	KindSteering = "steering"
	// KindTC is the kernel datapath of package tcshift: its tc filters on Ifaces and on the
	// TAP (Tun), found by IDs "priority", the flow map pinned under Paths "pin_dir", and the
	// clsact qdiscs it Created (removed once no filter is left on them).
	KindTC = "tc"
)

// Version is the record format this package writes and reads.
const Version = 1

// maxSize bounds a record: a few objects take a few hundred bytes.
const maxSize = 64 << 10

// Object is one thing installed, identified by its kind and numbers.
type Object struct {
	Kind   string            `json:"kind"`
	Tun    string            `json:"tun,omitempty"`
	Ifaces []string          `json:"ifaces,omitempty"`
	IDs    map[string]int    `json:"ids,omitempty"`
	Paths  map[string]string `json:"paths,omitempty"`
	// Created lists the interfaces on which seqshiftd created what its objects hang on (tc: the
	// clsact qdisc), so that teardown removes that too once it is empty, and only that: an
	// existing qdisc may be someone else's. It is state, not identity: Equal ignores it.
	Created []string `json:"created,omitempty"`
}

// Equal reports whether o and p name the same installed object (Created aside).
func (o Object) Equal(p Object) bool {
	return o.Kind == p.Kind && o.Tun == p.Tun && slices.Equal(o.Ifaces, p.Ifaces) &&
		sameMap(o.IDs, p.IDs) && sameMap(o.Paths, p.Paths)
}

func sameMap[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// String describes the object for messages: `steering (tun seqshift0; priority=5813 ...)`.
func (o Object) String() string {
	keys := make([]string, 0, len(o.IDs))
	for k := range o.IDs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	b.WriteString(o.Kind)
	b.WriteString(" (")
	sep := ""
	if o.Tun != "" {
		fmt.Fprintf(&b, "tun %s", o.Tun)
		sep = "; "
	}
	for i, k := range keys {
		if i == 0 {
			b.WriteString(sep)
		} else {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, o.IDs[k])
	}
	for _, k := range slices.Sorted(maps.Keys(o.Paths)) {
		fmt.Fprintf(&b, " %s=%s", k, o.Paths[k])
	}
	if len(o.Created) > 0 {
		fmt.Fprintf(&b, " created on %s", strings.Join(o.Created, ","))
	}
	b.WriteByte(')')
	return b.String()
}

// Record is the whole file.
type Record struct {
	Version int       `json:"version"`
	PID     int       `json:"pid"`
	Written time.Time `json:"written"`
	Config  string    `json:"config,omitempty"`
	Objects []Object  `json:"objects"`
}

// Merge returns cur followed by every object of prev that cur does not list: what a new run
// installs plus what an earlier run left that it will not replace (the earlier run used other
// numbers, or another kind of datapath). What an earlier run Created on an object cur lists
// too is carried over: the new run finds it in place and would not know it is seqshiftd's.
func Merge(prev, cur []Object) []Object {
	out := slices.Clone(cur)
	for _, p := range prev {
		if i := slices.IndexFunc(out, p.Equal); i >= 0 {
			out[i].Created = union(out[i].Created, p.Created)
			continue
		}
		out = append(out, p)
	}
	return out
}

// union returns a followed by the elements of b it lacks.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Write replaces the record at path atomically: a temporary file in the same directory
// (created exclusively, mode 0600), fsync, rename, fsync of the directory. The directory is
// created (0700) if missing.
func Write(path string, r Record) (err error) {
	r.Version = Version
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("install record: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("install record: %w", err)
	}
	// CreateTemp opens with O_EXCL under a random name: it never follows a link planted in
	// advance. rename replaces a link at path itself, never its target.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("install record: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("install record: write %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("install record: fsync %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("install record: close %s: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("install record: %w", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Remove deletes the record; a missing one is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("install record: %w", err)
	}
	return nil
}

// Read loads the record at path. It opens it without following a symbolic link and without
// blocking, and refuses anything but a regular file of at most 64 KiB that neither group nor
// others may write. A missing file wraps fs.ErrNotExist. Objects of a kind this version does
// not know are returned as they are: the caller says it cannot remove them.
func Read(path string) (Record, error) {
	var r Record
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return r, fmt.Errorf("install record %s is a symbolic link; refusing to follow it", path)
		}
		return r, fmt.Errorf("install record: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return r, fmt.Errorf("install record: %w", err)
	}
	switch {
	case !st.Mode().IsRegular():
		return r, fmt.Errorf("install record %s is not a regular file (%s)", path, st.Mode().Type())
	case st.Mode().Perm()&0o022 != 0:
		return r, fmt.Errorf("install record %s is writable by group or others (mode %04o); not trusting it", path, st.Mode().Perm())
	case st.Size() > maxSize:
		return r, fmt.Errorf("install record %s is %d bytes, more than a record can be (%d)", path, st.Size(), maxSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return r, fmt.Errorf("install record: read %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("install record %s: %w", path, err)
	}
	if r.Version != Version {
		return Record{}, fmt.Errorf("install record %s: version %d, this seqshiftd reads version %d", path, r.Version, Version)
	}
	for i, o := range r.Objects {
		if o.Kind == "" {
			return Record{}, fmt.Errorf("install record %s: object %d has no kind", path, i)
		}
	}
	return r, nil
}
