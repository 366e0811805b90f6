package api

import (
	"context"
	"testing"
	"time"
)

// TestIdleTimeoutSparesCapture: a connection that started a capture waits
// for its frames and sends nothing; it is not dropped as idle, however
// long the capture runs (an app's attach and detach on it since
// notwithstanding: the detach ended the capture's hold too before), while
// one that only asked for a show is.
func TestIdleTimeoutSparesCapture(t *testing.T) {
	d := newFakeDaemon(t)
	s := &Server{IdleTimeout: 200 * time.Millisecond}
	path, _ := runServer(t, s, d)
	capturing, err := DialClient(context.Background(), path, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer capturing.Close()
	_, fds, err := capturing.Call(context.Background(), &Capture{})
	if err != nil {
		t.Fatal(err)
	}
	closeFDs(fds)
	// An app's detach on the same connection ends the app's hold, not
	// the capture's.
	if _, fds, err := capturing.Call(context.Background(), &Attach{Secret: 42}); err != nil {
		t.Fatal(err)
	} else {
		closeFDs(fds)
	}
	if _, _, err := capturing.Call(context.Background(), &Detach{}); err != nil {
		t.Fatal(err)
	}
	showing, err := DialClient(context.Background(), path, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer showing.Close()
	if _, fds, err := showing.Call(context.Background(), &Show{What: ShowApps}); err != nil {
		t.Fatal(err)
	} else {
		closeFDs(fds)
	}
	time.Sleep(600 * time.Millisecond) // three idle timeouts
	if _, fds, err := capturing.Call(context.Background(), &Show{What: ShowApps}); err != nil {
		t.Fatalf("the capturing connection after three idle timeouts: %v", err)
	} else {
		closeFDs(fds)
	}
	if _, _, err := showing.Call(context.Background(), &Show{What: ShowApps}); err == nil {
		t.Fatal("the connection that only showed was not dropped as idle")
	}
}
