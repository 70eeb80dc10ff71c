package kafkaclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spillway-io/spillway/field"
	"github.com/spillway-io/spillway/internal/testpki"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"go.yaml.in/yaml/v3"
)

// problems returns Validate's errors as "path: msg", sorted, checking each
// is a *field.Error.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	for _, e := range field.Split(err) {
		var fe *field.Error
		if !errors.As(e, &fe) {
			t.Errorf("%T is not a *field.Error: %v", e, e)
			continue
		}
		out = append(out, fe.Error())
	}
	slices.Sort(out)
	return out
}

func TestValidate(t *testing.T) {
	p := testpki.New(t, "test-ca")
	other := testpki.New(t, "other-ca")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := writeFile(t, "ca.pem", "not a certificate\n")
	pass := writeFile(t, "pass", "s3cret\n")
	emptyPass := writeFile(t, "empty", "\n")

	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"zero", Config{}, nil},
		{"client id and rack", Config{ClientID: "spillway-orders", Rack: "eu-west-1a"}, nil},
		{"empty tls", Config{TLS: &TLS{}}, nil},
		{"tls with everything", Config{TLS: &TLS{CAFile: p.CAFile, CertFile: p.ClientCert, KeyFile: p.ClientKey, ServerName: "kafka"}}, nil},
		{"insecure", Config{TLS: &TLS{InsecureSkipVerify: true}}, nil},
		{"cert without key", Config{TLS: &TLS{CertFile: p.ClientCert}},
			[]string{"tls.key_file: required when cert_file is set"}},
		{"key without cert", Config{TLS: &TLS{KeyFile: p.ClientKey}},
			[]string{"tls.cert_file: required when key_file is set"}},
		{"ca file missing", Config{TLS: &TLS{CAFile: missing}},
			[]string{"tls.ca_file: cannot read " + missing + ": no such file or directory"}},
		{"ca file not PEM", Config{TLS: &TLS{CAFile: notPEM}},
			[]string{"tls.ca_file: no PEM certificate in " + notPEM}},
		{"cert file missing", Config{TLS: &TLS{CertFile: missing, KeyFile: p.ClientKey}},
			[]string{"tls.cert_file: cannot read " + missing + ": no such file or directory"}},
		{"key file missing", Config{TLS: &TLS{CertFile: p.ClientCert, KeyFile: missing}},
			[]string{"tls.key_file: cannot read " + missing + ": no such file or directory"}},
		{"cert not PEM", Config{TLS: &TLS{CertFile: notPEM, KeyFile: p.ClientKey}},
			[]string{"tls.cert_file: cannot load the certificate " + notPEM + " with the key " + p.ClientKey + ": tls: failed to find any PEM data in certificate input"}},
		{"key of another certificate", Config{TLS: &TLS{CertFile: p.ClientCert, KeyFile: other.ClientKey}},
			[]string{"tls.cert_file: cannot load the certificate " + p.ClientCert + " with the key " + other.ClientKey + ": tls: private key does not match public key"}},
		{"insecure with a CA", Config{TLS: &TLS{CAFile: p.CAFile, InsecureSkipVerify: true}},
			[]string{"tls.insecure_skip_verify: cannot be combined with ca_file (the CA would never be checked)"}},

		{"sasl plain", Config{SASL: &SASL{Mechanism: "PLAIN", Username: "u", Password: "p"}}, nil},
		{"sasl mechanism in lower case", Config{SASL: &SASL{Mechanism: " scram-sha-256", Username: "u", Password: "p"}}, nil},
		{"sasl password file", Config{SASL: &SASL{Mechanism: "SCRAM-SHA-512", Username: "u", PasswordFile: pass}}, nil},
		{"empty sasl", Config{SASL: &SASL{}}, []string{
			`sasl.mechanism: required: "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512"`,
			`sasl.password: required: set password (for example "${KAFKA_PASSWORD}") or password_file`,
			"sasl.username: required",
		}},
		{"unknown mechanism", Config{SASL: &SASL{Mechanism: "gssapi", Username: "u", Password: "p"}},
			[]string{`sasl.mechanism: must be "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512", got "GSSAPI"`}},
		{"blank username", Config{SASL: &SASL{Mechanism: "PLAIN", Username: "  ", Password: "p"}},
			[]string{"sasl.username: required"}},
		{"password and password file", Config{SASL: &SASL{Mechanism: "PLAIN", Username: "u", Password: "p", PasswordFile: pass}},
			[]string{"sasl.password_file: cannot be combined with password: set one"}},
		{"password file missing", Config{SASL: &SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: missing}},
			[]string{"sasl.password_file: cannot read " + missing + ": no such file or directory"}},
		{"password file empty", Config{SASL: &SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: emptyPass}},
			[]string{"sasl.password_file: " + emptyPass + " is empty"}},
		{"tls and sasl problems together", Config{TLS: &TLS{CertFile: p.ClientCert}, SASL: &SASL{Mechanism: "PLAIN", Password: "p"}},
			[]string{"sasl.username: required", "tls.key_file: required when cert_file is set"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problems(t, tc.cfg.Validate())
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestValidateDoesNotModify(t *testing.T) {
	c := Config{SASL: &SASL{Mechanism: "plain", Username: "u", Password: "p"}, TLS: &TLS{}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Opts([]string{"localhost:9092"}); err != nil {
		t.Fatal(err)
	}
	if c.SASL.Mechanism != "plain" {
		t.Errorf("Validate or Opts changed the mechanism to %q", c.SASL.Mechanism)
	}
}

func TestApplyDefaults(t *testing.T) {
	c := Config{SASL: &SASL{Mechanism: " Scram-Sha-512 "}}
	c.ApplyDefaults()
	once := *c.SASL
	c.ApplyDefaults()
	if c.SASL.Mechanism != MechanismScramSHA512 || *c.SASL != once {
		t.Errorf("mechanism %q after ApplyDefaults twice (%q once), want %q", c.SASL.Mechanism, once.Mechanism, MechanismScramSHA512)
	}
	var zero Config
	zero.ApplyDefaults()
	if zero.TLS != nil || zero.SASL != nil || zero.ClientID != "" {
		t.Errorf("ApplyDefaults on the zero Config gave %v", zero)
	}
}

func TestPasswordFile(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{"s3cret", "s3cret"},
		{"s3cret\n", "s3cret"},
		{"s3cret\r\n", "s3cret"},
		{"s3cret\n\n", "s3cret\n"},
		{" s3cret ", " s3cret "},
	} {
		got, err := SASL{PasswordFile: writeFile(t, "p", tc.content)}.password()
		if err != nil || got != tc.want {
			t.Errorf("password from %q = %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
}

// TestYAML: the keys as the pipeline file writes them; an empty tls
// section turns TLS on.
func TestYAML(t *testing.T) {
	decode := func(t *testing.T, src string) Config {
		t.Helper()
		var c Config
		dec := yaml.NewDecoder(strings.NewReader(src))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := decode(t, `
client_id: spillway-orders
rack: use1-az1
tls:
  ca_file: /etc/kafka/ca.pem
  cert_file: /etc/kafka/client.pem
  key_file: /etc/kafka/client-key.pem
  server_name: kafka.internal
  insecure_skip_verify: false
sasl:
  mechanism: scram-sha-512
  username: spillway
  password_file: /run/secrets/kafka
`)
	want := Config{ClientID: "spillway-orders", Rack: "use1-az1",
		TLS:  &TLS{CAFile: "/etc/kafka/ca.pem", CertFile: "/etc/kafka/client.pem", KeyFile: "/etc/kafka/client-key.pem", ServerName: "kafka.internal"},
		SASL: &SASL{Mechanism: "scram-sha-512", Username: "spillway", PasswordFile: "/run/secrets/kafka"}}
	if c.ClientID != want.ClientID || c.Rack != want.Rack || c.TLS == nil || *c.TLS != *want.TLS || c.SASL == nil || *c.SASL != *want.SASL {
		t.Errorf("decoded %v\nwant %v", c, want)
	}
	if c := decode(t, "tls: {}\n"); c.TLS == nil {
		t.Error("tls: {} left TLS off")
	}
	if c := decode(t, "client_id: x\n"); c.TLS != nil || c.SASL != nil {
		t.Error("no tls or sasl section turned them on")
	}
}

func TestRedaction(t *testing.T) {
	const secret = "hunter2-very-secret"
	c := Config{ClientID: "spillway-x", TLS: &TLS{CAFile: "/ca.pem"},
		SASL: &SASL{Mechanism: "PLAIN", Username: "alice", Password: secret}}

	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%10.3v"} {
		for _, v := range []any{c, &c, *c.SASL, c.SASL} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	for _, newHandler := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(newHandler(&b)).Info("config", "kafka", c, "sasl", c.SASL, "saslv", *c.SASL)
		outputs = append(outputs, b.String())
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(j), string(y))

	for _, out := range outputs {
		if strings.Contains(out, secret) {
			t.Errorf("password printed: %s", out)
		}
		if !strings.Contains(out, "alice") && !strings.HasPrefix(out, "kafkaclient.") {
			t.Errorf("output lost the username (not a redaction test any more?): %s", out)
		}
	}
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c.SASL), string(j), string(y)} {
		if !strings.Contains(out, Redacted) {
			t.Errorf("no %q in %s", Redacted, out)
		}
	}
	if s := fmt.Sprint(Config{SASL: &SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: "/p"}}); strings.Contains(s, Redacted) {
		t.Errorf("an empty password is printed as redacted: %s", s)
	}

	// Errors never hold it either.
	bad := c
	bad.SASL = &SASL{Mechanism: "nope", Password: secret}
	if err := bad.Validate(); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("Validate error %v", err)
	}
	if _, err := bad.Opts([]string{"localhost:9092"}); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("Opts error %v", err)
	}
}

func TestOpts(t *testing.T) {
	c := Config{ClientID: "spillway-orders", Rack: "az1",
		SASL: &SASL{Mechanism: "scram-sha-256", Username: "u", Password: "p"}}
	opts, err := c.Opts([]string{"k1:9092", "k2:9093"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got := cl.OptValue(kgo.SeedBrokers); !slices.Equal(got.([]string), []string{"k1:9092", "k2:9093"}) {
		t.Errorf("seed brokers %v", got)
	}
	if got := cl.OptValue(kgo.ClientID); got != "spillway-orders" {
		t.Errorf("client id %v", got)
	}
	if got := cl.OptValue(kgo.Rack); got != "az1" {
		t.Errorf("rack %v", got)
	}
	ms, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism)
	if len(ms) != 1 || ms[0].Name() != MechanismScramSHA256 {
		t.Errorf("SASL mechanisms %v", ms)
	}
	if findProbe(cl) == nil {
		t.Error("no probe hook installed")
	}

	// Defaults: no client id or rack option, franz-go's own.
	opts, err = Config{}.Opts([]string{"k1:9092"})
	if err != nil {
		t.Fatal(err)
	}
	cl2, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if got := cl2.OptValue(kgo.ClientID); got != "kgo" {
		t.Errorf("default client id %v, want franz-go's kgo", got)
	}
	if ms := cl2.OptValue(kgo.SASL); ms != nil && len(ms.([]sasl.Mechanism)) != 0 {
		t.Errorf("SASL without a sasl section: %v", ms)
	}

	if _, err := (Config{TLS: &TLS{CertFile: "x"}}).Opts(nil); err == nil {
		t.Error("Opts accepted an invalid config")
	}
}

// TestSecureExample: the kafka section of configs/secure.yaml decodes into
// Config and validates, with the password from the environment.
func TestSecureExample(t *testing.T) {
	src, err := os.ReadFile("../configs/secure.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KAFKA_PASSWORD": "from-the-environment"}
	expanded := os.Expand(string(src), func(v string) string {
		name, def, _ := strings.Cut(v, ":")
		if val, ok := env[name]; ok {
			return val
		}
		return def
	})
	var file struct {
		Kafka Config `yaml:"kafka"`
	}
	if err := yaml.Unmarshal([]byte(expanded), &file); err != nil {
		t.Fatal(err)
	}
	c := file.Kafka
	if err := c.Validate(); err != nil {
		t.Fatalf("configs/secure.yaml: %v", err)
	}
	if c.TLS == nil || c.SASL == nil || c.SASL.Password != "from-the-environment" || c.ClientID == "" {
		t.Errorf("configs/secure.yaml kafka section: %v", c)
	}
	var raw struct {
		Kafka Config `yaml:"kafka"`
	}
	if err := yaml.Unmarshal(src, &raw); err != nil {
		t.Fatal(err)
	}
	if p := raw.Kafka.SASL.Password; !strings.HasPrefix(p, "${") || strings.Contains(p, ":") {
		t.Errorf("the example's password is %q, want an environment variable without a default", p)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
