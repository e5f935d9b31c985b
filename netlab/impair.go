package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Impairment describes the loss and reordering the router applies to forwarded TCP traffic, in
// both directions. It stands in for tc's netem, which many kernels (this project's CI among them)
// are built without, and behaves the same on every kernel.
type Impairment struct {
	// Loss is the probability that a TCP segment is dropped. Segments with SYN, FIN or RST are
	// never dropped: their loss only adds second-long retransmission timeouts to a test.
	Loss float64
	// Reorder is the probability that a packet is held back and sent after the next two packets
	// of its direction (or after 2 ms, whichever comes first).
	Reorder float64
	// Seed makes the sequence of decisions reproducible; 0 picks one at random.
	Seed uint64
}

// Directions through an impairer, for ImpairStats.
const (
	ToServer = 0
	ToClient = 1
)

// ImpairStats counts an impairer's decisions per direction (ToServer, ToClient).
type ImpairStats struct {
	Passed, Dropped, Reordered [2]uint64
}

// Impairer is a running impairment: the router steers forwarded packets through a TUN device
// read by this process, which drops, holds back and re-injects them.
type Impairer struct {
	router    *NS
	file      *os.File
	imp       Impairment
	serverNet [2]netip.Prefix
	rng       *rand.Rand
	stats     [3][2]atomic.Uint64
	done      chan struct{}
	once      sync.Once
	closeErr  error
	ifaces    []string
}

// Steering of the impairer inside the router namespace; the namespace is the lab's own, so fixed
// numbers cannot collide with anything.
const (
	impairTun      = "impair0"
	impairTable    = 4242
	impairPriority = 100
	holdPackets    = 2
	holdTime       = 2 * time.Millisecond
)

// Impair starts impairing traffic through the lab's router (Options.Router is required). Close
// the Impairer (or the Lab) to stop; traffic then flows unimpaired.
func (l *Lab) Impair(imp Impairment) (*Impairer, error) {
	if l.Router == nil {
		return nil, errors.New("netlab: Impair needs a lab with a router")
	}
	seed := imp.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	im := &Impairer{
		router:    l.Router,
		imp:       imp,
		serverNet: [2]netip.Prefix{l.ServerPrefix4, l.ServerPrefix6},
		rng:       rand.New(rand.NewPCG(seed, seed^0x5eed)),
		done:      make(chan struct{}),
		ifaces:    []string{l.RouterGatewayIface, l.RouterServerIface},
	}
	if err := im.start(max(1500, l.RouterMTU)); err != nil {
		im.stopSteering()
		if im.file != nil {
			im.file.Close()
		}
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.Join(errors.New("netlab: lab closed"), im.Close())
	}
	l.impairers = append(l.impairers, im)
	l.mu.Unlock()
	go im.loop()
	return im, nil
}

func (im *Impairer) start(mtu int) error {
	err := im.router.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		var req [unix.IFNAMSIZ + 64]byte
		copy(req[:], impairTun)
		binary.NativeEndian.PutUint16(req[unix.IFNAMSIZ:], unix.IFF_TUN|unix.IFF_NO_PI)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", impairTun, e)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return err
		}
		im.file = os.NewFile(uintptr(fd), "/dev/net/tun") // pollable: Close unblocks Read
		return nil
	})
	if err != nil {
		return fmt.Errorf("impairer in %s: %w", im.router.Name, err)
	}
	h, err := im.router.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(impairTun)
	if err != nil {
		return err
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("%s mtu: %w", impairTun, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up: %w", impairTun, err)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		dst := prefixNet(netip.MustParsePrefix("0.0.0.0/0"))
		if fam == netlink.FAMILY_V6 {
			dst = prefixNet(netip.MustParsePrefix("::/0"))
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Table: impairTable, Family: fam}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("impairer route %s: %w", dst, err)
		}
		for _, iface := range im.ifaces {
			rule := netlink.NewRule()
			rule.Family, rule.IifName, rule.Table, rule.Priority = fam, iface, impairTable, impairPriority
			if err := h.RuleAdd(rule); err != nil {
				return fmt.Errorf("impairer rule iif %s: %w", iface, err)
			}
		}
	}
	return nil
}

// stopSteering removes the rules that send traffic to the TUN; its routes vanish with it.
func (im *Impairer) stopSteering() error {
	h, err := im.router.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		for _, iface := range im.ifaces {
			rule := netlink.NewRule()
			rule.Family, rule.IifName, rule.Table, rule.Priority = fam, iface, impairTable, impairPriority
			if err := h.RuleDel(rule); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove impairer rule iif %s: %w", iface, err))
			}
		}
	}
	return errors.Join(errs...)
}

type heldPacket struct {
	buf     []byte
	due     time.Time
	passing int // packets still to pass before this one
}

func (im *Impairer) loop() {
	defer close(im.done)
	var held [2]*heldPacket
	buf := make([]byte, 65536)
	release := func(d int) {
		if h := held[d]; h != nil {
			held[d] = nil
			_, _ = im.file.Write(h.buf)
		}
	}
	for {
		var due time.Time
		for _, h := range held {
			if h != nil && (due.IsZero() || h.due.Before(due)) {
				due = h.due
			}
		}
		_ = im.file.SetReadDeadline(due) // zero: none
		n, err := im.file.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				now := time.Now()
				for d, h := range held {
					if h != nil && !now.Before(h.due) {
						release(d)
					}
				}
				continue
			}
			return // closed
		}
		pkt := buf[:n]
		d, flags, tcp := im.classify(pkt)
		if tcp && flags&(SYN|FIN|RST) == 0 && im.imp.Loss > 0 && im.rng.Float64() < im.imp.Loss {
			im.stats[1][d].Add(1)
			continue
		}
		if held[d] == nil && im.imp.Reorder > 0 && im.rng.Float64() < im.imp.Reorder {
			held[d] = &heldPacket{buf: append([]byte(nil), pkt...), due: time.Now().Add(holdTime), passing: holdPackets}
			im.stats[2][d].Add(1)
			continue
		}
		_, _ = im.file.Write(pkt)
		im.stats[0][d].Add(1)
		if h := held[d]; h != nil {
			if h.passing--; h.passing <= 0 {
				release(d)
			}
		}
	}
}

// classify returns a packet's direction and, for TCP, its flags.
func (im *Impairer) classify(pkt []byte) (dir int, flags uint8, tcp bool) {
	dir = ToClient
	var dst netip.Addr
	var l4 []byte
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		ihl := int(pkt[0]&0x0f) * 4
		if pkt[9] == 6 && len(pkt) >= ihl+14 {
			l4, tcp = pkt[ihl:], true
		}
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		if pkt[6] == 6 && len(pkt) >= 54 {
			l4, tcp = pkt[40:], true
		}
	default:
		return
	}
	if im.serverNet[0].Contains(dst) || im.serverNet[1].Contains(dst) {
		dir = ToServer
	}
	if tcp {
		flags = l4[13]
	}
	return
}

// Stats returns the impairer's counts so far.
func (im *Impairer) Stats() ImpairStats {
	var s ImpairStats
	for d := range 2 {
		s.Passed[d] = im.stats[0][d].Load()
		s.Dropped[d] = im.stats[1][d].Load()
		s.Reordered[d] = im.stats[2][d].Load()
	}
	return s
}

// Close stops the impairment: the router forwards directly again. Safe to call twice.
func (im *Impairer) Close() error {
	im.once.Do(func() {
		err := im.stopSteering()
		im.closeErr = errors.Join(err, im.file.Close())
		<-im.done
	})
	return im.closeErr
}
