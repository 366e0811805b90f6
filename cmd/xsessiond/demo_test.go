package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestDemo runs the quickstart with the datapath.
func TestDemo(t *testing.T) {
	nstest.RequirePrivileged(t)
	var out bytes.Buffer
	if err := runDemo(&out, time.Second, 16); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !bytes.Contains(out.Bytes(), []byte("demo passed")) || !bytes.Contains(out.Bytes(), []byte("rtt p50")) {
		t.Fatalf("demo output:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
