package main

// CLI tests of `twoway pki token`, in the style of pki_ca_test.go. The
// laptop side (twoway enroll) does not exist yet, so tokens are redeemed
// through package authority, as the gateway will.

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki/pkitest"
)

var (
	tokenLineRE = regexp.MustCompile(`^tw1-[a-z2-7]{52}\n$`)
	tokenIDRE   = regexp.MustCompile(`Enrollment token ([0-9a-f]{12}) `)
)

// tokenCreate runs token create and returns the token and its ID, checking
// that standard output holds the token alone and standard error never.
func tokenCreate(t *testing.T, args ...string) (token, id, info string) {
	t.Helper()
	args = append([]string{"pki", "token", "create"}, args...)
	out, info, err := caRunAll(t, args...)
	if err != nil {
		t.Fatalf("twoway %s: %v", strings.Join(args, " "), err)
	}
	if !tokenLineRE.MatchString(out) {
		t.Fatalf("standard output is not one token line: %q", out)
	}
	token = strings.TrimSpace(out)
	if strings.Contains(info, token[4:]) {
		t.Errorf("the token is printed twice:\n%s", info)
	}
	m := tokenIDRE.FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("no token ID in:\n%s", info)
	}
	return token, m[1], info
}

func TestPKIToken(t *testing.T) {
	work, dir, _ := caPKI(t)
	clientCA := filepath.Join(dir, "client-ca")

	// No --password-file and no terminal: making a token signs nothing.
	alice, aliceID, info := tokenCreate(t, "--ca", clientCA, "--name", "alice", "--group", "eng", "--group", "ops", "--days", "30")
	caContains(t, info, `for "alice" (groups eng, ops; certificate for 30 days)`, `"Example Corp client CA"`, "single use", "(24h0m0s)",
		"twoway pki token revoke --ca "+clientCA+" "+aliceID,
		"twoway enroll --server GW --ca server-ca-bundle.crt --token TOKEN")
	bob, bobID, info := tokenCreate(t, "--ca", clientCA, "--name", "bob", "--ttl", "2h")
	caContains(t, info, "no groups", "enrolling side's default lifetime", "(2h0m0s)")
	carol, carolID, _ := tokenCreate(t, "--ca", clientCA, "--name", "carol", "--group", "eng")
	_, daveID, _ := tokenCreate(t, "--ca", clientCA, "--name", "dave", "--ttl", "720h")

	// The gateway's side: alice enrolls; carol's token runs out.
	ca, err := authority.OpenCA(clientCA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := ca.RedeemToken(alice, time.Now()); err != nil || rec.Name != "alice" || strings.Join(rec.Groups, ",") != "eng,ops" || rec.Days != 30 {
		t.Fatalf("redeem alice: %+v, %v", rec, err)
	}
	dbPath := filepath.Join(clientCA, authority.DBFile)
	db, err := authority.LoadDB(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range db.Tokens {
		if db.Tokens[i].ID == carolID {
			db.Tokens[i].ExpiresAt = time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
		}
	}
	if err := db.Save(dbPath); err != nil {
		t.Fatal(err)
	}

	out := caOK(t, "pki", "token", "revoke", "--ca", clientCA, strings.ToUpper(bobID))
	caContains(t, out, "Revoked enrollment token "+bobID+` for "bob"`)
	if _, err := ca.RedeemToken(bob, time.Now()); err == nil {
		t.Error("revoked token redeemed")
	}

	out = caOK(t, "pki", "token", "list", "--ca", clientCA)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "STATE") {
		t.Fatalf("list:\n%s", out)
	}
	want := map[string][]string{
		aliceID: {"alice", "eng,ops", " 30 ", " used 20"},
		bobID:   {"bob", " - ", " revoked 20"},
		carolID: {"carol", " eng ", " expired "},
		daveID:  {"dave", " unused "},
	}
	for _, l := range lines[1:] {
		id := strings.Fields(l)[0]
		caContains(t, l, want[id]...)
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("not listed: %v\n%s", want, out)
	}

	out = caOK(t, "pki", "token", "list", "--ca", clientCA, "--json")
	var entries []map[string]any
	if err := json.Unmarshal([]byte(out), &entries); err != nil || len(entries) != 4 {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	states := map[string]string{}
	for _, e := range entries {
		states[e["id"].(string)] = e["state"].(string)
		if _, ok := e["sha256"]; ok {
			t.Errorf("list --json shows the hash: %v", e)
		}
	}
	if states[aliceID] != "used" || states[bobID] != "revoked" || states[carolID] != "expired" || states[daveID] != "unused" {
		t.Errorf("states %v", states)
	}

	// Nothing written anywhere holds a token.
	for p, content := range pkitest.Snapshot(t, work) {
		for _, token := range []string{alice, bob, carol} {
			if strings.Contains(strings.ToLower(content), token[4:]) {
				t.Errorf("%s holds token %s", p, token)
			}
		}
	}

	// Prune forgets what ended, however recently with --older-than 0s,
	// and keeps dave's live token.
	out = caOK(t, "pki", "token", "prune", "--ca", clientCA, "--older-than", "1h")
	caContains(t, out, "Pruned 0 ")
	out = caOK(t, "pki", "token", "prune", "--ca", clientCA, "--older-than", "0s")
	caContains(t, out, "Pruned 3 ")
	out = caOK(t, "pki", "token", "list", "--ca", clientCA)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], daveID) {
		t.Errorf("after prune:\n%s", out)
	}
}

func TestPKITokenBadInput(t *testing.T) {
	work, dir, _ := caPKI(t)
	clientCA := filepath.Join(dir, "client-ca")
	used, usedID, _ := tokenCreate(t, "--ca", clientCA, "--name", "alice")
	ca, err := authority.OpenCA(clientCA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.RedeemToken(used, time.Now()); err != nil {
		t.Fatal(err)
	}

	before := pkitest.Snapshot(t, work)
	create := func(extra ...string) []string {
		return append([]string{"pki", "token", "create", "--ca", clientCA}, extra...)
	}
	caFail(t, []string{"--name:", "client ID", "bob/x"}, create("--name", "bob/x")...)
	caFail(t, []string{"--group:", `invalid group "bad group!"`}, create("--name", "bob", "--group", "eng", "--group", "bad group!")...)
	caFail(t, []string{"--ttl must be positive, not 0"}, create("--name", "bob", "--ttl", "0")...)
	caFail(t, []string{"--ttl must be positive"}, create("--name", "bob", "--ttl", "-1h")...)
	caFail(t, []string{"--ttl 721h0m0s", "720h0m0s"}, create("--name", "bob", "--ttl", "721h")...)
	caFail(t, []string{`"7d"`, "--ttl"}, create("--name", "bob", "--ttl", "7d")...)
	caFail(t, []string{"--days must be positive"}, create("--name", "bob", "--days", "-1")...)
	caFail(t, []string{"after its CA", "use --days"}, create("--name", "bob", "--days", "4000")...)
	caFail(t, []string{`required flag(s) "name" not set`}, create()...)
	caFail(t, []string{`required flag(s) "ca" not set`}, "pki", "token", "create", "--name", "bob")
	caFail(t, []string{"root CA"}, "pki", "token", "create", "--ca", filepath.Join(dir, "root"), "--name", "bob")
	caFail(t, []string{"does not exist"}, "pki", "token", "create", "--ca", filepath.Join(work, "nope"), "--name", "bob")

	caFail(t, []string{"want one token ID"}, "pki", "token", "revoke", "--ca", clientCA)
	caFail(t, []string{`no enrollment token with ID "0123456789ab"`}, "pki", "token", "revoke", "--ca", clientCA, "0123456789ab")
	caFail(t, []string{usedID, "was used on", "revoke the certificate"}, "pki", "token", "revoke", "--ca", clientCA, usedID)
	caFail(t, []string{"--older-than must not be negative"}, "pki", "token", "prune", "--ca", clientCA, "--older-than", "-1h")
	caFail(t, []string{`unknown command "craete"`}, "pki", "token", "craete")
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, work))
}
