package nlretry

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestDumpRetriesInterruptedAndNeverReturnsPartial(t *testing.T) {
	calls := 0
	got, err := Dump(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2, 3}, nil
	})
	if err != nil || len(got) != 3 || calls != 3 {
		t.Fatalf("got %v, %v after %d calls; want the full result after 3", got, err, calls)
	}
}

func TestDumpGivesUpWithError(t *testing.T) {
	got, err := Dump(func() ([]int, error) { return []int{1}, netlink.ErrDumpInterrupted })
	if !errors.Is(err, netlink.ErrDumpInterrupted) || got != nil {
		t.Fatalf("got %v, %v; want nil and ErrDumpInterrupted", got, err)
	}
}

func TestDumpPassesOtherErrors(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	_, err := Dump(func() (int, error) { calls++; return 0, boom })
	if !errors.Is(err, boom) || calls != 1 {
		t.Fatalf("err %v after %d calls; want boom after 1", err, calls)
	}
}
