package kafkasink

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/spillway-io/spillway/sources/kafka"
)

// exactly_once: the sink produces through the Kafka source's transactional
// client (a kgo.GroupTransactSession) between a transaction's Begin and its
// End, which commits the source's offsets with the records; see
// sources/kafka's Transactions for the barrier that makes a transaction
// hold exactly the outputs of the records it commits.

// Transactions returns the sink's side of the exactly-once mode, and false
// without delivery: exactly_once. The job hands it to the Kafka source
// (kafka.Source.UseTransactions) after setting Flush.
func (s *Sink) Transactions() (kafka.Transactions, bool) {
	if s.cfg.Delivery != ExactlyOnce {
		return kafka.Transactions{}, false
	}
	codec, err := codecs(s.cfg.Compression)
	if err != nil { // Validate checked it
		codec = []kgo.CompressionCodec{kgo.NoCompression()}
	}
	return kafka.Transactions{
		IDPrefix:     s.cfg.TransactionalID,
		Interval:     s.cfg.TransactionInterval,
		Records:      s.cfg.TransactionRecords,
		Timeout:      s.cfg.TransactionTimeout,
		ProducerOpts: s.producerOpts(codec),
		Sink:         s,
	}, true
}

// UseTransactClient implements kafka.TxnSink: WriteBatch produces through
// cl from now on.
func (s *Sink) UseTransactClient(cl *kgo.Client) { s.txcl.Store(cl) }

// TakeTxnFailure implements kafka.TxnSink.
func (s *Sink) TakeTxnFailure() error {
	s.txnMu.Lock()
	defer s.txnMu.Unlock()
	err := s.txnFail
	s.txnFail = nil
	return err
}

// noteTxnFailures remembers the first record of a batch whose outcome
// leaves the open transaction unable to commit: one still in flight when
// WriteBatch gave up (it may land later, next to the retry's copy) or one
// that failed otherwise than as a record Kafka refuses outright (a
// retriable error: the writer sends it again, and whether the first try
// was written is not known). Records refused outright (too large, invalid)
// were not written and are dead-lettered, and records failed before
// producing were never sent: neither stops the commit.
func (s *Sink) noteTxnFailures(out []kgo.Record, prep, raw []error) {
	for i, err := range raw {
		if prep[i] != nil || err == nil || batchFatal(err) {
			continue
		}
		s.txnMu.Lock()
		if s.txnFail == nil {
			s.txnFail = fmt.Errorf("a record for %s failed or timed out in the transaction (it may have been written, and is sent again): %w", out[i].Topic, err)
		}
		s.txnMu.Unlock()
		return
	}
}

// isFenced reports whether err says that another producer took over this
// one's transactional id.
func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

var _ kafka.TxnSink = (*Sink)(nil)
