package certs

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStoreHandshakeMatrix runs real TLS 1.3 handshakes over 127.0.0.1
// against the configurations the daemons use (Store.ServerConfig on the
// slave, Store.ClientConfig on the master), for both key types: the good
// case is accepted, and each bad one refused on the side that checks, with
// the error text a user would search for. The peer that misbehaves uses a
// plain configuration (Store refuses to load a certificate of the wrong
// role at all).
func TestStoreHandshakeMatrix(t *testing.T) {
	for _, kt := range keyTypes {
		t.Run(kt.String(), func(t *testing.T) { storeMatrix(t, kt) })
	}
}

func storeMatrix(t *testing.T, kt KeyType) {
	w := newWorld(t, kt, kt)
	other := newWorld(t, kt, kt) // another CA, same names
	now := time.Now()
	issue := func(o IssueOptions) tls.Certificate {
		o.KeyType = kt
		return mustPair(t, w.ca, o)
	}
	expiredMaster := issue(IssueOptions{Name: "master-1", Role: RoleMaster, NotAfter: now.Add(-24 * time.Hour)})
	futureMaster := issue(IssueOptions{Name: "master-1", Role: RoleMaster, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	expiredSlave := issue(IssueOptions{Name: "slave-a", Role: RoleSlave, NotAfter: now.Add(-24 * time.Hour)})
	futureSlave := issue(IssueOptions{Name: "slave-a", Role: RoleSlave, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	noEKUMaster := issue(IssueOptions{Name: "master-1", NoUsage: true})
	noEKUSlave := issue(IssueOptions{Name: "slave-a", NoUsage: true})
	slaveAsMaster := issue(IssueOptions{Name: "master-1", Role: RoleSlave})
	masterAsSlave := issue(IssueOptions{Name: "slave-a", Role: RoleMaster})
	revokedMaster := issue(IssueOptions{Name: "master-1", Role: RoleMaster})
	revokedSlave := issue(IssueOptions{Name: "slave-a", Role: RoleSlave, Hosts: []string{"127.0.0.1"}})

	// One CRL of w's CA listing the two revoked certificates.
	crl := filepath.Join(t.TempDir(), "ca.crl")
	for _, c := range []tls.Certificate{revokedMaster, revokedSlave} {
		if _, err := RevokeFile(crl, w.ca, c.Leaf, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The daemons' configurations, from stores; with the CRL when they
	// trust its CA (a CRL another CA signed is refused at load).
	crlOf := func(ca *CA) string {
		if ca == w.ca {
			return crl
		}
		return ""
	}
	slaveD := func(cert tls.Certificate, ca *CA, allow ...string) *tls.Config {
		return mustStore(t, cert, RoleSlave, crlOf(ca), ca).ServerConfig(allow)
	}
	masterD := func(cert tls.Certificate, ca *CA, sn string) *tls.Config {
		return mustStore(t, cert, RoleMaster, crlOf(ca), ca).ClientConfig(sn)
	}
	// A misbehaving peer's.
	slaveP := func(cert tls.Certificate) *tls.Config { return ServerConfig(cert, w.pool, nil) }
	masterP := func(cert tls.Certificate) *tls.Config { return ClientConfig(cert, w.pool, "slave-a") }
	goodSlave := slaveD(w.slave, w.ca)
	goodMaster := masterD(w.master, w.ca, "slave-a")
	const refusedBySlave = "remote error: tls: bad certificate"

	cases := []struct {
		name                   string
		server, client         *tls.Config
		serverWant, clientWant string // "" and "" for the good case
	}{
		{name: "good", server: goodSlave, client: goodMaster},
		{name: "good by IP", server: goodSlave, client: masterD(w.master, w.ca, "127.0.0.1")},
		{name: "good with a CA bundle", server: slaveD(w.slave, w.ca, "master-1"), client: mustStore(t, w.master, RoleMaster, crl, other.ca, w.ca).ClientConfig("slave-a")},

		{name: "wrong CA: slave trusts another", server: slaveD(w.slave, other.ca), client: masterP(w.master),
			serverWant: "x509: certificate signed by unknown authority", clientWant: "remote error: tls: unknown certificate authority"},
		{name: "wrong CA: master trusts another", server: slaveP(w.slave), client: masterD(w.master, other.ca, "slave-a"),
			clientWant: "x509: certificate signed by unknown authority", serverWant: refusedBySlave},
		{name: "wrong CA: master certificate from another CA", server: goodSlave, client: masterD(other.master, w.ca, "slave-a"),
			serverWant: "x509: certificate signed by unknown authority", clientWant: "remote error: tls: unknown certificate authority"},
		{name: "wrong CA: slave certificate from another CA", server: ServerConfig(other.slave, w.pool, nil), client: goodMaster,
			clientWant: "x509: certificate signed by unknown authority", serverWant: refusedBySlave},

		{name: "expired master", server: goodSlave, client: masterP(expiredMaster),
			serverWant: "x509: certificate has expired", clientWant: "remote error: tls: expired certificate"},
		{name: "expired slave", server: slaveP(expiredSlave), client: goodMaster,
			clientWant: "x509: certificate has expired", serverWant: refusedBySlave},
		{name: "not yet valid master", server: goodSlave, client: masterP(futureMaster),
			serverWant: "is not yet valid", clientWant: "remote error: tls: expired certificate"},
		{name: "not yet valid slave", server: slaveP(futureSlave), client: goodMaster,
			clientWant: "is not yet valid", serverWant: refusedBySlave},

		{name: "revoked master", server: goodSlave, client: masterP(revokedMaster),
			serverWant: `certificate "master-1" serial ` + Serial(revokedMaster.Leaf.SerialNumber) + " is revoked by " + crl,
			clientWant: refusedBySlave},
		{name: "revoked slave", server: slaveP(revokedSlave), client: goodMaster,
			clientWant: `certificate "slave-a" serial ` + Serial(revokedSlave.Leaf.SerialNumber) + " is revoked by " + crl,
			serverWant: refusedBySlave},

		{name: "wrong usage: slave certificate as master", server: goodSlave, client: masterP(slaveAsMaster),
			serverWant: "x509: certificate specifies an incompatible key usage", clientWant: refusedBySlave},
		{name: "wrong usage: master certificate as slave", server: slaveP(masterAsSlave), client: goodMaster,
			clientWant: "x509: certificate specifies an incompatible key usage", serverWant: refusedBySlave},
		{name: "no usage extension: master", server: goodSlave, client: masterP(noEKUMaster),
			serverWant: `certificate "master-1" is not a master certificate (no clientAuth usage)`, clientWant: refusedBySlave},
		{name: "no usage extension: slave", server: slaveP(noEKUSlave), client: goodMaster,
			clientWant: `certificate "slave-a" is not a slave certificate (no serverAuth usage)`, serverWant: refusedBySlave},

		{name: "wrong name: master not in --allow-master", server: slaveD(w.slave, w.ca, "master-2"), client: goodMaster,
			serverWant: `master "master-1" is not in --allow-master`, clientWant: refusedBySlave},
		{name: "wrong name: slave", server: goodSlave, client: masterD(w.master, w.ca, "slave-b"),
			clientWant: "x509: certificate is valid for slave-a, slave-a.example.com, not slave-b", serverWant: refusedBySlave},
		{name: "wrong name: slave IP", server: goodSlave, client: masterD(w.master, w.ca, "127.0.0.2"),
			clientWant: "x509: certificate is valid for 127.0.0.1, not 127.0.0.2", serverWant: refusedBySlave},

		{name: "no client certificate", server: goodSlave, client: masterP(tls.Certificate{}),
			serverWant: "tls: client didn't provide a certificate", clientWant: "remote error: tls: certificate required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, serr, cerr := handshake(t, tc.server, tc.client)
			if tc.serverWant == "" && tc.clientWant == "" {
				if serr != nil || cerr != nil {
					t.Fatalf("refused: server %v, client %v", serr, cerr)
				}
				return
			}
			t.Logf("server: %v; client: %v", serr, cerr)
			if serr == nil || !strings.Contains(serr.Error(), tc.serverWant) {
				t.Errorf("server err %v, want it to contain %q", serr, tc.serverWant)
			}
			if cerr == nil || !strings.Contains(cerr.Error(), tc.clientWant) {
				t.Errorf("client err %v, want it to contain %q", cerr, tc.clientWant)
			}
		})
	}
}
