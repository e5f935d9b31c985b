package policy

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dchest/siphash"
	"golang.org/x/sys/unix"
)

// KeyLen is the size of a key file: 32 bytes, raw, or as 64 hexadecimal digits.
const KeyLen = 32

// usesKeyed reports whether any rule has a keyed side.
func (c *Config) usesKeyed() bool {
	for _, r := range c.Rules {
		if r.Client.Mode() == ModeKeyed || r.Server.Mode() == ModeKeyed {
			return true
		}
	}
	return false
}

// LoadKey reads isn_key_file when a rule uses keyed, and does nothing otherwise. With create,
// a missing file is created (mode 0600, 32 bytes from crypto/rand, parent directory 0700)
// without ever replacing one another process made meanwhile. The file may hold the 32 bytes
// raw or as 64 hex digits, so that the same key can be copied to every gateway of a pair. A key file readable by group or others is
// refused, as ssh refuses such private keys. Errors name the file at its place in the
// configuration.
func (c *Config) LoadKey(create bool) error {
	if !c.usesKeyed() {
		return nil
	}
	raw, err := readKey(c.ISNKeyFile)
	if errors.Is(err, fs.ErrNotExist) && create {
		raw, err = createKey(c.ISNKeyFile)
	}
	if err != nil {
		line, col := max(c.keyPos[0], 1), max(c.keyPos[1], 1)
		return &Error{File: c.Path, Line: line, Col: col, Msg: fmt.Sprintf("isn_key_file: %v", err)}
	}
	c.key.set(raw)
	return nil
}

// set derives the 128-bit SipHash key from all 32 bytes of the file: SipHash-128 of the
// second half keyed by the first. (XORing the halves would be simpler, but a file whose halves
// happen to be equal would then give the all-zero key.)
func (k *isnKey) set(raw []byte) {
	k0, k1 := siphash.Hash128(binary.LittleEndian.Uint64(raw[0:8]), binary.LittleEndian.Uint64(raw[8:16]), raw[16:32])
	k.k.Store(&[2]uint64{k0, k1})
}

// CheckKey is LoadKey for `seqshiftd check`: it reads isn_key_file when a rule uses keyed and
// reports what LoadKey would refuse (group or other access, not a regular file, wrong length)
// as an error, without creating anything. A missing file, which run creates, and one this
// user may not read (check run as another user than the daemon) are warnings.
func (c *Config) CheckKey() (warning string, err error) {
	if !c.usesKeyed() {
		return "", nil
	}
	raw, err := readKey(c.ISNKeyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("isn_key_file %s does not exist; run will create it", c.ISNKeyFile), nil
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("isn_key_file %s: cannot read it as this user, so it was not checked (run check as root or as the daemon's user)", c.ISNKeyFile), nil
	case err != nil:
		line, col := max(c.keyPos[0], 1), max(c.keyPos[1], 1)
		return "", &Error{File: c.Path, Line: line, Col: col, Msg: fmt.Sprintf("isn_key_file: %v", err)}
	}
	c.key.set(raw)
	return "", nil
}

func readKey(path string) ([]byte, error) {
	// O_NONBLOCK: a FIFO at the key's path must be refused below, not hang the start. A
	// symbolic link is followed: keys are often deployed as links by configuration management.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible by group or others (mode %04o); chmod 600 it", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, 4*KeyLen))
	if err != nil {
		return nil, err
	}
	return decodeKey(path, data)
}

func decodeKey(path string, data []byte) ([]byte, error) {
	if len(data) == KeyLen {
		return data, nil
	}
	if t := bytes.TrimSpace(data); len(t) == 2*KeyLen {
		raw := make([]byte, KeyLen)
		if _, err := hex.Decode(raw, t); err == nil {
			return raw, nil
		}
	}
	return nil, fmt.Errorf("%s: want %d bytes, or %d hexadecimal digits, got %d bytes", path, KeyLen, 2*KeyLen, len(data))
}

// createKey writes a new key under a temporary name and links it into place, so that a crash
// never leaves a short key behind and a concurrent creator's key is never replaced.
func createKey(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	raw := make([]byte, KeyLen)
	_, _ = rand.Read(raw)
	tmp, err := os.CreateTemp(dir, ".isn-key-*") // mode 0600
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(raw)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKey(path)
		}
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return raw, nil
}

// KeyFinding places msg at what names the key file (isn_key_file, or the first keyed rule), for
// a warning about it in the FILE:LINE:COL form.
func (c *Config) KeyFinding(msg string) Finding {
	return Finding{Line: max(c.keyPos[0], 1), Col: max(c.keyPos[1], 1), Msg: msg}
}
