package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/seqshiftd/seqshiftd/capture"
)

// handshakePcap writes a raw-IP capture of a three-way handshake whose client ISN is cISN and
// server ISN sISN; the last ACK acknowledges sISN+1+ackSkew.
func handshakePcap(t *testing.T, path string, cISN, sISN, ackSkew uint32) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := capture.NewWriter(f, capture.LinkRaw, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, s := net.IPv4(198, 18, 0, 2), net.IPv4(198, 19, 0, 2)
	for i, seg := range []struct {
		c2s      bool
		syn, ack bool
		seq, an  uint32
	}{
		{true, true, false, cISN, 0},
		{false, true, true, sISN, cISN + 1},
		{true, false, true, cISN + 1, sISN + 1 + ackSkew},
	} {
		src, dst, sp, dp := c, s, layers.TCPPort(40000), layers.TCPPort(502)
		if !seg.c2s {
			src, dst, sp, dp = s, c, dp, sp
		}
		ip := &layers.IPv4{Version: 4, TTL: 64, Id: uint16(i + 1), Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
		tcp := &layers.TCP{SrcPort: sp, DstPort: dp, Seq: seg.seq, Ack: seg.an, SYN: seg.syn, ACK: seg.ack, Window: 1000}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteFrame(time.Unix(1764500000, int64(i)*1000), buf.Bytes(), len(buf.Bytes())); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestVerify_ExitCodes(t *testing.T) {
	dir := t.TempDir()
	client, server, tampered := filepath.Join(dir, "c.pcap"), filepath.Join(dir, "s.pcap"), filepath.Join(dir, "t.pcap")
	handshakePcap(t, client, 100, 5000, 0)
	handshakePcap(t, server, 1000, 5000, 0)   // client_isn fixed 1000: offset +900 one way, 0 the other
	handshakePcap(t, tampered, 1000, 5000, 7) // the last ACK is off by 7 on the server's side
	junk := filepath.Join(dir, "junk.pcap")
	if err := os.WriteFile(junk, []byte("not a capture at all"), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, errs := runCLI("verify", client, server)
	if code != 0 || !strings.Contains(out, "offset +900") || !strings.Contains(out, "All map.") {
		t.Errorf("mapping captures: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = runCLI("verify", "--json", client, tampered)
	var r struct {
		OK          bool `json:"ok"`
		Connections []struct {
			FirstBreak struct {
				What   string `json:"what"`
				Server struct {
					Frame int `json:"frame"`
				} `json:"server_capture"`
			} `json:"first_break"`
		} `json:"connections"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if code != 1 || r.OK || len(r.Connections) != 1 || r.Connections[0].FirstBreak.Server.Frame != 3 ||
		!strings.HasPrefix(r.Connections[0].FirstBreak.What, "ack ") {
		t.Errorf("tampered ack: exit %d, report %+v", code, r)
	}
	for _, args := range [][]string{{client}, {client, server, server}, {client, filepath.Join(dir, "missing.pcap")}, {junk, server}} {
		if code, _, errs := runCLI(append([]string{"verify"}, args...)...); code != 2 || errs == "" {
			t.Errorf("verify %v: exit %d, stderr %q; want 2 with a message", args, code, errs)
		}
	}
}
