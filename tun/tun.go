// Package tun is seqshiftd's TUN device: a multi-queue Linux TUN interface that the steering
// rules route intercepted traffic into, read and written in batches, one queue per goroutine.
//
// With Offload the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6): the
// kernel then hands over TCP super-packets of up to 64 KiB exactly as its stack built or GRO
// merged them, with the checksum still to be finished (NEEDS_CSUM), and segments them only
// after they are written back. One read and one write per 64 KiB instead of per MTU-sized
// packet is most of the difference between a TUN daemon and kernel forwarding. Every packet
// then starts with a 10-byte virtio_net_hdr (see header.go), which the datapath passes back on
// write unchanged: seqshiftd rewrites sequence and acknowledgement numbers, never lengths, so the
// segmentation and checksum instructions stay true.
//
// The offload device is opened with golang.org/x/sys/unix because songgao/water cannot set
// IFF_VNET_HDR (its flags are fixed at IFF_TUN|IFF_NO_PI, plus IFF_MULTI_QUEUE) nor issue
// TUNSETVNETHDRSZ/TUNSETOFFLOAD; without them the kernel segments every super-packet before the
// TUN and a bulk flow runs at a few percent of kernel forwarding. The plain device
// (Offload false, for debugging and as the benchmark's baseline) is exactly what water opens,
// so water opens it; its non-blocking file is then read in batches like the offload queues,
// since water's own one-packet Read cannot drain a batch per wake-up.
//
// Each queue is its own /dev/net/tun file descriptor, non-blocking and registered with Go's
// poller: Read waits once, then drains ready packets with plain read(2) calls until EAGAIN.
// The package must never allocate in Read or Write, never hold a lock of its own across a
// syscall and never look into or change a packet or its header.
package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ErrDeviceGone is returned (wrapped) by Read and Write when the interface was deleted under a
// running device, e.g. by `ip link del`: the kernel then answers EBADFD forever. It wraps
// os.ErrClosed so a reader loop stops instead of spinning.
var ErrDeviceGone = fmt.Errorf("TUN interface was deleted: %w", os.ErrClosed)

// errBusy guards the single-reader, single-writer rule per queue without a lock.
var errBusy = errors.New("tun: concurrent Read or Write on the same queue")

// Config describes the device to create.
type Config struct {
	Name    string // interface name; the kernel picks tunN when empty; may contain %d
	MTU     int    // 0: DefaultMTU
	Queues  int    // 0: 1; at most MaxQueues
	Offload bool   // IFF_VNET_HDR with checksum and TSO offload
	// TAP makes an Ethernet (IFF_TAP) device instead of an IP one: every packet then carries
	// its 14-byte Ethernet header after the virtio_net_hdr. The kernel datapath uses a TAP
	// because its programs hand packets over with metadata written into that header (which
	// interface and hook they came from) and need it back to send the packet on.
	TAP bool
}

// Device is a TUN interface opened with one file descriptor per queue.
type Device interface {
	Name() string
	Queues() int
	Offload() bool
	// TAP reports an Ethernet device: packets start (after the virtio_net_hdr) with an
	// Ethernet header rather than an IP header.
	TAP() bool
	MTU() int
	// Read fills up to len(bufs) packets from queue q into bufs, their lengths into sizes, and
	// returns how many: it blocks until at least one is ready, then takes what else is ready
	// without blocking. With Offload each packet starts with the HeaderLen-byte virtio_net_hdr;
	// bufs should be MaxPacket long (a shorter buffer gets a truncated packet). One goroutine
	// per queue: a concurrent Read on the same queue fails. After Close: os.ErrClosed.
	Read(q int, bufs [][]byte, sizes []int) (int, error)
	// Write writes each buf as one packet on queue q (header included when Offload) and returns
	// how many the kernel took; a packet it refuses does not stop the rest, the first error is
	// returned. Any queue may carry any packet.
	Write(q int, bufs [][]byte) (int, error)
	// Close closes every queue, unblocking readers; the kernel deletes the interface, and the
	// routes through it, when the last queue closes.
	Close() error
}

// Open creates the interface, attaches cfg.Queues queues to it, sets its MTU and brings it up.
// It fails if an interface of that name already exists, so that a second daemon never joins
// the first one's device as extra queues.
func Open(cfg Config, log *zap.Logger) (Device, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := CheckQueues(int64(cfg.Queues)); err != nil {
		return nil, fmt.Errorf("tun: queues: %w", err)
	}
	if err := CheckMTU(int64(cfg.MTU)); err != nil {
		return nil, fmt.Errorf("tun: MTU: %w", err)
	}
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun: name %q longer than %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}
	queues, mtu := cfg.Queues, cfg.MTU
	if queues == 0 {
		queues = 1
	}
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if cfg.Name != "" {
		if _, err := netlink.LinkByName(cfg.Name); err == nil {
			return nil, fmt.Errorf("tun: interface %s already exists (another seqshiftd running, or a persistent leftover: `ip link del %s`)", cfg.Name, cfg.Name)
		}
	}

	d := &device{name: cfg.Name, mtu: mtu, offload: cfg.Offload, tap: cfg.TAP}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
	if cfg.TAP {
		flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE
	}
	if cfg.Offload {
		flags |= unix.IFF_VNET_HDR
	}
	for i := 0; i < queues; i++ {
		q, name, err := openQueue(d.name, flags, i == 0 && cfg.Offload)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("tun: open queue %d of %s: %w", i, cfg.Name, err)
		}
		d.name = name // the first TUNSETIFF resolves an empty or %d name; the rest attach to it
		d.queues = append(d.queues, q)
	}

	if err := d.configureLink(log); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: configure %s: %w", d.name, err)
	}
	log.Info("TUN device open", zap.String("name", d.name), zap.Int("queues", queues),
		zap.Int("mtu", mtu), zap.Bool("offload", cfg.Offload))
	return d, nil
}

// openQueue attaches one queue. offload is set on the first queue only: the vnet header size
// and the offload features belong to the device, not the queue.
func openQueue(name string, flags uint16, offload bool) (*queue, string, error) {
	if flags&unix.IFF_VNET_HDR == 0 {
		return openPlainQueue(name, flags&unix.IFF_TAP != 0)
	}
	fd, err := unix.Open(devicePath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", devicePath, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("TUNSETIFF: %w", err)
	}
	if offload {
		// 10 is also the kernel's default, but a previous owner of a persistent device could
		// have changed it, and every offset in the datapath depends on it.
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, HeaderLen); err != nil {
			unix.Close(fd)
			return nil, "", fmt.Errorf("TUNSETVNETHDRSZ: %w", err)
		}
		// CSUM lets the kernel leave checksums partial; TSO4/TSO6 let it hand over TCP GSO
		// packets unsegmented. Without these the stack segments and checksums in software before
		// the TUN, one packet per read. UDP segmentation offload (USO) is left off: seqshiftd
		// only rewrites TCP, and UDP GSO packets are then segmented before they reach us.
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
			unix.Close(fd)
			return nil, "", fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
	}
	// The fd is non-blocking, so os.NewFile registers it with the runtime poller: a Read parks
	// the goroutine, not a thread, and Close wakes it.
	q, err := newQueue(os.NewFile(uintptr(fd), devicePath))
	if err != nil {
		return nil, "", err
	}
	return q, ifr.Name(), nil
}

// openPlainQueue attaches one queue of a device without the virtio-net header, opened by water.
func openPlainQueue(name string, tap bool) (*queue, string, error) {
	var kind water.DeviceType = water.TUN
	if tap {
		kind = water.TAP
	}
	ifce, err := water.New(water.Config{
		DeviceType:             kind,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name, MultiQueue: true},
	})
	if err != nil {
		return nil, "", fmt.Errorf("water: %w", err)
	}
	// water opens /dev/net/tun non-blocking and wraps it in an *os.File, which the poller
	// already knows; anything else would be a water change this package must hear about.
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, "", fmt.Errorf("water returned a %T, not an *os.File", ifce.ReadWriteCloser)
	}
	q, err := newQueue(f)
	if err != nil {
		return nil, "", err
	}
	return q, ifce.Name(), nil
}

// newQueue wraps an open, non-blocking TUN queue file.
func newQueue(f *os.File) (*queue, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	q := &queue{f: f, rc: rc}
	// Method values bound once: a closure built per call would allocate.
	q.readFn, q.writeFn = q.readBatch, q.writeBatch
	return q, nil
}

// configureLink sets the MTU and brings the link up. IPv6 address generation is switched off
// first: a link-local address would make the kernel send DAD probes, router solicitations and
// MLD reports into the TUN, which the datapath would read and write back, and a DAD probe coming
// back could mark the address duplicate. The device needs no address to carry traffic.
func (d *device) configureLink(log *zap.Logger) error {
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return err
	}
	const addrGenModeNone = 1 // IN6_ADDR_GEN_MODE_NONE
	if err := netlink.LinkSetIP6AddrGenMode(link, addrGenModeNone); err != nil {
		// IPv6 disabled on this host or interface: nothing to silence.
		log.Debug("cannot disable IPv6 address generation", zap.String("name", d.name), zap.Error(err))
	}
	if err := netlink.LinkSetMTU(link, d.mtu); err != nil {
		return fmt.Errorf("set MTU %d: %w", d.mtu, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

type device struct {
	name      string
	mtu       int
	offload   bool
	tap       bool
	queues    []*queue
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// queue is one file descriptor. The r* and w* fields carry one Read's or Write's arguments
// and results into the bound readFn/writeFn; the busy flags keep them to one caller at a time.
type queue struct {
	f  *os.File
	rc syscall.RawConn

	rbusy  atomic.Bool
	rbufs  [][]byte
	rsizes []int
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	wbusy   atomic.Bool
	wbufs   [][]byte
	wi, wn  int
	werr    error
	writeFn func(fd uintptr) bool
}

func (d *device) Name() string  { return d.name }
func (d *device) Queues() int   { return len(d.queues) }
func (d *device) Offload() bool { return d.offload }
func (d *device) TAP() bool     { return d.tap }
func (d *device) MTU() int      { return d.mtu }

func (d *device) queue(q int) (*queue, error) {
	if d.closed.Load() {
		return nil, os.ErrClosed
	}
	if q < 0 || q >= len(d.queues) {
		return nil, fmt.Errorf("tun: queue %d out of range 0..%d", q, len(d.queues)-1)
	}
	return d.queues[q], nil
}

func (d *device) Read(q int, bufs [][]byte, sizes []int) (int, error) {
	qu, err := d.queue(q)
	if err != nil {
		return 0, err
	}
	if len(sizes) < len(bufs) {
		return 0, fmt.Errorf("tun: %d sizes for %d buffers", len(sizes), len(bufs))
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if !qu.rbusy.CompareAndSwap(false, true) {
		return 0, errBusy
	}
	qu.rbufs, qu.rsizes, qu.rn, qu.rerr = bufs, sizes, 0, nil
	err = qu.rc.Read(qu.readFn)
	n, rerr := qu.rn, qu.rerr
	qu.rbufs, qu.rsizes, qu.rerr = nil, nil, nil
	if n > 0 {
		qu.rbusy.Store(false)
		// Deliver what was read; a read error behind it will recur on the next call.
		return n, nil
	}
	err = d.mapErr("read", q, qu, err, rerr)
	qu.rbusy.Store(false)
	return 0, err
}

// readBatch runs inside the poller's read lock: first without waiting (packets may already be
// queued), then after every readiness notification, until it returns true.
func (q *queue) readBatch(fd uintptr) bool {
	for q.rn < len(q.rbufs) {
		n, err := unix.Read(int(fd), q.rbufs[q.rn])
		switch err {
		case nil:
			q.rsizes[q.rn] = n
			q.rn++
		case unix.EINTR:
		case unix.EAGAIN:
			return q.rn > 0 // nothing yet: wait for the poller; else hand over the batch
		default:
			q.rerr = err
			return true
		}
	}
	return true
}

func (d *device) Write(q int, bufs [][]byte) (int, error) {
	qu, err := d.queue(q)
	if err != nil {
		return 0, err
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if !qu.wbusy.CompareAndSwap(false, true) {
		return 0, errBusy
	}
	qu.wbufs, qu.wi, qu.wn, qu.werr = bufs, 0, 0, nil
	err = qu.rc.Write(qu.writeFn)
	n, werr := qu.wn, qu.werr
	qu.wbufs, qu.werr = nil, nil
	if err != nil || werr != nil {
		err = d.mapErr("write", q, qu, err, werr)
	}
	qu.wbusy.Store(false)
	return n, err
}

// writeBatch writes every remaining buffer. A packet the kernel rejects (EINVAL for a bad
// header, EIO for a truncated one...) is skipped so that one bad packet cannot hold up the
// batch; EBADFD (device deleted) ends it.
func (q *queue) writeBatch(fd uintptr) bool {
	for q.wi < len(q.wbufs) {
		_, err := unix.Write(int(fd), q.wbufs[q.wi])
		switch err {
		case nil:
			q.wi++
			q.wn++
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		case unix.EBADFD:
			q.werr = err
			return true
		default:
			if q.werr == nil {
				q.werr = err
			}
			q.wi++
		}
	}
	return true
}

// mapErr turns a poller error (err) or a syscall error (serr) into what Read and Write return.
func (d *device) mapErr(op string, q int, qu *queue, err, serr error) error {
	switch {
	case d.closed.Load():
		// The poller reports "use of closed file" (internal/poll.ErrFileClosing), which is not
		// os.ErrClosed; callers test for the latter.
		return os.ErrClosed
	case errors.Is(serr, unix.EBADFD) || errors.Is(err, unix.EBADFD) || (err != nil && qu.detached()):
		return fmt.Errorf("tun %s queue %d: %s: %w", d.name, q, op, ErrDeviceGone)
	case serr != nil:
		return fmt.Errorf("tun %s queue %d: %s: %w", d.name, q, op, serr)
	case err != nil:
		return fmt.Errorf("tun %s queue %d: %s: %w", d.name, q, op, err)
	}
	return nil
}

// detached reports whether the interface behind the queue is gone. When it is deleted the
// kernel flags the fd with EPOLLERR, and the poller then fails every wait with "not pollable"
// before a read could return the telling EBADFD; TUNGETIFF answers EBADFD without waiting.
func (q *queue) detached() bool {
	var ierr error
	err := q.rc.Control(func(fd uintptr) {
		var ifr unix.Ifreq
		ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, &ifr)
	})
	return err == nil && errors.Is(ierr, unix.EBADFD)
}

func (d *device) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		for _, q := range d.queues {
			// Closing a pollable file evicts it from the poller, which wakes a parked Read; the
			// fd itself is released once no Read or Write holds it any more.
			d.closeErr = errors.Join(d.closeErr, q.f.Close())
		}
	})
	return d.closeErr
}
