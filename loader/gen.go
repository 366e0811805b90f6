package loader

// The XDP program is compiled from bpf/xsession.c with Debian's clang 14 and
// llvm-strip; the object and its Go bindings are committed. Rebuild them with
// `go generate ./loader`; the output is byte-for-byte reproducible (bpf2go
// maps the source directory to a relative path and strips DWARF).
//
// The reference program (bpf/reference.c), the baseline of
// BenchmarkXDPProgram, is built the same way into test files
// (reference_bpfel_test.go/.o): it is not part of the package.
//
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type xs_est_key -type xs_lst_key -type xs_value -type xs_counters -type xs_frag_key -type xs_frag_value -type xs_local_key xsession ../bpf/xsession.c
//go:generate go tool bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -output-suffix _test reference ../bpf/reference.c
