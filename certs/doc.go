// Package certs creates a private certificate authority, issues master and
// slave certificates from it, and builds the mutual-TLS configurations both
// roles use.
//
// Roles are carried by the extended key usage: a master certificate has
// clientAuth only (the master is the QUIC client), a slave certificate
// serverAuth only, with SANs for the names and addresses masters dial. Both
// sides verify the peer's chain against the configured CA and refuse a
// certificate without the expected usage, including one with no usage
// extension at all (which crypto/x509 would otherwise accept for any use).
//
// The daemons hold their material in a Store (reload.go): certificate,
// key, CA and revocation list, swapped atomically on Reload and read by the
// TLS callbacks at each handshake, so a reload reaches new connections
// without touching established ones. RevokeFile (crl.go) maintains the CRL
// tdfs-certs revoke writes. ServerConfig and ClientConfig build fixed
// configurations from material in memory (tests, tools).
//
// It uses the standard library only and knows nothing of QUIC: the
// transport takes the *tls.Config built here. It does not fetch CRLs or
// speak OCSP: the list is a file the operator distributes.
package certs
