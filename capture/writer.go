package capture

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Writer writes a pcap file with nanosecond timestamps in little-endian byte order, the format
// tcpdump -j adapter_unsynced --time-stamp-precision=nano writes on x86 and arm64.
type Writer struct {
	w    *bufio.Writer
	snap int
	hdr  [pcapRecordHeader]byte
}

// NewWriter writes the file header for frames of link type link, cut at snap bytes (0: not
// cut), and returns a Writer for them. Flush must be called at the end.
func NewWriter(w io.Writer, link LinkType, snap int) (*Writer, error) {
	if snap <= 0 || snap > MaxRecord {
		snap = MaxRecord
	}
	pw := &Writer{w: bufio.NewWriterSize(w, 1<<16), snap: snap}
	var h [pcapHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagicNano)
	binary.LittleEndian.PutUint16(h[4:], 2) // version 2.4, the only one there is
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], uint32(snap))
	binary.LittleEndian.PutUint32(h[20:], uint32(link))
	if _, err := pw.w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return pw, nil
}

// WriteFrame writes one frame captured at t whose length on the wire was orig (at least
// len(data)); data beyond the snap length is cut.
func (pw *Writer) WriteFrame(t time.Time, data []byte, orig int) error {
	if len(data) > pw.snap {
		data = data[:pw.snap]
	}
	ns := t.UnixNano()
	binary.LittleEndian.PutUint32(pw.hdr[0:], uint32(ns/1e9))
	binary.LittleEndian.PutUint32(pw.hdr[4:], uint32(ns%1e9))
	binary.LittleEndian.PutUint32(pw.hdr[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(pw.hdr[12:], uint32(max(orig, len(data))))
	if _, err := pw.w.Write(pw.hdr[:]); err != nil {
		return fmt.Errorf("write pcap record: %w", err)
	}
	if _, err := pw.w.Write(data); err != nil {
		return fmt.Errorf("write pcap record: %w", err)
	}
	return nil
}

// Flush writes what is buffered.
func (pw *Writer) Flush() error { return pw.w.Flush() }
