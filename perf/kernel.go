package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const (
	kernelBatch  = 64      // datagrams per recvmmsg
	kernelRcvBuf = 4 << 20 // SO_RCVBUF of each receiving socket
)

// KernelRecvmmsg is the kernel-socket baseline: Go UDP sockets read with
// recvmmsg(2) in batches (golang.org/x/net/ipv4's ReadBatch), one goroutine
// per socket. With more than one socket they form an SO_REUSEPORT group, the
// kernel's way of spreading flows over readers (one per queue).
type KernelRecvmmsg struct {
	sockets   int
	conns     []net.PacketConn
	wg        sync.WaitGroup
	delivered atomic.Uint64
	bytes     atomic.Uint64
}

// NewKernelRecvmmsg returns the baseline with the given number of sockets.
func NewKernelRecvmmsg(sockets int) *KernelRecvmmsg {
	return &KernelRecvmmsg{sockets: max(1, sockets)}
}

func (k *KernelRecvmmsg) Name() string {
	if k.sockets > 1 {
		return ImplKernelReuseport
	}
	return ImplKernel
}

func (k *KernelRecvmmsg) Delivered() uint64 { return k.delivered.Load() }

// Start opens the sockets inside env and starts the readers.
func (k *KernelRecvmmsg) Start(env *Env) error {
	conns, err := listenUDP(env, k.sockets)
	if err != nil {
		return err
	}
	k.conns = conns
	for _, c := range conns {
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			k.read(ipv4.NewPacketConn(c))
		}()
	}
	return nil
}

func (k *KernelRecvmmsg) read(pc *ipv4.PacketConn) {
	msgs := make([]ipv4.Message, kernelBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			return
		}
		var b uint64
		for i := range n {
			b += uint64(msgs[i].N)
		}
		k.delivered.Add(uint64(n))
		k.bytes.Add(b)
	}
}

// Stop closes the sockets and waits for the readers.
func (k *KernelRecvmmsg) Stop() error {
	var errs []error
	for _, c := range k.conns {
		errs = append(errs, c.Close())
	}
	k.wg.Wait()
	k.conns = nil
	return errors.Join(errs...)
}

// setRcvBuf gives a receiving socket kernelRcvBuf bytes of buffer.
// RCVBUFFORCE passes net.core.rmem_max; it falls back when not allowed.
func setRcvBuf(fd uintptr) {
	if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, kernelRcvBuf) != nil {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, kernelRcvBuf)
	}
}

// listenUDP opens n UDP sockets on env.Addr:env.Port inside env, in one
// SO_REUSEPORT group when n > 1, each with a large receive buffer.
func listenUDP(env *Env, n int) ([]net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if n > 1 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if serr == nil {
				setRcvBuf(fd)
			}
		})
		return errors.Join(err, serr)
	}}
	addr := netip.AddrPortFrom(env.Addr, env.Port).String()
	var conns []net.PacketConn
	err := env.Do(func() error {
		for range n {
			c, err := lc.ListenPacket(context.Background(), "udp4", addr)
			if err != nil {
				return fmt.Errorf("listen udp %s: %w", addr, err)
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	return conns, nil
}

// KernelEcho is the kernel-socket echo server: one UDP socket, one
// goroutine, every datagram written back to its sender.
type KernelEcho struct {
	conn    net.PacketConn
	done    chan struct{}
	n       atomic.Uint64
	sendErr atomic.Uint64 // replies the kernel refused (ENOBUFS)
}

// Breakdown is the replies the kernel refused to send. They are not added
// to the counted drops: a veth that refuses a frame returns ENOBUFS and
// counts it in its tx_dropped, which is counted.
func (e *KernelEcho) Breakdown() Drops { return Drops{"echo-server-enobufs": e.sendErr.Load()} }

// NewKernelEcho returns the kernel echo server.
func NewKernelEcho() *KernelEcho { return &KernelEcho{} }

func (e *KernelEcho) Name() string { return ImplKernel }

// Start opens the socket inside env and starts echoing.
func (e *KernelEcho) Start(env *Env) error {
	conns, err := listenUDP(env, 1)
	if err != nil {
		return err
	}
	e.conn = conns[0]
	e.done = make(chan struct{})
	go func() {
		defer close(e.done)
		uc := e.conn.(*net.UDPConn)
		buf := make([]byte, maxUDPPayload)
		for {
			n, from, err := uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := uc.WriteToUDPAddrPort(buf[:n], from); err != nil {
				if !errors.Is(err, unix.ENOBUFS) {
					return
				}
				e.sendErr.Add(1)
			}
			e.n.Add(1)
		}
	}()
	return nil
}

// Stop closes the socket and waits for the goroutine.
func (e *KernelEcho) Stop() error {
	if e.conn == nil {
		return nil
	}
	err := e.conn.Close()
	<-e.done
	e.conn = nil
	return err
}
