package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// progress is the live status line: rewritten in place with a carriage
// return while a scenario runs, then replaced by the row's result line.
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	last int // length of the line on screen
}

func newProgress(w io.Writer) *progress { return &progress{w: w} }

// update rewrites the status line.
func (p *progress) update(s Scenario, rep, reps int, pps float64, lossPct float64) {
	switch {
	case isBulk(s.Kind): // pps counts bytes
		p.show(fmt.Sprintf("%-28s rep %d/%d  %9.3f Gbit/s", s.Name, rep, reps, pps*8/1e9))
		return
	case isTCP(s.Kind):
		p.show(fmt.Sprintf("%-28s rep %d/%d  %9.0f /s", s.Name, rep, reps, pps))
		return
	}
	p.show(fmt.Sprintf("%-28s rep %d/%d  %9.3f Mpps  loss %6.2f%%", s.Name, rep, reps, pps/1e6, lossPct))
}

func (p *progress) show(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pad := ""
	if n := p.last - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
	p.last = len(line)
}

// done replaces the status line with a permanent one.
func (p *progress) done(line string) {
	p.show(line)
	p.mu.Lock()
	fmt.Fprintln(p.w)
	p.last = 0
	p.mu.Unlock()
}

// note prints a line of its own above the status line.
func (p *progress) note(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pad := ""
	if n := p.last - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(p.w, "\r%s%s\n", line, pad)
	p.last = 0
}
