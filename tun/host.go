package tun

import (
	"fmt"
	"os"
)

// devicePath is the clone device every TUN queue is opened from.
const devicePath = "/dev/net/tun"

// CheckHost reports what would make Open fail on this host before anything is created, for
// `seqshiftd check`: no TUN clone device (the tun module missing, or a container without
// /dev/net/tun).
func CheckHost() error {
	fi, err := os.Stat(devicePath)
	if err != nil {
		return fmt.Errorf("tun: %w (load the tun module, or give the container the device)", err)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("tun: %s is not a character device", devicePath)
	}
	return nil
}
