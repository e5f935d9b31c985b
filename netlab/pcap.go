package netlab

import (
	"fmt"
	"io"
	"time"

	"github.com/seqshiftd/seqshiftd/capture"
)

// rawFrame is one recorded frame as the capture socket delivered it (cut at snapLen).
type rawFrame struct {
	t    time.Time
	data []byte
	wire int // the frame's length on the wire: a GSO super-packet's whole length
}

// WritePcap writes the frames recorded so far (the TCP segments and TCP-quoting ICMP errors
// Segments and ICMPErrors return) as a pcap file, Ethernet frames cut at the capture's snap
// length, for `seqshiftd verify` and for a person with Wireshark.
func (c *Capture) WritePcap(w io.Writer) error {
	c.mu.Lock()
	frames := c.frames[:len(c.frames):len(c.frames)]
	c.mu.Unlock()
	pw, err := capture.NewWriter(w, capture.LinkEthernet, snapLen)
	if err != nil {
		return fmt.Errorf("capture on %s: %w", c.iface, err)
	}
	for _, f := range frames {
		if err := pw.WriteFrame(f.t, f.data, f.wire); err != nil {
			return fmt.Errorf("capture on %s: %w", c.iface, err)
		}
	}
	if err := pw.Flush(); err != nil {
		return fmt.Errorf("capture on %s: %w", c.iface, err)
	}
	return nil
}
