package bpf

// The fast path is compiled with bpf2go and the output is committed, so
// building Strata needs no clang. After bpf2go, srchash records a hash of the
// C sources and of the generated object; TestGeneratedOutputMatchesSources
// fails when either drifts. `make generate` runs these lines.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type endpoint_key -type endpoint -type counter -type pod_stats -type config -type pod_prefix fastpath src/fastpath.c
//go:generate go run ./internal/srchash -write
