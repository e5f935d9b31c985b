package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// want is a frame as a test expects Reader to return it.
type want struct {
	t     time.Time
	data  []byte
	orig  int
	link  LinkType
	iface int
}

func readAll(t *testing.T, file []byte) ([]want, Format) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	var got []want
	var f Frame
	for {
		err := r.Next(&f)
		if errors.Is(err, io.EOF) {
			return got, r.Format()
		}
		if err != nil {
			t.Fatalf("Next after %d frames: %v", len(got), err)
		}
		if f.Number != len(got)+1 {
			t.Fatalf("frame number %d, want %d", f.Number, len(got)+1)
		}
		got = append(got, want{f.Time, bytes.Clone(f.Data), f.OrigLen, f.Link, f.Interface})
	}
}

func sameFrames(t *testing.T, got, exp []want) {
	t.Helper()
	if len(got) != len(exp) {
		t.Fatalf("%d frames, want %d", len(got), len(exp))
	}
	for i := range exp {
		g, e := got[i], exp[i]
		if !g.t.Equal(e.t) || !bytes.Equal(g.data, e.data) || g.orig != e.orig || g.link != e.link || g.iface != e.iface {
			t.Errorf("frame %d:\n got  %v %x orig %d link %d iface %d\n want %v %x orig %d link %d iface %d",
				i+1, g.t, g.data, g.orig, g.link, g.iface, e.t, e.data, e.orig, e.link, e.iface)
		}
	}
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

var t0 = time.Unix(1764500000, 123456789)

func TestReader_PcapInBothByteOrdersAndPrecisions(t *testing.T) {
	frames := []testFrame{
		{t: t0, data: payload(60, 1), orig: 60},
		{t: t0.Add(1500 * time.Microsecond), data: payload(96, 2), orig: 1514}, // cut by the snap length
		{t: t0.Add(time.Second), data: payload(3, 3), orig: 3},
	}
	for _, tt := range []struct {
		name  string
		order byteOrder
		nano  bool
	}{
		{"little-endian microseconds", binary.LittleEndian, false},
		{"big-endian microseconds", binary.BigEndian, false},
		{"little-endian nanoseconds", binary.LittleEndian, true},
		{"big-endian nanoseconds", binary.BigEndian, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, format := readAll(t, pcapFile(tt.order, tt.nano, LinkSLL2, 96, frames))
			if format != FormatPcap {
				t.Errorf("format %v", format)
			}
			var exp []want
			for _, f := range frames {
				ts := f.t
				if !tt.nano {
					ts = ts.Truncate(time.Microsecond)
				}
				exp = append(exp, want{ts, f.data, f.orig, LinkSLL2, 0})
			}
			sameFrames(t, got, exp)
		})
	}
}

// expectedTime converts t to ticks of the resolution and back the way the format defines it,
// with exact arithmetic.
func expectedTime(t time.Time, units uint64) time.Time {
	u := new(big.Int).SetUint64(units)
	ns := new(big.Int).Mul(big.NewInt(t.UnixNano()), u)
	ticks := ns.Div(ns, big.NewInt(1e9))
	sec, frac := new(big.Int).DivMod(ticks, u, new(big.Int))
	frac.Mul(frac, big.NewInt(1e9)).Div(frac, u)
	return time.Unix(sec.Int64(), frac.Int64())
}

func TestReader_PcapNGSectionsInterfacesAndBlocks(t *testing.T) {
	for _, first := range []byteOrder{binary.LittleEndian, binary.BigEndian} {
		t.Run(first.String(), func(t *testing.T) {
			second := byteOrder(binary.BigEndian)
			if first == binary.BigEndian {
				second = binary.LittleEndian
			}
			ifs := []ngIface{
				{link: LinkEthernet, snap: 0},                // microseconds by default
				{link: LinkSLL2, snap: 128, tsresol: 9},      // nanoseconds
				{link: LinkRaw, snap: 0, tsresol: 0x80 | 20}, // 2^-20 s
			}
			var file []byte
			var exp []want
			file = append(file, ngSection(first)...)
			for _, i := range ifs {
				file = append(file, ngInterfaceBlock(first, i)...)
			}
			for k, idx := range []int{0, 1, 2, 1, 0} {
				f := testFrame{t: t0.Add(time.Duration(k) * 333333 * time.Nanosecond), data: payload(40+k, byte(k)), orig: 40 + k}
				if idx == 1 {
					f.orig += 1000 // cut
				}
				file = append(file, epbBlock(first, ifs[idx], idx, f)...)
				exp = append(exp, want{expectedTime(f.t, unitsOf(ifs[idx].tsresol)), f.data, f.orig, ifs[idx].link, idx})
				if k == 1 {
					// A block type Reader does not know (a name resolution block) is skipped.
					file = append(file, ngBlock(first, 4, []byte{0, 0, 0, 0})...)
				}
			}
			// A simple packet block belongs to interface 0 and carries no time.
			spb := testFrame{data: payload(30, 9), orig: 30}
			file = append(file, spbBlock(first, spb)...)
			exp = append(exp, want{time.Unix(0, 0), spb.data, 30, LinkEthernet, 0})
			// A second section in the other byte order starts with no interfaces.
			file = append(file, ngSection(second)...)
			file = append(file, ngInterfaceBlock(second, ngIface{link: LinkSLL, tsresol: 6})...)
			f := testFrame{t: t0.Add(time.Hour), data: payload(50, 7), orig: 50}
			file = append(file, epbBlock(second, ngIface{link: LinkSLL, tsresol: 6}, 0, f)...)
			exp = append(exp, want{f.t.Truncate(time.Microsecond), f.data, 50, LinkSLL, 0})

			got, format := readAll(t, file)
			if format != FormatPcapNG {
				t.Errorf("format %v", format)
			}
			sameFrames(t, got, exp)
		})
	}
}

// gopacket's pcapgo writes the files here: a second implementation of both formats.
func TestReader_ReadsWhatGopacketWrites(t *testing.T) {
	frames := []testFrame{
		{t: t0, data: payload(60, 1), orig: 60},
		{t: t0.Add(time.Millisecond), data: payload(80, 2), orig: 1500},
	}
	t.Run("pcap", func(t *testing.T) {
		var b bytes.Buffer
		w := pcapgo.NewWriterNanos(&b)
		if err := w.WriteFileHeader(65535, layers.LinkTypeLinuxSLL); err != nil {
			t.Fatal(err)
		}
		var exp []want
		for _, f := range frames {
			ci := gopacket.CaptureInfo{Timestamp: f.t, CaptureLength: len(f.data), Length: f.orig}
			if err := w.WritePacket(ci, f.data); err != nil {
				t.Fatal(err)
			}
			exp = append(exp, want{f.t, f.data, f.orig, LinkSLL, 0})
		}
		got, _ := readAll(t, b.Bytes())
		sameFrames(t, got, exp)
	})
	t.Run("pcapng with two interfaces", func(t *testing.T) {
		var b bytes.Buffer
		w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		id, err := w.AddInterface(pcapgo.NgInterface{Name: "any", LinkType: layers.LinkType(LinkSLL2), SnapLength: 262144, TimestampResolution: 9})
		if err != nil {
			t.Fatal(err)
		}
		var exp []want
		for k, f := range frames {
			ifc, link, ts := 0, LinkEthernet, f.t
			if k == 1 {
				ifc, link = id, LinkSLL2
			}
			if k == 0 {
				ts = ts.Truncate(time.Nanosecond) // pcapgo's default interface is nanosecond too
			}
			ci := gopacket.CaptureInfo{Timestamp: f.t, CaptureLength: len(f.data), Length: f.orig, InterfaceIndex: ifc}
			if err := w.WritePacket(ci, f.data); err != nil {
				t.Fatal(err)
			}
			exp = append(exp, want{ts, f.data, f.orig, link, ifc})
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		got, _ := readAll(t, b.Bytes())
		sameFrames(t, got, exp)
	})
}

// And gopacket reads what Writer writes.
func TestWriter_GopacketReadsIt(t *testing.T) {
	var b bytes.Buffer
	w, err := NewWriter(&b, LinkEthernet, 100)
	if err != nil {
		t.Fatal(err)
	}
	frames := []testFrame{{t: t0, data: payload(60, 1), orig: 60}, {t: t0.Add(time.Nanosecond), data: payload(150, 2), orig: 150}}
	for _, f := range frames {
		if err := w.WriteFrame(f.t, f.data, f.orig); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v", r.LinkType())
	}
	for i, f := range frames {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("frame %d: %v", i+1, err)
		}
		wantData := f.data[:min(len(f.data), 100)]
		if !ci.Timestamp.Equal(f.t) || !bytes.Equal(data, wantData) || ci.Length != f.orig {
			t.Errorf("frame %d: %v %x len %d", i+1, ci.Timestamp, data, ci.Length)
		}
	}
}

func TestReader_RejectsWhatIsNotACaptureAndStopsAtACutRecord(t *testing.T) {
	good := pcapFile(binary.LittleEndian, true, LinkEthernet, 0, []testFrame{{t: t0, data: payload(60, 1), orig: 60}})
	huge := bytes.Clone(good)
	binary.LittleEndian.PutUint32(huge[pcapHeaderSize+8:], MaxRecord+1)
	ngBad := append(ngSection(binary.LittleEndian), ngBlock(binary.LittleEndian, ngEPB, make([]byte, 20))...)
	for _, tt := range []struct {
		name, file, err string
	}{
		{"not a capture", "GET / HTTP/1.1\r\n\r\n", "not a pcap or pcapng file"},
		{"empty", "", "read file header"},
		{"cut in the header", string(good[:10]), "read pcap header"},
		{"cut in a record", string(good[:len(good)-5]), "record of 60 bytes"},
		{"record beyond MaxRecord", string(huge), "more than"},
		{"packet of an undeclared interface", string(ngBad), "no interface description block declared"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewReader(strings.NewReader(tt.file))
			if err == nil {
				var f Frame
				for err == nil {
					err = r.Next(&f)
				}
			}
			if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %v, want one saying %q", err, tt.err)
			}
		})
	}
}

func TestFrameIP_FindsTheIPPacketInEveryLinkType(t *testing.T) {
	ip4 := append([]byte{0x45}, payload(39, 1)...)
	ip6 := append([]byte{0x60}, payload(59, 2)...)
	eth := func(types ...uint16) []byte {
		b := payload(12, 9)
		for _, v := range types {
			b = binary.BigEndian.AppendUint16(b, v)
			if v == etherType8021Q || v == etherTypeQinQ {
				b = append(b, 0x00, 0x05) // TCI
			}
		}
		return b
	}
	sll := func(proto uint16) []byte { return binary.BigEndian.AppendUint16(payload(14, 3), proto) }
	sll2 := func(proto uint16) []byte { return append(binary.BigEndian.AppendUint16(nil, proto), payload(18, 4)...) }
	for _, tt := range []struct {
		name string
		link LinkType
		head []byte
		ip   []byte
		ok   bool
	}{
		{"ethernet IPv4", LinkEthernet, eth(0x0800), ip4, true},
		{"ethernet IPv6", LinkEthernet, eth(0x86dd), ip6, true},
		{"802.1Q tagged", LinkEthernet, eth(etherType8021Q, 0x0800), ip4, true},
		{"802.1ad and 802.1Q tagged", LinkEthernet, eth(etherTypeQinQ, etherType8021Q, 0x86dd), ip6, true},
		{"ethernet ARP", LinkEthernet, eth(0x0806), ip4, false},
		{"SLL IPv4", LinkSLL, sll(0x0800), ip4, true},
		{"SLL IPv6", LinkSLL, sll(0x86dd), ip6, true},
		{"SLL2 IPv4", LinkSLL2, sll2(0x0800), ip4, true},
		{"SLL2 IPv6", LinkSLL2, sll2(0x86dd), ip6, true},
		{"raw IPv4", LinkRaw, nil, ip4, true},
		{"raw IPv6", LinkRaw, nil, ip6, true},
		{"IPv4 link type", LinkIPv4, nil, ip4, true},
		{"IPv6 link type", LinkIPv6, nil, ip6, true},
		{"raw, neither version", LinkRaw, nil, []byte{0x10, 0, 0}, false},
		{"unknown link type", LinkType(147), nil, ip4, false},
		{"cut inside the VLAN tag", LinkEthernet, eth(etherType8021Q)[:15], nil, false},
		{"cut before IP", LinkSLL2, sll2(0x0800), nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := Frame{Link: tt.link, Data: append(bytes.Clone(tt.head), tt.ip...)}
			f.OrigLen = len(f.Data)
			ip, linkLen, ok := f.IP()
			if ok != tt.ok {
				t.Fatalf("ok %v, want %v", ok, tt.ok)
			}
			if ok && (!bytes.Equal(ip, tt.ip) || linkLen != len(tt.head)) {
				t.Errorf("IP %x at %d, want %x at %d", ip, linkLen, tt.ip, len(tt.head))
			}
		})
	}
}
