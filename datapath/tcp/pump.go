package tcp

import (
	"sync"
	"sync/atomic"
)

// task is something a pump runs: a Conn or a Listener. queued is set while
// it sits in a pump's ready list, so a burst of wakeups runs it once.
type task interface {
	queuedFlag() *atomic.Bool
	run()
}

// pump is one goroutine running the tasks made ready by gVisor's waiter
// notifications and by Kick. Every task is pinned to one pump, so a Conn's
// fifo calls and handler calls all come from one goroutine.
type pump struct {
	wake chan struct{} // capacity 1: a pending wakeup

	mu      sync.Mutex // guards the fields below
	ready   []task
	stopped bool
}

func newPump() *pump { return &pump{wake: make(chan struct{}, 1)} }

// schedule queues t unless it is queued already. It never blocks: gVisor
// calls it with its endpoint locks held.
func (p *pump) schedule(t task) {
	if !t.queuedFlag().CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	p.ready = append(p.ready, t)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pump) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pump) run() {
	var batch []task
	for range p.wake {
		for {
			p.mu.Lock()
			batch, p.ready = p.ready, batch[:0]
			stopped := p.stopped
			p.mu.Unlock()
			if len(batch) == 0 {
				if stopped {
					return
				}
				break
			}
			for i, t := range batch {
				// Clear before running: an event during run queues it again.
				t.queuedFlag().Store(false)
				t.run()
				batch[i] = nil
			}
		}
	}
}
