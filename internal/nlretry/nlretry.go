// Package nlretry is Strata's one netlink-retry helper. A netlink dump can
// return netlink.ErrDumpInterrupted with partial results while the table is
// changing; a partial dump must never be mistaken for the whole table, so
// every dump in Strata goes through Dump.
package nlretry

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// Attempts bounds how often an interrupted dump is retried.
const Attempts = 10

// Dump calls fn until it returns a complete result. ErrDumpInterrupted is
// retried with a short growing pause; any other error is returned at once.
func Dump[T any](fn func() (T, error)) (T, error) {
	var zero T
	for i := 0; i < Attempts; i++ {
		v, err := fn()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return zero, err
		}
		time.Sleep(time.Duration(i+1) * time.Millisecond)
	}
	return zero, fmt.Errorf("netlink dump interrupted %d times in a row (the table is changing too fast; retry later): %w", Attempts, netlink.ErrDumpInterrupted)
}
