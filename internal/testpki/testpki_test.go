package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// TestPKI: the server certificate verifies for 127.0.0.1 and localhost
// against Pool but not against another CA's, and a mutual-TLS handshake
// with ServerTLS(true) and the client files succeeds.
func TestPKI(t *testing.T) {
	p, other := New(t, "test-ca"), New(t, "other-ca")
	leaf, err := x509.ParseCertificate(p.Server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.Pool, DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: other.Pool}); err == nil {
		t.Error("server certificate verifies against another CA")
	}

	client, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.ServerTLS(true))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs: p.Pool, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Errorf("server handshake: %v", err)
	}
}
