package kafkaclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/spillway-io/spillway/field"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// dialTimeout bounds opening the TCP connection to a broker and, with TLS,
// the handshake, as franz-go's default dialer does.
const dialTimeout = 10 * time.Second

// Opts returns the franz-go options for c and brokers: SeedBrokers,
// ClientID and Rack when set, a dialer (TLS when c.TLS is set) and the
// SASL mechanism. It reads the CA, certificate, key and password files
// now, so an error here is a *field.Error naming the setting.
//
// The options also carry a hook that watches how connections to each
// broker get on, so that Ping can say why a broker did not answer. Call
// Opts once per client. Do not add kgo.Dialer, kgo.DialTLSConfig or
// kgo.DialTimeout to the result: Opts owns dialling.
func (c Config) Opts(brokers []string) ([]kgo.Opt, error) {
	c = c.defaulted()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.Rack != "" {
		opts = append(opts, kgo.Rack(c.Rack))
	}
	var tc *tls.Config
	if c.TLS != nil {
		var err error
		if tc, err = c.TLS.config(); err != nil {
			l := field.List{}
			l.Merge("tls", err)
			return nil, l.Err()
		}
	}
	p := &probe{conns: map[string]*connState{}, about: c.describe(), tls: tc}
	opts = append(opts, kgo.Dialer(p.dial), kgo.WithHooks(p))
	if c.SASL != nil {
		m, err := c.SASL.mechanism()
		if err != nil {
			l := field.List{}
			l.Merge("sasl", err)
			return nil, l.Err()
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// config builds the client TLS config, reading the CA and key pair files.
// Errors are *field.Error relative to the tls section.
func (t TLS) config() (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, // opt-in, documented as for tests only
	}
	var l field.List
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		switch {
		case err != nil:
			l.Add("ca_file", "%s", readErr(t.CAFile, err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				l.Add("ca_file", "no PEM certificate in %s", t.CAFile)
			}
			tc.RootCAs = pool
		}
	}
	if t.CertFile != "" && t.KeyFile != "" {
		certPEM, cerr := os.ReadFile(t.CertFile)
		if cerr != nil {
			l.Add("cert_file", "%s", readErr(t.CertFile, cerr))
		}
		keyPEM, kerr := os.ReadFile(t.KeyFile)
		if kerr != nil {
			l.Add("key_file", "%s", readErr(t.KeyFile, kerr))
		}
		if cerr == nil && kerr == nil {
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				l.Add("cert_file", "cannot load the certificate %s with the key %s: %v", t.CertFile, t.KeyFile, err)
			} else {
				tc.Certificates = []tls.Certificate{pair}
			}
		}
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	return tc, nil
}

// readErr words a file read failure without repeating the path twice.
func readErr(path string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("cannot read %s: %v", path, err)
}

// password returns the password, reading PasswordFile if set. Errors are
// *field.Error relative to the sasl section and never hold the password.
func (s SASL) password() (string, error) {
	if s.PasswordFile == "" {
		return s.Password, nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", field.Errorf("password_file", "%s", readErr(s.PasswordFile, err))
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return "", field.Errorf("password_file", "%s is empty", s.PasswordFile)
	}
	return string(b), nil
}

// mechanism builds the franz-go SASL mechanism; s is defaulted.
func (s SASL) mechanism() (sasl.Mechanism, error) {
	pass, err := s.password()
	if err != nil {
		return nil, err
	}
	switch s.Mechanism {
	case MechanismPlain:
		return plain.Auth{User: s.Username, Pass: pass}.AsMechanism(), nil
	case MechanismScramSHA256:
		return scram.Auth{User: s.Username, Pass: pass}.AsSha256Mechanism(), nil
	case MechanismScramSHA512:
		return scram.Auth{User: s.Username, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, field.Errorf("mechanism", "must be %s, got %q", field.OrList(mechanisms), s.Mechanism)
}

// about is what Ping's messages need to know of the settings.
type about struct {
	tls       bool
	caFile    string
	clientTLS bool // a client certificate is configured
	mechanism string
	username  string
}

func (c Config) describe() about {
	a := about{}
	if c.TLS != nil {
		a.tls, a.caFile, a.clientTLS = true, c.TLS.CAFile, c.TLS.CertFile != ""
	}
	if c.SASL != nil {
		a.mechanism, a.username = c.SASL.Mechanism, c.SASL.Username
	}
	return a
}

// dial opens a TCP connection to host and, with TLS, completes the
// handshake, recording each step for Ping.
func (p *probe) dial(ctx context.Context, network, host string) (net.Conn, error) {
	p.set(host, stageDialing)
	d := &net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	if p.tls == nil {
		p.set(host, stageConnected)
		return conn, nil
	}
	p.set(host, stageHandshake)
	tc := p.tls.Clone()
	if tc.ServerName == "" {
		h, _, err := net.SplitHostPort(host)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("unable to split host:port for dialing: %w", err)
		}
		tc.ServerName = h
	}
	hctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	tconn := tls.Client(conn, tc)
	if err := tconn.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, &handshakeError{err: err}
	}
	p.set(host, stageConnected)
	return tconn, nil
}

// handshakeError marks an error of the TLS handshake.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }
