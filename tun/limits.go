package tun

import "fmt"

// The device's sizes and limits, defined here, by the package that opens the device, and
// nowhere else: policy validates the file with CheckMTU and CheckQueues, the daemon falls back
// to DefaultMTU, and the test lab sizes its captures' virtio-net header with HeaderLen.
const (
	// HeaderLen is the length of the virtio_net_hdr in front of every packet when Offload is on
	// (struct virtio_net_hdr, without the num_buffers field of virtio_net_hdr_mrg_rxbuf). An
	// AF_PACKET socket with PACKET_VNET_HDR puts the same header before each packet.
	HeaderLen = 10

	// MaxPacket is the largest buffer a read can fill: the header and a 64 KiB GSO
	// super-packet (an IP packet's total length field caps it at MaxMTU bytes).
	MaxPacket = HeaderLen + MaxMTU

	// DefaultMTU is used when Config.MTU is 0: Ethernet's.
	DefaultMTU = 1500
	// MinMTU is IPv4's minimum (RFC 791: every host must accept 68-byte datagrams); an IPv6
	// route needs 1280, which the kernel enforces by disabling IPv6 on the device.
	MinMTU = 68
	// MaxMTU is the largest IP packet a total length field can describe.
	MaxMTU = 65535

	// MaxQueues is the kernel's MAX_TAP_QUEUES.
	MaxQueues = 256
)

// CheckMTU reports why n cannot be Config.MTU, nil if it can; 0 stands for the default.
func CheckMTU(n int64) error {
	switch {
	case n < 0 || n > MaxMTU:
		return fmt.Errorf("%d is out of range 0..%d", n, MaxMTU)
	case n != 0 && n < MinMTU:
		return fmt.Errorf("%d is below the IPv4 minimum of %d", n, MinMTU)
	}
	return nil
}

// CheckQueues reports why n cannot be Config.Queues, nil if it can; 0 stands for the default.
func CheckQueues(n int64) error {
	if n < 0 || n > MaxQueues {
		return fmt.Errorf("%d is out of range 0..%d", n, MaxQueues)
	}
	return nil
}
