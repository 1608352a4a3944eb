package bgp

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"github.com/strata-net/strata/internal/nsutil"
)

// md5Counters are the kernel's TCP MD5 drop counters (TcpExt in
// /proc/net/netstat). They are per namespace, not per peer, so they explain
// a down session rather than prove the cause.
type md5Counters struct {
	Failure, NotFound, Unexpected uint64
}

func readMD5Counters(nsPath string) md5Counters {
	var c md5Counters
	read := func() error {
		// thread-self: the namespace of this (locked) thread, not the process.
		f, err := os.Open("/proc/thread-self/net/netstat")
		if err != nil {
			return err
		}
		defer f.Close()
		c = parseNetstat(bufio.NewScanner(f))
		return nil
	}
	if nsPath == "" {
		_ = read()
		return c
	}
	_ = nsutil.NS{Name: nsPath, Path: nsPath}.Do(read)
	return c
}

// parseNetstat reads the TcpExt header/value line pair.
func parseNetstat(sc *bufio.Scanner) md5Counters {
	var c md5Counters
	var header []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i := 1; i < len(fields) && i < len(header); i++ {
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				continue
			}
			switch header[i] {
			case "TCPMD5Failure":
				c.Failure = v
			case "TCPMD5NotFound":
				c.NotFound = v
			case "TCPMD5Unexpected":
				c.Unexpected = v
			}
		}
		return c
	}
	return c
}
