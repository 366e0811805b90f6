package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/xsessiond/xsessiond/app"
)

// echoService is a gRPC test service that echoes: a unary call's payload
// comes back in its response (or the status it asks for), and each
// message of a full-duplex call comes back as the next response.
type echoService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (echoService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if st := req.GetResponseStatus(); st != nil {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (echoService) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// serveGRPC serves echoService on ln until the test ends; the server's
// GracefulStop then must end Serve with nil.
func serveGRPC(t *testing.T, ln net.Listener) {
	t.Helper()
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, echoService{})
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.GracefulStop()
		if err := <-served; err != nil {
			t.Errorf("grpc Serve on %v: %v", ln.Addr(), err)
		}
	})
}

// grpcClient connects to target through dial, closed when the test ends.
func grpcClient(t *testing.T, target string, dial func(ctx context.Context, addr string) (net.Conn, error)) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// grpcExchange runs calls through c: 24 unary calls of up to 1 MiB from
// 8 goroutines, a call answered with an error status, and a full-duplex
// stream of 64 messages of 64 KiB; every payload must come back exact.
func grpcExchange(ctx context.Context, c testgrpc.TestServiceClient) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				body := make([]byte, 1+mrand.IntN(1<<20))
				rand.Read(body)
				resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}})
				if err == nil && !bytes.Equal(resp.GetPayload().GetBody(), body) {
					err = fmt.Errorf("%d bytes sent, %d came back, not the same", len(body), len(resp.GetPayload().GetBody()))
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("unary call %d.%d: %w", g, i, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.ResourceExhausted), Message: "asked for"}})
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "asked for" {
		return fmt.Errorf("a call answered with a status: %v", err)
	}

	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		return fmt.Errorf("full-duplex call: %w", err)
	}
	const n = 64
	sent := make([][]byte, n)
	for i := range sent {
		sent[i] = make([]byte, 64<<10)
		rand.Read(sent[i])
	}
	sendErr := make(chan error, 1)
	go func() {
		for _, b := range sent {
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: b}}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	for i := range n {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("full-duplex message %d: %w", i, err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), sent[i]) {
			return fmt.Errorf("full-duplex message %d: %d bytes sent, %d came back, not the same", i, len(sent[i]), len(resp.GetPayload().GetBody()))
		}
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("full-duplex end: %v, want io.EOF", err)
	}
	if err := <-sendErr; err != nil {
		return fmt.Errorf("full-duplex send: %w", err)
	}
	return nil
}

// TestGRPCServe runs gRPC, unchanged, over the app library: grpc.Server's
// Serve on an app's TCP listener on host B answers a kernel gRPC client on
// host A (IPv4 and IPv6: TCP over the datapath) and another app's client
// (a cut-through session), and an app's gRPC client dials a kernel gRPC
// server on host A. Every payload is checked, a status the server returns
// reaches the client, and GracefulStop ends each Serve with nil.
func TestGRPCServe(t *testing.T) {
	rig, d := tcpRig(t)
	srv := attach(t, d, app.Options{Name: "grpcd"})
	for _, uri := range []string{"tcp://0.0.0.0:7300", "tcp://[::]:7300"} {
		ln, err := srv.Listen(uri)
		if err != nil {
			t.Fatalf("listen %s: %v", uri, err)
		}
		serveGRPC(t, ln)
	}
	serveGRPC(t, kernelListen(t, rig.A, ":7301"))
	cli := attach(t, d, app.Options{Name: "grpc-client"})
	appDial := func(ctx context.Context, addr string) (net.Conn, error) { return cli.Dial(ctx, "tcp://"+addr) }
	kernelDial := func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := rig.A.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}

	for _, tc := range []struct {
		name   string
		target netip.AddrPort
		dial   func(ctx context.Context, addr string) (net.Conn, error)
	}{
		{"kernel client to app, IPv4", netip.AddrPortFrom(rig.B.IPv4, 7300), kernelDial},
		{"kernel client to app, IPv6", netip.AddrPortFrom(rig.B.IPv6, 7300), kernelDial},
		{"app client to app, cut-through", netip.MustParseAddrPort("127.0.0.1:7300"), appDial},
		{"app client to kernel server", netip.AddrPortFrom(rig.A.IPv4, 7301), appDial},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			start := time.Now()
			if err := grpcExchange(ctx, grpcClient(t, tc.target.String(), tc.dial)); err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: done in %v", tc.target, time.Since(start))
		})
	}
}
