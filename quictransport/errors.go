package quictransport

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/quic-go/quic-go"

	"github.com/tdfs/tdfs/wire"
)

// Sentinel errors.
var (
	// ErrConfig is wrapped by every configuration error.
	ErrConfig = errors.New("quictransport: invalid configuration")
	// ErrDrainTimeout: Drain's timeout passed before every slave was durable.
	ErrDrainTimeout = errors.New("drain timed out")
	// ErrProtocol is wrapped by every violation of the protocol by a peer.
	ErrProtocol = errors.New("protocol violation")
	// ErrSeqOutOfOrder: an op numbered below the next expected seq, or twice.
	ErrSeqOutOfOrder = errors.New("op out of order")
	// ErrApply: the slave's Handler failed to apply or sync an op.
	ErrApply = errors.New("apply failed")
	// ErrFenced: the slave refuses this master (another master, or an
	// older epoch of its own).
	ErrFenced = errors.New("fenced")
	// ErrDrained: the connection ended because the master drained it (not
	// an error to report).
	ErrDrained = errors.New("drained")
	// ErrLane: a lane connection was refused, or one of a session's lanes
	// ended, which ends the session (wire.CodeLane).
	ErrLane = errors.New("lane refused or lost")
)

// PeerError is what a peer reported with a FrameError or a QUIC
// application close.
type PeerError struct {
	Code wire.ErrorCode
	Seq  uint64
	Msg  string
}

func (e *PeerError) Error() string {
	if e.Seq != 0 {
		return fmt.Sprintf("peer says: %v at seq %d: %s", e.Code, e.Seq, e.Msg)
	}
	return fmt.Sprintf("peer says: %v: %s", e.Code, e.Msg)
}

// resyncError says a slave needs a resync; it is wire.ErrNeedsResync with the
// details (where the slave is, what the master holds).
type resyncError struct{ msg string }

func (e *resyncError) Error() string        { return e.msg }
func (e *resyncError) Is(target error) bool { return target == wire.ErrNeedsResync }

// appCode turns a protocol error code into a QUIC application error code:
// the same number, so either side can read the other's close reason.
func appCode(c wire.ErrorCode) quic.ApplicationErrorCode { return quic.ApplicationErrorCode(c) }

// codeOf picks the error code to close a connection with after err.
func codeOf(err error) wire.ErrorCode {
	switch {
	case errors.Is(err, wire.ErrNeedsResync): // before what it may wrap: the slave's refusal or limit
		return wire.CodeNeedsResync
	case errors.Is(err, wire.ErrLimit):
		return wire.CodeLimit
	case errors.Is(err, ErrFenced):
		return wire.CodeFenced
	case errors.Is(err, ErrApply):
		return wire.CodeApply
	case errors.Is(err, ErrLane):
		return wire.CodeLane
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrSeqOutOfOrder),
		errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrTruncated):
		return wire.CodeProtocol
	}
	return wire.CodeShutdown
}

// explain turns a connection error into a sentence an operator can act on,
// keeping quic-go's text (tests and operators grep for it).
func explain(err error) string {
	if err == nil {
		return ""
	}
	if le, ok := errors.AsType[*laneError](err); ok {
		return fmt.Sprintf("lane %d of the connection ended: %s", le.n, explain(le.cause))
	}
	if te, ok := errors.AsType[*quic.TransportError](err); ok && te.ErrorCode.IsCryptoError() {
		if te.Remote && te.ErrorCode == 0x100+116 {
			// crypto/tls offers a client certificate only if its issuer is
			// among the CAs the server asks for: a certificate from another
			// CA is not even sent.
			return "the slave refused us: it requires a master certificate issued by the CA it trusts, and ours is missing or from another CA: " + err.Error()
		}
		if te.ErrorCode == 0x100+120 {
			// no_application_protocol: the ALPN names the protocol
			// version (certs.ALPN).
			return "the slave speaks another tdfs protocol version than this master (upgrade master and slaves together): " + err.Error()
		}
		if te.Remote {
			// With QUIC mTLS the client's Dial succeeds before the server
			// has checked the client certificate; a refusal shows up on the
			// first read (docs/design.md, Implementation traps).
			return "the slave refused our certificate (check the master certificate, its expiry and the CA the slave trusts): " + err.Error()
		}
		if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
			return "the slave's certificate is not signed by our CA: " + err.Error()
		}
		return "TLS handshake failed: " + err.Error()
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote {
		return fmt.Sprintf("the slave closed the connection (%v): %s", wire.ErrorCode(ae.ErrorCode), ae.ErrorMessage)
	}
	if _, ok := errors.AsType[*quic.HandshakeTimeoutError](err); ok {
		return "no answer from the slave (is it running and reachable?): " + err.Error()
	}
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return "the slave went silent: " + err.Error()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "the slave did not answer in time: " + err.Error()
	}
	return err.Error()
}

// closedByPeer reports whether err just says the connection or stream is
// gone (so a reader should end quietly rather than report garbage).
func closedByPeer(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}

// slaveCannotApply reports whether err is the slave saying it could not
// apply an op (CodeApply), and its reason.
func slaveCannotApply(err error) (string, bool) { return slaveClosedWith(err, wire.CodeApply) }

// slaveRefusesOp reports whether err is the slave refusing an op by its
// policy or bounds (CodeRefused, CodeLimit), and its reason.
func slaveRefusesOp(err error) (string, bool) {
	if msg, ok := slaveClosedWith(err, wire.CodeRefused); ok {
		return msg, true
	}
	return slaveClosedWith(err, wire.CodeLimit)
}

// slaveClosedWith reports whether err is the slave closing the connection
// with code, by a FrameError or by the code of its QUIC close, and its
// reason.
func slaveClosedWith(err error, code wire.ErrorCode) (string, bool) {
	if pe, ok := errors.AsType[*PeerError](err); ok && pe.Code == code {
		return pe.Msg, true
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote &&
		wire.ErrorCode(ae.ErrorCode) == code {
		return ae.ErrorMessage, true
	}
	return "", false
}

// slaveFenced reports whether err is the slave refusing this master's
// epoch, and its reason.
func slaveFenced(err error) (string, bool) { return slaveClosedWith(err, wire.CodeFenced) }

// remoteCode is the code of the peer's QUIC close in err, if err is one.
func remoteCode(err error) (wire.ErrorCode, bool) {
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok && ae.Remote {
		return wire.ErrorCode(ae.ErrorCode), true
	}
	return 0, false
}

// peerError decodes a FrameError body into a *PeerError.
func peerError(body []byte) error {
	e, err := wire.ParseError(body)
	if err != nil {
		return fmt.Errorf("%w: error frame: %w", ErrProtocol, err)
	}
	return &PeerError{Code: e.Code, Seq: e.Seq, Msg: e.Msg}
}
