package api_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/xsessiond/xsessiond/api"
)

// TestNotSocketSaysWhatThePathIs: NotSocket names a directory or a file
// given as a socket, in the words ctl uses, and says nothing of a socket
// or of a path with nothing there.
func TestNotSocketSaysWhatThePathIs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, c := range []struct{ path, want string }{
		{dir, dir + " is a directory, not a socket"},
		{file, file + " is not a socket but a file"},
		{sock, ""},
		{filepath.Join(dir, "none.sock"), ""},
	} {
		if got := api.NotSocket(c.path); got != c.want {
			t.Errorf("NotSocket(%s) = %q, want %q", c.path, got, c.want)
		}
	}
}
