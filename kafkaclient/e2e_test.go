package kafkaclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway-io/spillway/internal/broker"
	"github.com/spillway-io/spillway/internal/testpki"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// connectTimeout is the Ping timeout of the failure tests. Every failure
// but the silent ones is recognised long before it.
const connectTimeout = 5 * time.Second

// The embedded broker's users.
var users = []broker.User{
	{Mechanism: "PLAIN", Name: "alice", Password: "alice-secret"},
	{Mechanism: "SCRAM-SHA-256", Name: "bob", Password: "bob-secret"},
	{Mechanism: "SCRAM-SHA-512", Name: "carol", Password: "carol-secret"},
}

func start(t *testing.T, o broker.Options) []string {
	t.Helper()
	e, err := broker.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Addrs()
}

func startCluster(t *testing.T, o broker.Options) *broker.Embedded {
	t.Helper()
	e, err := broker.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func newClient(t *testing.T, cfg Config, addrs []string, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts, err := cfg.Opts(addrs)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// roundTrip pings, creates a topic with the admin client, produces and
// consumes through a consumer group, every client built from cfg.Opts.
func roundTrip(t *testing.T, cfg Config, addrs []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	prod := newClient(t, cfg, addrs)
	if err := Ping(ctx, prod, connectTimeout); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	adminOpts, err := cfg.Opts(addrs)
	if err != nil {
		t.Fatal(err)
	}
	const topic = "secured"
	if err := broker.EnsureTopicsWith(ctx, addrs, adminOpts, 2, topic); err != nil {
		t.Fatalf("EnsureTopicsWith: %v", err)
	}
	const n = 20
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%3), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	cons := newClient(t, cfg, addrs, kgo.ConsumerGroup("g"), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]bool{}
	for len(seen) < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(seen), n, err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
	}
	for i := range n {
		if !seen[fmt.Sprintf("v%d", i)] {
			t.Errorf("record v%d not consumed", i)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	p := testpki.New(t, "test-ca")
	passFile := writeFile(t, "carol.pass", "carol-secret\n")
	for _, tc := range []struct {
		name string
		opts broker.Options
		cfg  Config
	}{
		{"plaintext", broker.Options{}, Config{ClientID: "spillway-test", Rack: "az1"}},
		{"sasl plain", broker.Options{Users: users},
			Config{SASL: &SASL{Mechanism: "plain", Username: "alice", Password: "alice-secret"}}},
		{"sasl scram-sha-256", broker.Options{Users: users},
			Config{SASL: &SASL{Mechanism: "SCRAM-SHA-256", Username: "bob", Password: "bob-secret"}}},
		{"sasl scram-sha-512 from password_file", broker.Options{Users: users},
			Config{SASL: &SASL{Mechanism: "scram-sha-512", Username: "carol", PasswordFile: passFile}}},
		{"tls with ca_file", broker.Options{TLS: p.ServerTLS(false)},
			Config{TLS: &TLS{CAFile: p.CAFile}}},
		{"tls with server_name", broker.Options{TLS: p.ServerTLS(false)},
			Config{TLS: &TLS{CAFile: p.CAFile, ServerName: "localhost"}}},
		{"tls insecure_skip_verify", broker.Options{TLS: p.ServerTLS(false)},
			Config{TLS: &TLS{InsecureSkipVerify: true}}},
		{"mutual tls", broker.Options{TLS: p.ServerTLS(true)},
			Config{TLS: &TLS{CAFile: p.CAFile, CertFile: p.ClientCert, KeyFile: p.ClientKey}}},
		{"tls + scram-sha-512 (MSK)", broker.Options{TLS: p.ServerTLS(false), Users: users, Brokers: 3},
			Config{TLS: &TLS{CAFile: p.CAFile}, SASL: &SASL{Mechanism: "SCRAM-SHA-512", Username: "carol", Password: "carol-secret"}}},
		{"tls + plain (Confluent Cloud)", broker.Options{TLS: p.ServerTLS(false), Users: users},
			Config{TLS: &TLS{CAFile: p.CAFile}, SASL: &SASL{Mechanism: "PLAIN", Username: "alice", Password: "alice-secret"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, tc.cfg, start(t, tc.opts))
		})
	}
}

// pingErr builds a client from cfg and returns Ping's error, failing the
// test if Ping succeeds.
func pingErr(t *testing.T, cfg Config, addrs []string, timeout time.Duration) error {
	t.Helper()
	cl := newClient(t, cfg, addrs)
	err := Ping(context.Background(), cl, timeout)
	if err == nil {
		t.Fatal("Ping succeeded")
	}
	return err
}

// silentListener accepts connections and never answers.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	return ln.Addr().String()
}

// closedPort returns an address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestPingFailures(t *testing.T) {
	p := testpki.New(t, "test-ca")
	other := testpki.New(t, "other-ca")
	plain := func(user, pass string) *SASL { return &SASL{Mechanism: "PLAIN", Username: user, Password: pass} }

	for _, tc := range []struct {
		name    string
		opts    broker.Options
		cfg     Config
		kind    error
		want    []string // substrings, after "broker <addr>: "
		as      any      // a pointer errors.As must fill, or nil
		timeout time.Duration
	}{
		{
			name: "wrong password, PLAIN",
			opts: broker.Options{Users: users},
			cfg:  Config{SASL: plain("alice", "not-the-password")},
			kind: ErrAuthentication,
			want: []string{`SASL authentication failed (PLAIN, user "alice"): the broker closed the connection during authentication`},
		},
		{
			name: "wrong password, SCRAM-SHA-256",
			opts: broker.Options{Users: users},
			cfg:  Config{SASL: &SASL{Mechanism: "SCRAM-SHA-256", Username: "bob", Password: "not-the-password"}},
			kind: ErrAuthentication,
			want: []string{`SASL authentication failed (SCRAM-SHA-256, user "bob")`},
		},
		{
			name: "unknown user, SCRAM-SHA-512",
			opts: broker.Options{Users: users},
			cfg:  Config{SASL: &SASL{Mechanism: "SCRAM-SHA-512", Username: "mallory", Password: "x"}},
			kind: ErrAuthentication,
			want: []string{`SASL authentication failed (SCRAM-SHA-512, user "mallory")`},
		},
		{
			name: "wrong password over TLS",
			opts: broker.Options{Users: users, TLS: p.ServerTLS(false)},
			cfg:  Config{TLS: &TLS{CAFile: p.CAFile}, SASL: plain("alice", "not-the-password")},
			kind: ErrAuthentication,
			want: []string{`SASL authentication failed (PLAIN, user "alice")`},
		},
		{
			name: "no SASL configured, broker requires it",
			opts: broker.Options{Users: users},
			cfg:  Config{},
			kind: ErrAuthentication,
			want: []string{"does it require SASL? (set kafka.sasl)"},
		},
		{
			name: "untrusted certificate (system roots)",
			opts: broker.Options{TLS: p.ServerTLS(false)},
			cfg:  Config{TLS: &TLS{}},
			kind: ErrTLS,
			want: []string{"TLS handshake failed: certificate signed by unknown authority (set kafka.tls.ca_file", `issuer "CN=test-ca"`},
			as:   new(x509.UnknownAuthorityError),
		},
		{
			name: "ca_file of another CA",
			opts: broker.Options{TLS: p.ServerTLS(false)},
			cfg:  Config{TLS: &TLS{CAFile: other.CAFile}},
			kind: ErrTLS,
			want: []string{"certificate signed by unknown authority (kafka.tls.ca_file " + other.CAFile + " does not hold the CA that signed it"},
			as:   new(x509.UnknownAuthorityError),
		},
		{
			name: "server_name the certificate does not hold",
			opts: broker.Options{TLS: p.ServerTLS(false)},
			cfg:  Config{TLS: &TLS{CAFile: p.CAFile, ServerName: "kafka.example.com"}},
			kind: ErrTLS,
			want: []string{"TLS handshake failed: certificate is valid for localhost, not kafka.example.com (set kafka.tls.server_name"},
			as:   new(x509.HostnameError),
		},
		{
			name: "plaintext client, TLS listener",
			opts: broker.Options{TLS: p.ServerTLS(false)},
			cfg:  Config{},
			kind: ErrTLS,
			want: []string{"the broker closed the connection at the first request; does this listener require TLS? (set kafka.tls)"},
		},
		{
			name: "client certificate missing",
			opts: broker.Options{TLS: p.ServerTLS(true)},
			cfg:  Config{TLS: &TLS{CAFile: p.CAFile}},
			kind: ErrTLS,
			want: []string{`TLS handshake failed: the broker sent "certificate required"`, "set kafka.tls.cert_file and kafka.tls.key_file"},
		},
		{
			name: "client certificate of another CA",
			opts: broker.Options{TLS: p.ServerTLS(true)},
			cfg:  Config{TLS: &TLS{CAFile: p.CAFile, CertFile: other.ClientCert, KeyFile: other.ClientKey}},
			kind: ErrTLS,
			want: []string{"TLS handshake failed: the broker sent", "the broker did not accept kafka.tls.cert_file"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addrs := start(t, tc.opts)
			err := pingErr(t, tc.cfg, addrs, connectTimeout)
			msg := err.Error()
			if !errors.Is(err, tc.kind) {
				t.Errorf("errors.Is(err, %v) = false; err: %v", tc.kind, err)
			}
			var be *BrokerError
			if !errors.As(err, &be) || be.Broker != addrs[0] {
				t.Errorf("error does not name broker %s: %v", addrs[0], err)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, "broker "+addrs[0]+": ") || !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not name the broker or say %q", msg, w)
				}
			}
			if tc.as != nil && !errors.As(err, tc.as) {
				t.Errorf("errors.As(%T) = false; err: %v", tc.as, err)
			}
			if tc.cfg.SASL != nil && strings.Contains(msg, tc.cfg.SASL.Password) {
				t.Errorf("error holds the password: %v", err)
			}
		})
	}
}

// TestPingAuthenticationFailedCode: a broker that answers
// SASL_AUTHENTICATION_FAILED (as Apache Kafka does) rather than hanging up.
func TestPingAuthenticationFailedCode(t *testing.T) {
	e := startCluster(t, broker.Options{Users: users})
	e.Cluster().ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster().KeepControl()
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	err := pingErr(t, Config{SASL: &SASL{Mechanism: "PLAIN", Username: "alice", Password: "alice-secret"}}, e.Addrs(), connectTimeout)
	want := "broker " + e.Addrs()[0] + `: SASL authentication failed (PLAIN, user "alice"): SASL_AUTHENTICATION_FAILED`
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Invalid username or password") {
		t.Errorf("error %q\ndoes not say %q and the broker's message", err, want)
	}
	if !errors.Is(err, ErrAuthentication) || !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("error is not ErrAuthentication and kerr.SaslAuthenticationFailed: %v", err)
	}
}

func TestPingUnreachable(t *testing.T) {
	addr := closedPort(t)
	err := pingErr(t, Config{}, []string{addr}, connectTimeout)
	want := "broker " + addr + ": connection refused"
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want ErrUnreachable saying %q", err, want)
	}
}

// TestPingNoAnswer: brokers that accept connections and never answer give
// "no broker answered within <timeout> (tried a, b)", with how far the
// connections got.
func TestPingNoAnswer(t *testing.T) {
	const timeout = 500 * time.Millisecond
	t.Run("plaintext", func(t *testing.T) {
		a, b := silentListener(t), silentListener(t)
		err := pingErr(t, Config{}, []string{a, b}, timeout)
		want := fmt.Sprintf("no broker answered within 500ms (tried %s, %s): connected, but the broker did not answer the first request", a, b)
		var na *NoAnswerError
		if !errors.Is(err, ErrNoAnswer) || !errors.As(err, &na) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %q, want a *NoAnswerError starting %q", err, want)
		}
	})
	t.Run("TLS client, plaintext listener", func(t *testing.T) {
		// kfake, like any plaintext listener, waits for a Kafka request
		// that a TLS hello never completes.
		addrs := start(t, broker.Options{})
		err := pingErr(t, Config{TLS: &TLS{InsecureSkipVerify: true}}, addrs, timeout)
		want := fmt.Sprintf("no broker answered within 500ms (tried %s): connected, but the TLS handshake did not finish; a plaintext listener never answers it", addrs[0])
		if !errors.Is(err, ErrNoAnswer) || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %q, want %q", err, want)
		}
	})
	t.Run("no TCP connection", func(t *testing.T) {
		// A TCP dial that hangs cannot be arranged portably (a full
		// listen backlog, an unroutable address), so check the words for
		// that stage directly.
		st := connState{stage: stageDialing, failKey: -1}
		if got := stalled(st, about{}, true); !strings.HasPrefix(got, "no TCP connection") {
			t.Errorf("stalled(dialing) = %q", got)
		}
	})
}

// TestPingSeveralBrokers: one seed broker answering is enough; when none
// does, every broker is named with its own reason.
func TestPingSeveralBrokers(t *testing.T) {
	addrs := start(t, broker.Options{Users: users})
	refused := closedPort(t)
	cfg := Config{SASL: &SASL{Mechanism: "PLAIN", Username: "alice", Password: "alice-secret"}}
	cl := newClient(t, cfg, []string{refused, addrs[0]})
	if err := Ping(context.Background(), cl, connectTimeout); err != nil {
		t.Fatalf("Ping with one good seed: %v", err)
	}

	cfg.SASL.Password = "wrong"
	err := pingErr(t, cfg, []string{refused, addrs[0]}, connectTimeout)
	for _, want := range []string{
		"broker " + refused + ": connection refused",
		"broker " + addrs[0] + `: SASL authentication failed (PLAIN, user "alice")`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\ndoes not say %q", err, want)
		}
	}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, ErrAuthentication) {
		t.Errorf("joined error does not hold both kinds: %v", err)
	}
}

// TestPingParentContext: a parent context that ends is not a broker
// failure.
func TestPingParentContext(t *testing.T) {
	a := silentListener(t)
	cl := newClient(t, Config{}, []string{a})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Ping(ctx, cl, connectTimeout); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with a cancelled context = %v, want context.Canceled", err)
	}
}

// TestPingForeignClient: a client not built by Opts still gets the errors
// recognised by type.
func TestPingForeignClient(t *testing.T) {
	p := testpki.New(t, "test-ca")
	addrs := start(t, broker.Options{TLS: p.ServerTLS(false)})
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = Ping(context.Background(), cl, connectTimeout)
	want := "broker " + addrs[0] + ": TLS handshake failed: certificate signed by unknown authority (set kafka.tls.ca_file"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
}

// scriptedListener answers every connection with reply (after reading
// what the client sends first) and closes it.
func scriptedListener(t *testing.T, reply []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			_, _ = c.Read(buf)
			_, _ = c.Write(reply)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestPingTLSClientPlaintextBroker: Apache Kafka's plaintext listener
// hangs up on a TLS hello (its first four bytes read as a huge request
// size); other servers answer in plain text.
func TestPingTLSClientPlaintextBroker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply []byte
		want  string
	}{
		{"hangs up", nil, "TLS handshake failed: the broker closed the connection; is this a plaintext listener?"},
		{"answers in plain text", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), "TLS handshake failed: the broker does not answer in TLS; is this a plaintext listener?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := scriptedListener(t, tc.reply)
			err := pingErr(t, Config{TLS: &TLS{}}, []string{addr}, connectTimeout)
			if !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "broker "+addr+": "+tc.want) {
				t.Errorf("got %v, want ErrTLS saying %q", err, tc.want)
			}
		})
	}
}

// TestExplain covers causes the embedded broker cannot produce.
func TestExplain(t *testing.T) {
	dial := func(err error) error {
		return fmt.Errorf("unable to dial: %w", &net.OpError{Op: "dial", Net: "tcp", Err: err})
	}
	expired := &x509.Certificate{}
	for _, tc := range []struct {
		name string
		err  error
		st   connState
		a    about
		kind error
		want string
	}{
		{"unknown host", dial(&net.DNSError{Err: "no such host", Name: "kafka-0.example", IsNotFound: true}), connState{failKey: -1}, about{},
			ErrUnreachable, "host kafka-0.example not found (check brokers)"},
		{"no route", dial(syscall.EHOSTUNREACH), connState{failKey: -1}, about{},
			ErrUnreachable, "no route to the host"},
		{"expired certificate", &handshakeError{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: expired, Reason: x509.Expired, Detail: "current time is after 2020"}}},
			connState{failKey: -1}, about{tls: true},
			ErrTLS, "TLS handshake failed: certificate has expired or is not yet valid: current time is after 2020"},
		{"mechanism not offered", fmt.Errorf("%w: nope", kerr.UnsupportedSaslMechanism), connState{failKey: -1}, about{mechanism: "SCRAM-SHA-512", username: "u"},
			ErrAuthentication, `SASL authentication failed (SCRAM-SHA-512, user "u"): the broker does not offer this mechanism (check kafka.sasl.mechanism)`},
		{"not Kafka's protocol at the first request", errors.New("invalid large response size 352518912 > limit 104857600; the first three bytes received appear to be a tls alert record for TLS v1.2"),
			connState{failKey: keyAPIVersions}, about{},
			ErrTLS, "the broker did not answer the first request in Kafka's protocol (invalid large response size"},
		{"something else", errors.New("boom"), connState{failKey: -1}, about{}, nil, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := explain("k:9092", tc.err, tc.st, tc.a)
			if be.Kind != tc.kind || !strings.HasPrefix(be.Error(), "broker k:9092: "+tc.want) {
				t.Errorf("explain = %q (kind %v), want %q (kind %v)", be, be.Kind, tc.want, tc.kind)
			}
			if !errors.Is(be, tc.err) {
				t.Error("BrokerError does not wrap the cause")
			}
		})
	}
}
