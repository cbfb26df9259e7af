package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The simulator is also an HTTPS proxy for *.amazonaws.com, for programs whose
// AWS endpoint cannot be configured: aws-iam-authenticator sends a token's
// presigned URL only to the real STS host names. With HTTPS_PROXY=<URL()> and
// SSL_CERT_FILE=<a file holding ProxyCA()>, their CONNECT to
// sts.<region>.amazonaws.com:443 ends here: the TLS is terminated with a
// certificate for that name signed by the simulation's CA, and the requests
// inside are served like any other. Nothing is ever forwarded anywhere.

type proxyState struct {
	once   sync.Once
	err    error
	caPEM  []byte
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey

	mu     sync.Mutex
	leaves map[string]*tls.Certificate
	conns  chan net.Conn
	closed chan struct{}
	srv    *http.Server
}

// ProxyCA is the PEM of the CA whose certificates the proxy presents.
func (s *Server) ProxyCA() ([]byte, error) {
	if err := s.initProxy(); err != nil {
		return nil, err
	}
	return s.proxy.caPEM, nil
}

func (s *Server) initProxy() error {
	p := &s.proxy
	p.once.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			p.err = fmt.Errorf("simulated aws proxy: CA key: %w", err)
			return
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "recycler simulated AWS CA"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
			IsCA:                  true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			p.err = fmt.Errorf("simulated aws proxy: CA: %w", err)
			return
		}
		p.caCert, _ = x509.ParseCertificate(der)
		p.caKey = key
		p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		p.leaves = map[string]*tls.Certificate{}
		p.conns = make(chan net.Conn)
		p.closed = make(chan struct{})
		srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
		p.mu.Lock()
		p.srv = srv
		p.mu.Unlock()
		go func() { _ = srv.Serve(tunnelListener{p}) }()
	})
	return p.err
}

// leaf returns a certificate for host signed by the CA.
func (p *proxyState) leaf(host string) (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.leaves[host]; ok {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(p.leaves) + 2)),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	p.leaves[host] = c
	return c, nil
}

// serveConnect opens a tunnel to the simulation for an *.amazonaws.com:443 target.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || port != "443" || !strings.HasSuffix(host, ".amazonaws.com") {
		http.Error(w, fmt.Sprintf("simulated aws: the proxy only answers for *.amazonaws.com:443, not %q", r.Host), http.StatusForbidden)
		return
	}
	if err := s.initProxy(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "simulated aws: cannot hijack the connection", http.StatusInternalServerError)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	// The client sends its TLS hello only after this answer, so nothing is buffered.
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		conn.Close()
		return
	}
	p := &s.proxy
	tconn := tls.Server(conn, &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := hello.ServerName
			if name == "" {
				name = host
			}
			return p.leaf(name)
		},
	})
	select {
	case p.conns <- tconn:
	case <-p.closed:
		conn.Close()
	}
}

func (s *Server) closeProxy(ctx context.Context) error {
	p := &s.proxy
	p.mu.Lock()
	srv := p.srv
	p.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

// tunnelListener hands the tunnels' TLS connections to the proxy's http.Server.
type tunnelListener struct{ p *proxyState }

func (l tunnelListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.p.conns:
		return c, nil
	case <-l.p.closed:
		return nil, net.ErrClosed
	}
}

func (l tunnelListener) Close() error {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	select {
	case <-l.p.closed:
	default:
		close(l.p.closed)
	}
	return nil
}

func (l tunnelListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// ProxyTransport is an HTTP transport for in-process clients that must reach
// *.amazonaws.com as programs under HTTPS_PROXY do: those hosts through the
// proxy (trusting its CA), everything else directly.
func (s *Server) ProxyTransport() (*http.Transport, error) {
	ca, err := s.ProxyCA()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	proxyURL, err := url.Parse(s.URL())
	if err != nil {
		return nil, err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = func(r *http.Request) (*url.URL, error) {
		if r.URL.Scheme == "https" && strings.HasSuffix(r.URL.Hostname(), ".amazonaws.com") {
			return proxyURL, nil
		}
		return nil, nil
	}
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
}
