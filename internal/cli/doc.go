// Package cli builds strata-agent's command: flags, the roles' wiring and
// the daemon's start. The mains stay thin: cmd/strata-agent calls NewAgent.
//
// The operator CLI `strata` is internal/cli/operator. It must not import
// this package (or anything of the daemon): it reads the agent over HTTP
// through package api, so it stays a small binary.
package cli
