package tcshift

// The programs are built from bpf/*.c by bpf2go into bpf_bpfel.{go,o} and bpf_bpfeb.{go,o},
// which are committed so that building and testing need no clang (`make generate` rebuilds
// them; it needs clang, llvm and libbpf-dev). The -type list names the shared layouts that
// layout_test.go compares with the Go mirrors. The two -I paths give clang the multiarch
// <asm/types.h> of a Debian amd64 or arm64 host; a missing one is ignored.
//go:generate go tool bpf2go -tags linux -type flow_key -type flow_val -type flow_window -type intercept_key -type iface -type tc_config -type stat bpf bpf/tcshift.c -- -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu
