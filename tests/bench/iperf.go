package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/strata-net/strata/internal/nsutil"
)

// Iperf runs iperf3 from namespace client to a one-shot server bound to dst
// in namespace server, for seconds, and returns the received bits per second
// and the CPU both ends used (percent of one CPU, summed; 1 when iperf3 does
// not report it). It retries while the server is still starting.
func Iperf(ctx context.Context, server, client nsutil.NS, dst string, seconds int) (bps, cpu float64, err error) {
	srvArgv := server.Exec("iperf3", "-s", "-1", "-B", dst)
	srv := exec.CommandContext(ctx, srvArgv[0], srvArgv[1:]...)
	if err := srv.Start(); err != nil {
		return 0, 0, fmt.Errorf("start iperf3 server: %w (apt-get install iperf3; `make deps` does it)", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	cliArgv := client.Exec("iperf3", "-c", dst, "-t", fmt.Sprint(seconds), "-J")
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		out, err := exec.CommandContext(ctx, cliArgv[0], cliArgv[1:]...).Output()
		var rep struct {
			Error string `json:"error"`
			End   struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
				CPU struct {
					Host   float64 `json:"host_total"`
					Remote float64 `json:"remote_total"`
				} `json:"cpu_utilization_percent"`
			} `json:"end"`
		}
		if jerr := json.Unmarshal(out, &rep); err == nil && jerr != nil {
			return 0, 0, fmt.Errorf("parse iperf3 JSON: %w", jerr)
		}
		// iperf3 3.12 can exit 0 with the failure only in the JSON (e.g.
		// "connection refused" while the server is still starting).
		if err == nil && rep.Error != "" {
			err = errors.New(rep.Error)
		}
		if err == nil {
			if rep.End.SumReceived.BitsPerSecond <= 0 {
				return 0, 0, fmt.Errorf("iperf3 to %s reported no throughput", dst)
			}
			cpu := rep.End.CPU.Host + rep.End.CPU.Remote
			if cpu <= 0 {
				cpu = 1
			}
			return rep.End.SumReceived.BitsPerSecond, cpu, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return 0, 0, fmt.Errorf("iperf3 to %s kept failing: %w", dst, lastErr)
}
