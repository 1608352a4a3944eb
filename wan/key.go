package wan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func parseKey(s string) (wgtypes.Key, error) {
	k, err := wgtypes.ParseKey(strings.TrimSpace(s))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("want a 32-byte WireGuard key in base64 (44 characters): %w", err)
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, errors.New("the all-zero key is not a key")
	}
	return k, nil
}

// ParsePublicKey checks a published public key (strata.io/wan-public-key).
func ParsePublicKey(s string) error {
	_, err := parseKey(s)
	return err
}

// LoadOrCreateKey returns the node's private key from dir/KeyFile, making
// one (and dir, 0700) on first use. The key never leaves the node: only its
// public half is published. A key file that group or others can read is
// refused rather than used, since anyone who read it can impersonate the
// node.
func LoadOrCreateKey(dir string) (wgtypes.Key, error) {
	path := filepath.Join(dir, KeyFile)
	k, err := readKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("wan key: create state dir %s: %w", dir, err)
	}
	k, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wan key: generate: %w", err)
	}
	if err := writeKey(path, k); err != nil {
		return wgtypes.Key{}, err
	}
	return k, nil
}

func readKey(path string) (wgtypes.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wan key %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wan key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return wgtypes.Key{}, fmt.Errorf("wan key %s is not a regular file: remove it and restart to make a new key", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("wan key %s has mode %04o: group or others can read the node's private key; run `chmod 600 %s` (or, if it may have leaked, delete it and restart to rotate the key)", path, perm, path)
	}
	buf := make([]byte, 128)
	n, err := f.Read(buf)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wan key %s: read: %w", path, err)
	}
	k, err := parseKey(string(buf[:n]))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("wan key %s is corrupt (%w): delete it and restart to make a new key (peers learn the new public key from the node annotation)", path, err)
	}
	return k, nil
}

// writeKey writes a new key atomically: a 0600 temporary file, synced, then
// renamed, so a crash never leaves a half-written key.
func writeKey(path string, k wgtypes.Key) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+KeyFile+".*")
	if err != nil {
		return fmt.Errorf("wan key: create %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("wan key: chmod %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.WriteString(k.String() + "\n"); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("wan key: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("wan key: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("wan key: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("wan key: rename to %s: %w", path, err)
	}
	return nil
}
