// Package kafkaclient holds the Kafka client settings every Kafka-facing
// component shares — the source, the dead-letter producer, the admin client
// and the Kafka sink: client id, rack, TLS and SASL. They sit in the
// top-level `kafka:` section of a pipeline file, next to `brokers:`.
//
// Config.Opts turns them into franz-go options; Ping checks, within a
// timeout, that the brokers answer a client built with them, and says in
// words why not (wrong password, untrusted certificate, plaintext client on
// a TLS listener...), naming the broker.
//
// The SASL password never appears in an error, a log line or a printed
// Config: SASL and Config render it as "[redacted]" through fmt (String,
// GoString, Format), log/slog (LogValue), encoding/json and YAML marshalling.
package kafkaclient

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spillway-io/spillway/field"
)

// SASL mechanisms.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Redacted is what a password is printed as.
const Redacted = "[redacted]"

// Config is how Spillway's Kafka clients connect and identify themselves.
// The zero value is a plaintext, unauthenticated client with franz-go's
// default client id. A Config is a plain value; it is safe to copy once
// built (the TLS and SASL pointers are never modified by this package,
// except by ApplyDefaults on its receiver).
type Config struct {
	// ClientID is sent with every request (broker logs, quotas, ACLs).
	// Empty: the caller's default, which Spillway sets to
	// "spillway-<job name>"; franz-go's "kgo" if nobody sets one.
	ClientID string `yaml:"client_id"`

	// Rack is this worker's rack (availability zone). With brokers that
	// have broker.rack and a replica selector set, the consumer fetches
	// from a replica in the same rack (KIP-392). Empty: no rack.
	Rack string `yaml:"rack"`

	// TLS, when present (even empty: `tls: {}`), makes every connection
	// TLS. Nil: plaintext.
	TLS *TLS `yaml:"tls"`

	// SASL, when present, authenticates every connection. Nil: no SASL.
	SASL *SASL `yaml:"sasl"`
}

// TLS configures encrypted connections. The zero value verifies the
// brokers' certificates against the system roots and the dialled host name.
type TLS struct {
	// CAFile is a PEM file of the certificate authorities trusted to sign
	// the brokers' certificates. Empty: the system roots.
	CAFile string `yaml:"ca_file"`

	// CertFile and KeyFile are a PEM client certificate and its private
	// key, for brokers that require client authentication (mutual TLS).
	// Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	// ServerName is the name the brokers' certificates must hold. Empty:
	// the host of the address being dialled.
	ServerName string `yaml:"server_name"`

	// InsecureSkipVerify turns certificate verification off: any
	// certificate is accepted, so anyone on the path can read and change
	// the traffic. For tests only. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASL configures authentication. Password and PasswordFile are exclusive;
// the pipeline file's ${ENV} interpolation is the way to take the password
// from the environment.
//
// SASL's String, GoString, Format, LogValue, MarshalJSON and MarshalYAML
// print the password as "[redacted]".
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, in any case
	// (ApplyDefaults upper-cases it). Required.
	Mechanism string `yaml:"mechanism"`

	// Username is required.
	Username string `yaml:"username"`

	// Password is the password itself, usually "${KAFKA_PASSWORD}".
	Password string `yaml:"password"`

	// PasswordFile is a file holding the password (a mounted secret); it
	// is read when the client is built, and one trailing newline is
	// trimmed.
	PasswordFile string `yaml:"password_file"`
}

// ApplyDefaults normalises the SASL mechanism to upper case. It is
// idempotent. The client id default is the caller's (see ClientID).
func (c *Config) ApplyDefaults() {
	if c.SASL != nil {
		c.SASL.Mechanism = strings.ToUpper(strings.TrimSpace(c.SASL.Mechanism))
	}
}

// defaulted returns a copy of c with defaults applied, not sharing the TLS
// and SASL structs with c.
func (c Config) defaulted() Config {
	if c.TLS != nil {
		t := *c.TLS
		c.TLS = &t
	}
	if c.SASL != nil {
		s := *c.SASL
		c.SASL = &s
	}
	c.ApplyDefaults()
	return c
}

// Validate reports every invalid setting, each a *field.Error with a path
// relative to the kafka section ("tls.ca_file", "sasl.mechanism"), joined
// with errors.Join. It reads the CA, certificate, key and password files to
// check they load, so a typo in a path is found before anything runs.
// It does not modify c.
func (c Config) Validate() error {
	c = c.defaulted()
	var l field.List
	if t := c.TLS; t != nil {
		if t.CertFile != "" && t.KeyFile == "" {
			l.Add("tls.key_file", "required when cert_file is set")
		}
		if t.KeyFile != "" && t.CertFile == "" {
			l.Add("tls.cert_file", "required when key_file is set")
		}
		if t.InsecureSkipVerify && t.CAFile != "" {
			l.Add("tls.insecure_skip_verify", "cannot be combined with ca_file (the CA would never be checked)")
		}
		if _, err := t.config(); err != nil {
			l.Merge("tls", err)
		}
	}
	if s := c.SASL; s != nil {
		if s.Mechanism == "" {
			l.Add("sasl.mechanism", "required: %s", field.OrList(mechanisms))
		} else {
			l.OneOf("sasl.mechanism", s.Mechanism, mechanisms...)
		}
		l.Required("sasl.username", s.Username)
		switch {
		case s.Password != "" && s.PasswordFile != "":
			l.Add("sasl.password_file", "cannot be combined with password: set one")
		case s.Password == "" && s.PasswordFile == "":
			l.Add("sasl.password", `required: set password (for example "${KAFKA_PASSWORD}") or password_file`)
		case s.PasswordFile != "":
			if _, err := s.password(); err != nil {
				l.Merge("sasl", err)
			}
		}
	}
	return l.Err()
}

var mechanisms = []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512}

// String describes c with the password redacted.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{client_id: %q, rack: %q, tls: ", c.ClientID, c.Rack)
	if c.TLS == nil {
		b.WriteString("off")
	} else {
		t := c.TLS
		fmt.Fprintf(&b, "{ca_file: %q, cert_file: %q, key_file: %q, server_name: %q, insecure_skip_verify: %t}",
			t.CAFile, t.CertFile, t.KeyFile, t.ServerName, t.InsecureSkipVerify)
	}
	b.WriteString(", sasl: ")
	if c.SASL == nil {
		b.WriteString("off")
	} else {
		b.WriteString(c.SASL.String())
	}
	b.WriteString("}")
	return b.String()
}

// GoString is String, so %#v redacts the password too.
func (c Config) GoString() string { return "kafkaclient.Config" + c.String() }

// Format prints c with String (GoString for %#v) whatever the verb, so no
// verb reaches the password field by field.
func (c Config) Format(f fmt.State, verb rune) { format(f, verb, c) }

// LogValue logs c as a group with the password redacted.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("client_id", c.ClientID), slog.String("rack", c.Rack)}
	if c.TLS != nil {
		attrs = append(attrs, slog.Group("tls",
			"ca_file", c.TLS.CAFile, "cert_file", c.TLS.CertFile, "key_file", c.TLS.KeyFile,
			"server_name", c.TLS.ServerName, "insecure_skip_verify", c.TLS.InsecureSkipVerify))
	}
	if c.SASL != nil {
		attrs = append(attrs, slog.Any("sasl", *c.SASL))
	}
	return slog.GroupValue(attrs...)
}

// redacted returns s with a set password replaced by Redacted.
func (s SASL) redacted() SASL {
	if s.Password != "" {
		s.Password = Redacted
	}
	return s
}

// String describes s with the password redacted.
func (s SASL) String() string {
	r := s.redacted()
	return fmt.Sprintf("{mechanism: %q, username: %q, password: %q, password_file: %q}",
		r.Mechanism, r.Username, r.Password, r.PasswordFile)
}

// GoString is String, so %#v redacts the password too.
func (s SASL) GoString() string { return "kafkaclient.SASL" + s.String() }

// Format prints s with String (GoString for %#v) whatever the verb, so no
// verb reaches the password field by field.
func (s SASL) Format(f fmt.State, verb rune) { format(f, verb, s) }

func format(f fmt.State, verb rune, v interface {
	fmt.Stringer
	fmt.GoStringer
}) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, v.GoString())
		return
	}
	io.WriteString(f, v.String())
}

// LogValue logs s as a group with the password redacted.
func (s SASL) LogValue() slog.Value {
	r := s.redacted()
	return slog.GroupValue(slog.String("mechanism", r.Mechanism), slog.String("username", r.Username),
		slog.String("password", r.Password), slog.String("password_file", r.PasswordFile))
}

// plainSASL has SASL's fields and none of its methods, for marshalling.
type plainSASL SASL

// MarshalJSON encodes s with the password redacted.
func (s SASL) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Mechanism    string `json:"mechanism"`
		Username     string `json:"username"`
		Password     string `json:"password,omitempty"`
		PasswordFile string `json:"password_file,omitempty"`
	}(s.redacted()))
}

// MarshalYAML encodes s with the password redacted (printing a defaulted
// config must not print the secret).
func (s SASL) MarshalYAML() (any, error) { return plainSASL(s.redacted()), nil }
