package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/daemon"
)

// xsCapture is a capture of every frame the daemon's datapath receives and
// sends while a scenario runs (--xs-capture), in a process of its own as
// `xsessiond ctl capture -w FILE` is: perf capture, which makes the same
// request on the control socket and writes the daemon's stream as pcapng
// with the same conversion (daemon.CaptureToPcapng). In the harness's own
// process the conversion would take the Go scheduler's turns from the echo
// client's goroutines, which a separate process does not.
type xsCapture struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *capBuffer
}

// startCapture starts perf capture on the daemon listening on socket,
// writing to file, and waits until the daemon has started the capture.
func startCapture(socket, file string) (*xsCapture, error) {
	exe, err := childExe()
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	c := &xsCapture{cmd: exec.Command(exe, "capture", "--socket", socket, "-w", file)}
	if c.in, c.out, c.stderr, err = pipeChild(c.cmd, 1<<16); err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start capture: %w", err)
	}
	if line, err := c.out.ReadString('\n'); err != nil || line != "ready\n" {
		c.cmd.Process.Kill()
		return nil, errors.Join(fmt.Errorf("capture: %q (stderr: %s)", line, c.stderr.brief(2000)), err, c.cmd.Wait())
	}
	return c, nil
}

// stop ends the capture (perf capture closes its control connection,
// which makes the daemon end the stream) and returns its summary line.
func (c *xsCapture) stop() (string, error) {
	c.in.Close()
	line, err := c.out.ReadString('\n')
	if werr := c.cmd.Wait(); werr != nil {
		err = errors.Join(err, fmt.Errorf("capture: %w (stderr: %s)", werr, c.stderr.brief(2000)))
	}
	line = "capture: " + strings.TrimSuffix(line, "\n")
	if st := c.cmd.ProcessState; st != nil {
		line += fmt.Sprintf(", process CPU %.3f s", (st.UserTime() + st.SystemTime()).Seconds())
	}
	return line, err
}

// captureMain is perf capture: it asks the daemon on --socket for a
// capture of everything, writes it to -w as pcapng, prints "ready" once
// the capture runs, and when its standard input closes stops it and
// prints "N frames written, L lost (capture ring full)".
func captureMain(args []string) int {
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	socket := fs.String("socket", "", "the daemon's control socket")
	file := fs.String("w", "", "the pcapng file to write")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *socket == "" || *file == "" {
		fmt.Fprintln(os.Stderr, "capture: --socket and -w are required")
		return 2
	}
	if err := runCaptureChild(*socket, *file); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runCaptureChild(socket, file string) error {
	ctx, cancel := context.WithTimeout(context.Background(), xsAttachTimeout)
	defer cancel()
	cl, err := api.DialClient(ctx, socket, api.ClientOptions{Name: "perf capture"})
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	defer cl.Close()
	rep, fds, err := cl.Call(ctx, &api.Capture{})
	if err != nil {
		api.CloseFDs(fds)
		return fmt.Errorf("capture: %w", err)
	}
	if _, ok := rep.(*api.CaptureReply); !ok || len(fds) != 1 {
		api.CloseFDs(fds)
		return fmt.Errorf("capture: the daemon answered %v", rep.Type())
	}
	pipe := os.NewFile(uintptr(fds[0]), "capture")
	defer pipe.Close()
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	defer f.Close()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cl.Close()
	}()
	fmt.Println("ready")
	res, err := daemon.CaptureToPcapng(pipe, f)
	if err == nil && !res.Ended {
		err = errors.New("the stream stopped without its end")
	}
	if err != nil {
		return fmt.Errorf("capture: after %d frames: %w", res.Frames, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	fmt.Printf("%d frames written, %d lost (capture ring full)\n", res.Frames, res.Lost)
	return nil
}
