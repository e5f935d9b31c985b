package tun

import (
	"os"
	"testing"
)

func TestCheckHost_AgreesWithTheDevice(t *testing.T) {
	_, statErr := os.Stat(devicePath)
	err := CheckHost()
	if (statErr == nil) != (err == nil) {
		t.Errorf("CheckHost() = %v, but stat %s: %v", err, devicePath, statErr)
	}
}
