package probe

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/memberlist"
)

// ParseKeyring reads gossip keys: one base64 key (16, 24 or 32 bytes, for
// AES-128/192/256) per line, the first being the primary used to encrypt;
// the others are still accepted for decryption, which is how keys rotate.
// Blank lines and lines starting with '#' are ignored. It is the format of
// a Kubernetes Secret key mounted as a file, or of a plain file.
func ParseKeyring(data []byte) (*memberlist.Keyring, error) {
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring line %d: not base64 (generate a key with `head -c32 /dev/urandom | base64`): %w", line, err)
		}
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("gossip keyring line %d: %d-byte key: want 16, 24 or 32 bytes: %w", line, len(k), err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip keyring is empty: put one base64 key per line, the primary first")
	}
	return memberlist.NewKeyring(keys, keys[0])
}

// LoadKeyring reads a keyring file (see ParseKeyring).
func LoadKeyring(path string) (*memberlist.Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read gossip keyring: %w", err)
	}
	kr, err := ParseKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kr, nil
}
