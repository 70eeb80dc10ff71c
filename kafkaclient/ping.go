package kafkaclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kinds of BrokerError, for errors.Is.
var (
	// ErrAuthentication: the broker refused the SASL credentials, or
	// requires SASL and none is configured.
	ErrAuthentication = errors.New("SASL authentication failed")
	// ErrTLS: the TLS handshake failed (certificate not trusted, wrong
	// name, client certificate refused), or one side speaks TLS and the
	// other does not.
	ErrTLS = errors.New("TLS handshake failed")
	// ErrUnreachable: no connection could be opened (refused, unknown
	// host, no route).
	ErrUnreachable = errors.New("cannot connect")
	// ErrNoAnswer: the broker did not answer within the timeout.
	ErrNoAnswer = errors.New("no answer")
)

// BrokerError says why one broker did not answer Ping. Error() reads
// "broker <host:port>: <reason>". errors.Is matches Kind (one of
// ErrAuthentication, ErrTLS, ErrUnreachable, ErrNoAnswer, or nil when the
// failure fits none) and errors.Is/As reach Err, the error franz-go, crypto/tls
// or crypto/x509 returned.
type BrokerError struct {
	Broker string // host:port, as in the seed list
	Kind   error
	Reason string // what happened, with a hint at the setting to check
	Err    error
}

// Error reads "broker <host:port>: <reason>".
func (e *BrokerError) Error() string { return "broker " + e.Broker + ": " + e.Reason }

// Unwrap returns Kind and Err.
func (e *BrokerError) Unwrap() []error {
	var out []error
	for _, err := range []error{e.Kind, e.Err} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// NoAnswerError is Ping's error when no broker answered within its timeout
// and none failed in a way worth more words. errors.Is(err, ErrNoAnswer)
// holds.
type NoAnswerError struct {
	Timeout time.Duration
	Brokers []string // the seed brokers tried
	Detail  string   // how far the connections got, when known
}

// Error reads "no broker answered within 10s (tried a, b)", followed by
// the detail when there is one.
func (e *NoAnswerError) Error() string {
	s := fmt.Sprintf("no broker answered within %v (tried %s)", e.Timeout, strings.Join(e.Brokers, ", "))
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is reports whether target is ErrNoAnswer.
func (e *NoAnswerError) Is(target error) bool { return target == ErrNoAnswer }

// Ping checks that a seed broker of cl answers a metadata request within
// timeout: it asks every seed broker at once and returns nil as soon as one
// answers. Otherwise it returns, for a parent ctx that ended, ctx.Err();
// when every broker just failed to answer in time, a *NoAnswerError; else
// the errors of the brokers joined with errors.Join, each a *BrokerError
// naming the broker and, when the cause is recognised, saying it in words
// ("SASL authentication failed (PLAIN, user "alice"): ...", "TLS handshake
// failed: certificate signed by unknown authority (set kafka.tls.ca_file)").
//
// A client built from Config.Opts gives the clearest errors: its hook tells
// Ping how far each connection got (TCP, TLS handshake, ApiVersions, SASL).
// Ping blocks until it knows the answer; it starts one goroutine per seed
// broker and waits for them.
func Ping(ctx context.Context, cl *kgo.Client, timeout time.Duration) error {
	names := seedNames(cl)
	brokers := cl.SeedBrokers()
	if len(brokers) == 0 {
		return errors.New("no seed brokers to ping")
	}
	p := findProbe(cl)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	errs := make([]error, len(brokers))
	late := make([]bool, len(brokers))
	var ok atomic.Bool
	var wg sync.WaitGroup
	for i, b := range brokers {
		wg.Go(func() {
			req := kmsg.NewPtrMetadataRequest()
			req.Topics = []kmsg.MetadataRequestTopic{}
			_, err := b.Request(pctx, req)
			if err == nil {
				ok.Store(true)
				cancel()
				return
			}
			errs[i], late[i] = err, errors.Is(pctx.Err(), context.DeadlineExceeded)
		})
	}
	wg.Wait()
	switch {
	case ok.Load():
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}

	var a about
	if p != nil {
		a = p.about
	} else {
		a = guessAbout(cl)
	}
	var (
		failed   []error
		timedOut []string
		details  []string // per timed-out broker, "" when unknown
	)
	for i, err := range errs {
		name := seedName(names, i)
		var st connState
		if p != nil {
			st = p.state(name)
		}
		be := explain(name, err, st, a)
		if be.Kind == nil && late[i] && isTimeout(err) {
			d := stalled(st, a, p != nil)
			be = &BrokerError{Broker: name, Kind: ErrNoAnswer, Reason: "no answer within " + timeout.String(), Err: err}
			if d != "" {
				be.Reason += ": " + d
			}
			timedOut, details = append(timedOut, name), append(details, d)
		}
		failed = append(failed, be)
	}
	if len(timedOut) < len(failed) {
		return errors.Join(failed...)
	}
	e := &NoAnswerError{Timeout: timeout, Brokers: timedOut}
	if allEqual(details) {
		e.Detail = details[0]
	} else {
		var parts []string
		for i, d := range details {
			if d != "" {
				parts = append(parts, timedOut[i]+": "+d)
			}
		}
		e.Detail = strings.Join(parts, "; ")
	}
	return e
}

func allEqual(s []string) bool {
	if len(s) == 0 {
		return false
	}
	for _, x := range s[1:] {
		if x != s[0] {
			return false
		}
	}
	return true
}

func seedName(names []string, i int) string {
	if i < len(names) {
		return names[i]
	}
	return "#" + strconv.Itoa(i)
}

// seedNames returns cl's seed brokers as host:port, in the order franz-go
// numbers them (the port defaults to 9092 as in franz-go).
func seedNames(cl *kgo.Client) []string {
	seeds, _ := cl.OptValue(kgo.SeedBrokers).([]string)
	out := make([]string, len(seeds))
	for i, s := range seeds {
		out[i] = hostPort(s)
	}
	return out
}

func hostPort(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), "9092")
}

// guessAbout reads what it can of the settings of a client not built by
// Opts.
func guessAbout(cl *kgo.Client) about {
	a := about{}
	if tc, _ := cl.OptValue(kgo.DialTLSConfig).(*tls.Config); tc != nil {
		a.tls = true
		a.clientTLS = len(tc.Certificates) > 0 || tc.GetClientCertificate != nil
	}
	return a
}

// isTimeout reports whether err is a deadline or a network timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// explain turns err from the request to broker into a *BrokerError,
// recognising causes by type (kerr codes, crypto/tls and crypto/x509
// errors, net errors) and by how far the connection got (st). Kind is nil
// when the cause is not recognised.
func explain(broker string, err error, st connState, a about) *BrokerError {
	be := &BrokerError{Broker: broker, Err: err}
	who := ""
	if a.mechanism != "" {
		who = fmt.Sprintf(" (%s, user %q)", a.mechanism, a.username)
	}
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		dnsErr    *net.DNSError
		hs        *handshakeError
		firstEOF  *kgo.ErrFirstReadEOF
	)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		be.Kind, be.Reason = ErrAuthentication, fmt.Sprintf("SASL authentication failed%s: %v", who, err)
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		be.Kind, be.Reason = ErrAuthentication, fmt.Sprintf("SASL authentication failed%s: the broker does not offer this mechanism (check kafka.sasl.mechanism): %v", who, err)
	case errors.Is(err, kerr.IllegalSaslState):
		be.Kind, be.Reason = ErrAuthentication, fmt.Sprintf("SASL authentication failed%s: %v", who, err)

	case errors.As(err, &unknownCA):
		hint := "set kafka.tls.ca_file to the CA that signed it"
		if a.caFile != "" {
			hint = "kafka.tls.ca_file " + a.caFile + " does not hold the CA that signed it"
		}
		issuer := ""
		if unknownCA.Cert != nil {
			issuer = fmt.Sprintf(", issuer %q", unknownCA.Cert.Issuer.String())
		}
		be.Kind, be.Reason = ErrTLS, fmt.Sprintf("TLS handshake failed: certificate signed by unknown authority (%s%s)", hint, issuer)
	case errors.As(err, &badHost):
		be.Kind, be.Reason = ErrTLS, fmt.Sprintf("TLS handshake failed: %s (set kafka.tls.server_name to a name the certificate holds)",
			strings.TrimPrefix(badHost.Error(), "x509: "))
	case errors.As(err, &invalid):
		be.Kind, be.Reason = ErrTLS, "TLS handshake failed: "+strings.TrimPrefix(invalid.Error(), "x509: ")
	case errors.As(err, &verify):
		be.Kind, be.Reason = ErrTLS, "TLS handshake failed: "+verify.Error()
	case remoteAlert(err) != "":
		be.Kind, be.Reason = ErrTLS, "TLS handshake failed: "+remoteAlert(err)
		if !a.clientTLS {
			be.Reason += " (the broker may require a client certificate: set kafka.tls.cert_file and kafka.tls.key_file)"
		} else {
			be.Reason += " (the broker did not accept kafka.tls.cert_file: is it signed by a CA the broker trusts, and still valid?)"
		}
	case errors.As(err, &header):
		be.Kind, be.Reason = ErrTLS, "TLS handshake failed: the broker does not answer in TLS; is this a plaintext listener? (use the broker's TLS port, or remove kafka.tls)"
	case errors.As(err, &hs) && isEOF(err):
		be.Kind, be.Reason = ErrTLS, "TLS handshake failed: the broker closed the connection; is this a plaintext listener? (use the broker's TLS port, or remove kafka.tls)"
	case errors.As(err, &hs) && !isTimeout(err):
		be.Kind, be.Reason = ErrTLS, "TLS handshake failed: "+hs.err.Error()

	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		be.Kind, be.Reason = ErrUnreachable, fmt.Sprintf("host %s not found (check brokers)", dnsErr.Name)
	case errors.Is(err, syscall.ECONNREFUSED):
		be.Kind, be.Reason = ErrUnreachable, "connection refused (is the broker running, and is the port right?)"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		be.Kind, be.Reason = ErrUnreachable, "no route to the host: "+err.Error()

	// The broker hung up: how far the connection got says why.
	case st.failKey == keySASLAuthenticate || st.failKey == keySASLHandshake:
		be.Kind, be.Reason = ErrAuthentication, fmt.Sprintf("SASL authentication failed%s: the broker closed the connection during authentication (wrong password, unknown user, or a mechanism the user has no credentials for?)", who)
	case st.failKey == keyAPIVersions && !a.tls && isEOF(err):
		be.Kind, be.Reason = ErrTLS, "the broker closed the connection at the first request; does this listener require TLS? (set kafka.tls)"
	case st.failKey == keyAPIVersions && !a.tls:
		be.Kind, be.Reason = ErrTLS, fmt.Sprintf("the broker did not answer the first request in Kafka's protocol (%v); does this listener require TLS? (set kafka.tls)", err)
	case (errors.As(err, &firstEOF) || isEOF(err)) && st.versionsOK && a.mechanism == "":
		be.Kind, be.Reason = ErrAuthentication, "the broker closed the connection after the first request; does it require SASL? (set kafka.sasl)"
	case errors.As(err, &firstEOF):
		be.Reason = err.Error()
	default:
		be.Reason = err.Error()
	}
	return be
}

// isEOF reports whether the peer hung up: end of stream, or a reset (a
// server that closes with unread data sends one).
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// remoteAlert returns the text of a TLS alert the broker sent ("tls:
// certificate required"), or "". crypto/tls reports a received alert as a
// *net.OpError with Op "remote error" around an unexported type; its text
// is compared with tls.AlertError's rendering of the alerts that concern
// certificates, so no message is spelled out here.
func remoteAlert(err error) string {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return ""
	}
	text := op.Err.Error()
	for _, code := range []uint8{
		116, // certificate_required
		42,  // bad_certificate
		43,  // unsupported_certificate
		44,  // certificate_revoked
		45,  // certificate_expired
		46,  // certificate_unknown
		48,  // unknown_ca
		40,  // handshake_failure
	} {
		if text == tls.AlertError(code).Error() {
			return "the broker sent " + strconv.Quote(strings.TrimPrefix(text, "tls: "))
		}
	}
	return ""
}

// stalled says how far the connections to a broker got before the time
// ran out, or "" when unknown.
func stalled(st connState, a about, known bool) string {
	if !known {
		return ""
	}
	switch st.stage {
	case stageNone, stageDialing:
		return "no TCP connection (is the address right, and the port open to this host?)"
	case stageHandshake:
		return "connected, but the TLS handshake did not finish; a plaintext listener never answers it (is this the broker's TLS port?)"
	case stageConnected:
		if !a.tls {
			return "connected, but the broker did not answer the first request (is this a Kafka port? does it require TLS?)"
		}
		return "connected, but the broker did not answer the first request (is this a Kafka port?)"
	}
	return "connected, but the broker did not answer the metadata request"
}

// Request keys of connection set-up.
const (
	keySASLHandshake    int16 = 17
	keyAPIVersions      int16 = 18
	keySASLAuthenticate int16 = 36
)

type stage uint8

const (
	stageNone      stage = iota
	stageDialing         // TCP dial started
	stageHandshake       // TCP connected, TLS handshake started
	stageConnected       // TCP (and TLS) up; ApiVersions and SASL next
	stageReady           // franz-go finished connection set-up
)

// connState is what the probe saw of the latest connection to a broker.
type connState struct {
	stage      stage
	failKey    int16 // request key of the set-up request whose read or write failed; -1 if none
	versionsOK bool  // the broker answered ApiVersions
}

// probe watches connection set-up to every broker of one client: its dial
// function records the TCP and TLS steps and its hooks the ApiVersions and
// SASL exchanges. Only set-up requests and failures are recorded, so the
// per-request cost on a busy client is a comparison. Safe for concurrent
// use.
type probe struct {
	about about
	tls   *tls.Config // nil: plaintext

	mu    sync.Mutex
	conns map[string]*connState // by host:port
}

var (
	_ kgo.HookBrokerConnect = (*probe)(nil)
	_ kgo.HookBrokerRead    = (*probe)(nil)
	_ kgo.HookBrokerWrite   = (*probe)(nil)
)

// findProbe returns the probe Opts installed in cl, or nil.
func findProbe(cl *kgo.Client) *probe {
	hooks, _ := cl.OptValue(kgo.WithHooks).([]kgo.Hook)
	for _, h := range hooks {
		if p, ok := h.(*probe); ok {
			return p
		}
	}
	return nil
}

func (p *probe) get(addr string) *connState {
	st := p.conns[addr]
	if st == nil {
		st = &connState{failKey: -1}
		p.conns[addr] = st
	}
	return st
}

// set records that the latest connection to addr reached s. A new dial
// keeps what earlier connections learnt (the last failure, whether
// ApiVersions was answered): a broker behaves the same on every connection,
// and franz-go opens several at once.
func (p *probe) set(addr string, s stage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.get(addr)
	st.stage = s
	if s == stageReady {
		st.failKey = -1
	}
}

func (p *probe) state(addr string) connState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.conns[addr]; st != nil {
		return *st
	}
	return connState{failKey: -1}
}

func metaAddr(m kgo.BrokerMetadata) string {
	return net.JoinHostPort(m.Host, strconv.Itoa(int(m.Port)))
}

func setupKey(key int16) bool {
	return key == keyAPIVersions || key == keySASLHandshake || key == keySASLAuthenticate
}

// OnBrokerConnect records a finished connection set-up.
func (p *probe) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		p.set(metaAddr(meta), stageReady)
	}
}

// OnBrokerWrite records a failed write of a set-up request.
func (p *probe) OnBrokerWrite(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && setupKey(key) {
		p.fail(metaAddr(meta), key)
	}
}

// OnBrokerRead records the answer, or the failure, to a set-up request.
func (p *probe) OnBrokerRead(meta kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if !setupKey(key) {
		return
	}
	if err != nil {
		p.fail(metaAddr(meta), key)
		return
	}
	if key == keyAPIVersions {
		p.mu.Lock()
		p.get(metaAddr(meta)).versionsOK = true
		p.mu.Unlock()
	}
}

func (p *probe) fail(addr string, key int16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.get(addr)
	st.failKey = key
	if key == keyAPIVersions {
		st.versionsOK = false
	}
}
