// Package ipamstore persists pod address allocations on bbolt. Every role
// keeps its IPAM state here, so a restart never hands out a live address twice.
// A claim is one bbolt transaction: it either records the allocation on disk
// or leaves nothing.
package ipamstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Record is one allocation.
type Record struct {
	Addr         netip.Addr `json:"addr"`
	ContainerID  string     `json:"containerID"`
	IfName       string     `json:"ifName"`
	PodNamespace string     `json:"podNamespace,omitempty"`
	PodName      string     `json:"podName,omitempty"`
	// Meta is role-specific data (e.g. which ENI the address belongs to).
	Meta    map[string]string `json:"meta,omitempty"`
	Created time.Time         `json:"created"`
}

// Key is the attachment identity the record is indexed by.
func (r Record) Key() string { return r.ContainerID + "/" + r.IfName }

// ErrExhausted means every candidate address is taken.
var ErrExhausted = errors.New("no free address")

// Store is a bbolt-backed allocation store. Pools are independent namespaces
// of addresses (e.g. one per pod CIDR or per ENI).
type Store struct{ db *bolt.DB }

// Open opens (or creates) the store at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open IPAM store %s (is another agent running with the same --state-dir?): %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

func addrBucket(pool string) []byte { return []byte("addr/" + pool) }
func keyBucket(pool string) []byte  { return []byte("key/" + pool) }

// Claim records rec in pool under the first free address from candidates.
// If rec's attachment already holds an address in pool, that record is
// returned unchanged, so a retried CNI ADD gets the same address.
func (s *Store) Claim(pool string, candidates iter.Seq[netip.Addr], rec Record) (Record, error) {
	var out Record
	err := s.db.Update(func(tx *bolt.Tx) error {
		ab, err := tx.CreateBucketIfNotExists(addrBucket(pool))
		if err != nil {
			return err
		}
		kb, err := tx.CreateBucketIfNotExists(keyBucket(pool))
		if err != nil {
			return err
		}
		if a := kb.Get([]byte(rec.Key())); a != nil {
			return json.Unmarshal(ab.Get(a), &out)
		}
		for addr := range candidates {
			k := []byte(addr.String())
			if ab.Get(k) != nil {
				continue
			}
			rec.Addr = addr
			if rec.Created.IsZero() {
				rec.Created = time.Now().UTC()
			}
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := ab.Put(k, v); err != nil {
				return err
			}
			out = rec
			return kb.Put([]byte(rec.Key()), k)
		}
		return fmt.Errorf("pool %s: %w", pool, ErrExhausted)
	})
	return out, err
}

// Release removes the attachment's record from pool and returns it. A missing
// record is not an error (found is false).
func (s *Store) Release(pool, containerID, ifName string) (rec Record, found bool, err error) {
	key := []byte(containerID + "/" + ifName)
	err = s.db.Update(func(tx *bolt.Tx) error {
		ab, kb := tx.Bucket(addrBucket(pool)), tx.Bucket(keyBucket(pool))
		if ab == nil || kb == nil {
			return nil
		}
		a := kb.Get(key)
		if a == nil {
			return nil
		}
		if err := json.Unmarshal(ab.Get(a), &rec); err != nil {
			return err
		}
		found = true
		if err := ab.Delete(a); err != nil {
			return err
		}
		return kb.Delete(key)
	})
	return rec, found, err
}

// Get returns the attachment's record in pool.
func (s *Store) Get(pool, containerID, ifName string) (rec Record, found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		ab, kb := tx.Bucket(addrBucket(pool)), tx.Bucket(keyBucket(pool))
		if ab == nil || kb == nil {
			return nil
		}
		a := kb.Get([]byte(containerID + "/" + ifName))
		if a == nil {
			return nil
		}
		found = true
		return json.Unmarshal(ab.Get(a), &rec)
	})
	return rec, found, err
}

// List returns every record in pool, ordered by address string.
func (s *Store) List(pool string) ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		ab := tx.Bucket(addrBucket(pool))
		if ab == nil {
			return nil
		}
		return ab.ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// Pools lists the pools that hold or held records.
func (s *Store) Pools() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if n := string(name); len(n) > 5 && n[:5] == "addr/" {
				out = append(out, n[5:])
			}
			return nil
		})
	})
	return out, err
}

// PrefixAddrs yields the host addresses of p in order, skipping the network
// address and, for IPv4 prefixes shorter than /31, the broadcast address, and
// any address in skip.
func PrefixAddrs(p netip.Prefix, skip ...netip.Addr) iter.Seq[netip.Addr] {
	p = p.Masked()
	return func(yield func(netip.Addr) bool) {
		a := p.Addr()
		v4 := a.Is4() && p.Bits() < 31
		if v4 || a.Is6() {
			a = a.Next() // skip the network (or v6 subnet-router anycast) address
		}
	next:
		for ; a.IsValid() && p.Contains(a); a = a.Next() {
			if v4 && !p.Contains(a.Next()) {
				return // broadcast
			}
			for _, s := range skip {
				if s == a {
					continue next
				}
			}
			if !yield(a) {
				return
			}
		}
	}
}
