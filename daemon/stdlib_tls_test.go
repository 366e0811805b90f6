package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// selfSigned makes a self-signed certificate for addrs, and a pool that
// trusts it.
func selfSigned(t *testing.T, addrs ...netip.Addr) (tls.Certificate, *x509.CertPool, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "xsessiond test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, pemCert
}

// tlsEchoServe answers each TLS connection of ln with what it read up to
// the peer's close_notify, then closes (its own close_notify, then FIN).
// Errors go to errs.
func tlsEchoServe(ln net.Listener, errs chan<- error) {
	serveEach(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(c) // io.EOF only on close_notify
		if err == nil {
			_, err = c.Write(got)
		}
		if err == nil {
			err = c.Close()
		}
		if err != nil {
			select {
			case errs <- err:
			default:
			}
		}
	})
}

// tlsExchange sends data over c, closes its sending half with
// close_notify (tls.Conn.CloseWrite), reads the answer up to the peer's
// close_notify and checks that it is data. The caller closes c.
func tlsExchange(c *tls.Conn, data []byte) error {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read to close_notify: %w", err)
	}
	if err := <-sent; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("%d bytes back of %d: %w", len(got), len(data), errEcho)
	}
	return nil
}

// TestStdlibTLS runs crypto/tls over the app library against the
// kernel's TCP on host A: a TLS echo on tls.NewListener over an app
// listener answers a Go TLS client (its close_notify read as io.EOF on
// both sides, then the TCP FIN) and an HTTPS server on it answers curl;
// tls.Client over an app's Dial talks to a kernel TLS server on A. Every
// byte is checked.
func TestStdlibTLS(t *testing.T) {
	rig, d := tcpRig(t)
	cert, pool, pemCert := selfSigned(t, rig.A.IPv4, rig.B.IPv4)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	a := attach(t, d, app.Options{Name: "tls"})
	data := make([]byte, 4<<20)
	rand.Read(data)

	t.Run("server", func(t *testing.T) {
		errs := make(chan error, 1)
		go tlsEchoServe(tls.NewListener(listenApp(t, a, "tcp://0.0.0.0:7820"), srvCfg), errs)
		err := rig.A.Do(func() error {
			raw, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7820).String(), 5*time.Second)
			if err != nil {
				return err
			}
			c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: rig.B.IPv4.String()})
			defer c.Close()
			if err := tlsExchange(c, data); err != nil {
				return err
			}
			// After both close_notify alerts, the TCP connection ends.
			raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				return fmt.Errorf("the TCP connection after close_notify: %d bytes, %v", n, err)
			}
			return c.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			t.Fatalf("the app's TLS echo: %v", err)
		default:
		}
	})

	t.Run("https curl", func(t *testing.T) {
		ln := tls.NewListener(listenApp(t, a, "tcp://0.0.0.0:7821"), srvCfg)
		mux := http.NewServeMux()
		mux.HandleFunc("/bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.ParseInt(r.PathValue("n"), 10, 64)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			streamPattern(w, n)
		})
		mux.HandleFunc("POST /sum", func(w http.ResponseWriter, r *http.Request) {
			h := sha256.New()
			io.Copy(h, r.Body)
			fmt.Fprintf(w, "%x", h.Sum(nil))
		})
		serveHTTP(t, &http.Server{Handler: mux}, ln)
		base := "https://" + netip.AddrPortFrom(rig.B.IPv4, 7821).String()
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, pemCert, 0o600); err != nil {
			t.Fatal(err)
		}
		const n = 8 << 20
		out, err := inHost(rig.A, "curl", "-sS", "-k", "--max-time", "30", base+"/bytes/"+strconv.Itoa(n), base+"/bytes/"+strconv.Itoa(n))
		if err != nil || len(out) != 2*n {
			t.Fatalf("curl -k, two downloads on one connection: %d bytes, %v", len(out), err)
		}
		for i := range out {
			if out[i] != patternByte(int64(i%n)) {
				t.Fatalf("curl -k: byte %d differs", i)
			}
		}
		up := filepath.Join(t.TempDir(), "up")
		os.WriteFile(up, data, 0o600)
		out, err = inHost(rig.A, "curl", "-sS", "--cacert", ca, "--max-time", "30", "--data-binary", "@"+up, base+"/sum")
		if want := fmt.Sprintf("%x", sha256.Sum256(data)); err != nil || string(out) != want {
			t.Fatalf("curl --cacert, an upload: %q, %v; want %s", out, err, want)
		}
	})

	t.Run("client", func(t *testing.T) {
		errs := make(chan error, 1)
		go tlsEchoServe(tls.NewListener(kernelListen(t, rig.A, ":7822"), srvCfg), errs)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		raw, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7822).String())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: rig.A.IPv4.String()})
		defer c.Close()
		if err := tlsExchange(c, data); err != nil {
			t.Fatal(err)
		}
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("the TCP connection after close_notify: %d bytes, %v", n, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		select {
		case err := <-errs:
			t.Fatalf("the kernel's TLS echo: %v", err)
		default:
		}
	})
}
