// Package testpki makes throwaway certificate authorities for tests: a CA,
// a broker certificate for 127.0.0.1 and localhost, and a client
// certificate, all made fresh for each test. Nothing is committed; keys
// live in t.TempDir().
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a throwaway certificate authority with a server certificate (for
// 127.0.0.1 and localhost) and a client certificate, the CA certificate and
// the client's certificate and key written as PEM files under a test's
// temporary directory.
type PKI struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey

	// Pool trusts the CA.
	Pool *x509.CertPool
	// CAFile holds the CA certificate (PEM).
	CAFile string
	// Server is a certificate for 127.0.0.1 and localhost (common name
	// "broker") signed by the CA, for server authentication.
	Server tls.Certificate
	// ClientCert and ClientKey hold a client certificate (common name
	// "spillway") signed by the CA and its PKCS #8 key (PEM).
	ClientCert, ClientKey string
}

// New makes a CA whose common name is name, and its server and client
// certificates. Calling it twice gives two unrelated CAs.
func New(t testing.TB, name string) *PKI {
	t.Helper()
	dir := t.TempDir()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{ca: ca, caKey: key, Pool: x509.NewCertPool()}
	p.Pool.AddCert(ca)
	p.CAFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", der)

	sder, skey := p.issue(t, "broker", x509.ExtKeyUsageServerAuth)
	p.Server = tls.Certificate{Certificate: [][]byte{sder}, PrivateKey: skey}
	cder, ckey := p.issue(t, "spillway", x509.ExtKeyUsageClientAuth)
	p.ClientCert = writePEM(t, dir, "client.pem", "CERTIFICATE", cder)
	kder, err := x509.MarshalPKCS8PrivateKey(ckey)
	if err != nil {
		t.Fatal(err)
	}
	p.ClientKey = writePEM(t, dir, "client-key.pem", "PRIVATE KEY", kder)
	return p
}

// ServerTLS is a server's TLS config presenting p.Server; with clientAuth
// the server requires a client certificate signed by p.
func (p *PKI) ServerTLS(clientAuth bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{p.Server}, MinVersion: tls.VersionTLS12}
	if clientAuth {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = p.Pool
	}
	return c
}

// issue returns a certificate (DER) for 127.0.0.1 and localhost, signed by
// p, and its key.
func (p *PKI) issue(t testing.TB, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	sn, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
