package nsbind

import (
	"errors"
	"os"
	"testing"
)

// TestFIBOfPID: the FIB id of this process's namespace, read by pid,
// is the one a Namespace opened on it has; no process has pid 0.
func TestFIBOfPID(t *testing.T) {
	n, err := OpenCurrent()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	fib, err := FIBOfPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if fib != n.FIB() {
		t.Errorf("FIBOfPID(self) %d, the current namespace's %d", fib, n.FIB())
	}
	if _, err := FIBOfPID(0); !errors.Is(err, ErrNoNamespace) {
		t.Errorf("FIBOfPID(0): %v, want ErrNoNamespace", err)
	}
}
