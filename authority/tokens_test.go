package authority_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki/pkitest"
)

var tokenRE = regexp.MustCompile(`^tw1-[a-z2-7]{52}$`)

// createToken makes a token on ca and fails the test if it cannot.
func createToken(t *testing.T, ca *authority.CA, opts authority.TokenOptions) (string, authority.TokenRecord) {
	t.Helper()
	token, rec, err := ca.CreateToken(opts)
	if err != nil {
		t.Fatal(err)
	}
	return token, rec
}

// tokenHash is what the CA should store for token, computed here from the
// printed form rather than by the code under test.
func tokenHash(t *testing.T, token string) string {
	t.Helper()
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimPrefix(token, "tw1-")))
	if err != nil || len(raw) != 32 {
		t.Fatalf("token %q does not decode to 32 bytes: %d, %v", token, len(raw), err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

func stateOf(t *testing.T, ca *authority.CA, id string, now time.Time) authority.TokenState {
	t.Helper()
	l, err := ca.ListTokens()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l {
		if r.ID == id {
			return r.State(now)
		}
	}
	t.Fatalf("token %s not listed", id)
	return ""
}

func TestTokenCreateRedeem(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	before := time.Now().Truncate(time.Second)
	token, rec := createToken(t, ca, authority.TokenOptions{Name: "alice", Groups: []string{"eng", "ops", "eng"}, Days: 7})

	if !tokenRE.MatchString(token) {
		t.Errorf("token %q is not tw1- and 52 base32 characters", token)
	}
	sum := tokenHash(t, token)
	if rec.SHA256 != sum || rec.ID != sum[:12] {
		t.Errorf("record hash %s id %s, want %s and its first 12 digits", rec.SHA256, rec.ID, sum)
	}
	if rec.Name != "alice" || !slices.Equal(rec.Groups, []string{"eng", "ops"}) || rec.Days != 7 {
		t.Errorf("binding: %+v", rec)
	}
	if rec.CreatedAt.Before(before) || rec.CreatedAt.After(time.Now()) || rec.ExpiresAt.Sub(rec.CreatedAt) != authority.DefaultTokenTTL {
		t.Errorf("created %v expires %v, want now and 24h later", rec.CreatedAt, rec.ExpiresAt)
	}
	if rec.UsedAt != nil || rec.RevokedAt != nil || rec.State(time.Now()) != authority.TokenUnused {
		t.Errorf("new token: %+v", rec)
	}

	// A second token is different, and redeems independently.
	token2, rec2 := createToken(t, ca, authority.TokenOptions{Name: "bob"})
	if token2 == token || rec2.ID == rec.ID {
		t.Error("two tokens alike")
	}

	// Pasted with spaces and in capitals it is still the token.
	now := time.Now().Add(time.Hour)
	got, err := ca.RedeemToken("  "+strings.ToUpper(token)+"\n", now)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != rec.ID || got.Name != "alice" || !slices.Equal(got.Groups, []string{"eng", "ops"}) || got.Days != 7 ||
		got.UsedAt == nil || !got.UsedAt.Equal(now.UTC().Truncate(time.Second)) {
		t.Errorf("redeemed: %+v", got)
	}
	// Single use, and the refusal names the token by ID only.
	again, err := ca.RedeemToken(token, now.Add(time.Minute))
	if !errors.Is(err, authority.ErrTokenUsed) || !strings.Contains(err.Error(), rec.ID) || !strings.Contains(err.Error(), `"alice"`) ||
		strings.Contains(err.Error(), token[4:]) {
		t.Errorf("second redeem: %v", err)
	}
	if again.ID != rec.ID || again.Name != "alice" {
		t.Errorf("refusal's record: %+v", again)
	}
	if s := stateOf(t, ca, rec.ID, now.Add(48*time.Hour)); s != authority.TokenUsed {
		t.Errorf("state after use (and past expiry) %s, want used", s)
	}
	if s := stateOf(t, ca, rec2.ID, now); s != authority.TokenUnused {
		t.Errorf("other token %s, want unused", s)
	}
	if _, err := openCA(t, res.ClientCA.Dir).RedeemToken(token2, now); err != nil {
		t.Errorf("second token: %v", err)
	}

	// The records returned are copies: changing one changes nothing kept.
	got.Groups[0] = "admin"
	l, _ := ca.ListTokens()
	if l[0].Groups[0] != "eng" {
		t.Errorf("caller changed the stored groups: %v", l[0].Groups)
	}
}

func TestTokenExpiry(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	token, rec := createToken(t, ca, authority.TokenOptions{Name: "alice", TTL: time.Hour})
	if rec.ExpiresAt.Sub(rec.CreatedAt) != time.Hour {
		t.Fatalf("TTL 1h gave %v", rec.ExpiresAt.Sub(rec.CreatedAt))
	}
	for _, at := range []time.Time{rec.ExpiresAt, rec.ExpiresAt.Add(time.Hour)} {
		r, err := ca.RedeemToken(token, at)
		if !errors.Is(err, authority.ErrTokenExpired) || r.ID != rec.ID || !strings.Contains(err.Error(), rec.ExpiresAt.Format(time.RFC3339)) {
			t.Errorf("redeem at %v (expiry %v): %v", at, rec.ExpiresAt, err)
		}
	}
	// The refusals burnt nothing: a second before expiry it still works.
	if s := stateOf(t, ca, rec.ID, rec.ExpiresAt); s != authority.TokenExpired {
		t.Errorf("state at expiry %s", s)
	}
	if _, err := ca.RedeemToken(token, rec.ExpiresAt.Add(-time.Second)); err != nil {
		t.Errorf("redeem just before expiry: %v", err)
	}
}

func TestTokenUnknown(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	token, _ := createToken(t, ca, authority.TokenOptions{Name: "alice"})
	other := openCA(t, res.ServerCA.Dir)
	forged := "tw1-" + strings.Repeat("a", 52)
	cases := map[string]string{
		"empty":            "",
		"prefix only":      "tw1-",
		"short":            token[:len(token)-1],
		"long":             token + "a",
		"other prefix":     "tw2-" + token[4:],
		"not base32":       token[:10] + "1" + token[11:],
		"never made":       forged,
		"one letter wrong": token[:10] + flip(token[10]) + token[11:],
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ca.RedeemToken(s, time.Now())
			if !errors.Is(err, authority.ErrTokenUnknown) {
				t.Fatalf("%q: %v", s, err)
			}
			if len(s) > 8 && strings.Contains(err.Error(), s[4:]) {
				t.Errorf("error repeats the token: %v", err)
			}
		})
	}
	// A token belongs to the CA that made it.
	if _, err := other.RedeemToken(token, time.Now()); !errors.Is(err, authority.ErrTokenUnknown) {
		t.Errorf("redeemed at another CA: %v", err)
	}
	// None of it burnt the real token.
	if _, err := ca.RedeemToken(token, time.Now()); err != nil {
		t.Errorf("real token after the misses: %v", err)
	}
}

// flip returns a base32 letter other than c.
func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func TestTokenOptionsRefused(t *testing.T) {
	dir, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	before := pkitest.Snapshot(t, dir)
	cases := []struct {
		name string
		ca   *authority.CA
		opts authority.TokenOptions
		is   error
		msg  string
	}{
		{"bad name", ca, authority.TokenOptions{Name: "../bob"}, authority.ErrInvalidName, "client ID"},
		{"no name", ca, authority.TokenOptions{}, authority.ErrInvalidName, "client ID"},
		{"bad group", ca, authority.TokenOptions{Name: "bob", Groups: []string{"eng", "bad group"}}, authority.ErrInvalidGroup, `"bad group"`},
		{"negative TTL", ca, authority.TokenOptions{Name: "bob", TTL: -time.Hour}, nil, "--ttl must be positive"},
		{"TTL too long", ca, authority.TokenOptions{Name: "bob", TTL: authority.MaxTokenTTL + time.Second}, nil, "--ttl"},
		{"negative days", ca, authority.TokenOptions{Name: "bob", Days: -1}, nil, "--days"},
		{"outlives CA", ca, authority.TokenOptions{Name: "bob", Days: 3000}, authority.ErrOutlivesCA, "use --days"},
		{"from the root", openCA(t, res.Root.Dir), authority.TokenOptions{Name: "bob"}, authority.ErrRootIssue, "root CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token, _, err := tc.ca.CreateToken(tc.opts)
			if err == nil || token != "" || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want %v containing %q", err, tc.is, tc.msg)
			}
		})
	}
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, dir))
	// The longest TTL is allowed.
	if _, rec := createToken(t, ca, authority.TokenOptions{Name: "bob", TTL: authority.MaxTokenTTL}); rec.ExpiresAt.Sub(rec.CreatedAt) != authority.MaxTokenTTL {
		t.Errorf("max TTL gave %v", rec.ExpiresAt.Sub(rec.CreatedAt))
	}
}

// TestTokenNotStored checks that what makes a token redeemable is nowhere
// in the CA directory, in any encoding, while its hash is.
func TestTokenNotStored(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	var tokens []string
	for i := range 5 {
		token, _ := createToken(t, ca, authority.TokenOptions{Name: fmt.Sprintf("user%d", i), Groups: []string{"eng"}})
		tokens = append(tokens, token)
	}
	if _, err := ca.RedeemToken(tokens[0], time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.RevokeToken(tokenHash(t, tokens[1])[:12]); err != nil {
		t.Fatal(err)
	}
	files := pkitest.Snapshot(t, res.ClientCA.Dir)
	db := files[filepath.Join(res.ClientCA.Dir, authority.DBFile)]
	for _, token := range tokens {
		body := token[4:]
		raw, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(body))
		for p, content := range files {
			for _, secret := range []string{body, strings.ToUpper(body), hex.EncodeToString(raw), string(raw)} {
				if strings.Contains(content, secret) {
					t.Errorf("%s holds token %s", p, token)
				}
			}
		}
		if !strings.Contains(db, tokenHash(t, token)) {
			t.Errorf("db.json lacks the hash of %s", token)
		}
	}
	checkMode(t, filepath.Join(res.ClientCA.Dir, authority.DBFile), 0o600)
	checkMode(t, filepath.Join(res.ClientCA.Dir, authority.DBLockFile), 0o600)
}

func TestTokenRevoke(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	token, rec := createToken(t, ca, authority.TokenOptions{Name: "alice"})
	used, usedRec := createToken(t, ca, authority.TokenOptions{Name: "bob"})
	_, expRec := createToken(t, ca, authority.TokenOptions{Name: "carol", TTL: time.Second})
	if _, err := ca.RedeemToken(used, time.Now()); err != nil {
		t.Fatal(err)
	}

	// IDs are read as list prints them, whatever the case.
	r, err := ca.RevokeToken(" " + strings.ToUpper(rec.ID) + " ")
	if err != nil || r.ID != rec.ID || r.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %v", r, err)
	}
	if _, err := ca.RedeemToken(token, time.Now()); !errors.Is(err, authority.ErrTokenRevoked) || !strings.Contains(err.Error(), rec.ID) {
		t.Errorf("redeem after revoke: %v", err)
	}
	if _, err := ca.RevokeToken(rec.ID); !errors.Is(err, authority.ErrTokenRevoked) {
		t.Errorf("revoke twice: %v", err)
	}
	if _, err := ca.RevokeToken(usedRec.ID); !errors.Is(err, authority.ErrTokenUsed) || !strings.Contains(err.Error(), "revoke the certificate") {
		t.Errorf("revoke a used token: %v", err)
	}
	if _, err := ca.RevokeToken("0123456789ab"); !errors.Is(err, authority.ErrTokenUnknown) {
		t.Errorf("revoke an unknown ID: %v", err)
	}
	// The secret is not an ID.
	if _, err := ca.RevokeToken(used); !errors.Is(err, authority.ErrTokenUnknown) {
		t.Errorf("revoke by token: %v", err)
	}

	later := expRec.ExpiresAt.Add(time.Second)
	want := map[string]authority.TokenState{rec.ID: authority.TokenRevoked, usedRec.ID: authority.TokenUsed, expRec.ID: authority.TokenExpired}
	for id, s := range want {
		if got := stateOf(t, ca, id, later); got != s {
			t.Errorf("%s: state %s, want %s", id, got, s)
		}
	}
}

func TestTokenPrune(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	t0 := time.Now()
	_, expiring := createToken(t, ca, authority.TokenOptions{Name: "a", TTL: time.Hour})
	used, usedRec := createToken(t, ca, authority.TokenOptions{Name: "b"})
	_, revoked := createToken(t, ca, authority.TokenOptions{Name: "c"})
	keep, keepRec := createToken(t, ca, authority.TokenOptions{Name: "d", TTL: authority.MaxTokenTTL})
	if _, err := ca.RedeemToken(used, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.RevokeToken(revoked.ID); err != nil {
		t.Fatal(err)
	}

	// Ended an hour or two ago: kept for a day.
	if p, err := ca.PruneTokens(24*time.Hour, t0.Add(2*time.Hour)); err != nil || len(p) != 0 {
		t.Errorf("early prune removed %d: %v", len(p), err)
	}
	p, err := ca.PruneTokens(24*time.Hour, t0.Add(26*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range p {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	want := []string{expiring.ID, usedRec.ID, revoked.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("pruned %v, want %v", ids, want)
	}
	// An unused token survives any prune while it can be redeemed.
	if p, err := ca.PruneTokens(0, t0.Add(29*24*time.Hour)); err != nil || len(p) != 0 {
		t.Errorf("prune of a live token: %d, %v", len(p), err)
	}
	l, _ := ca.ListTokens()
	if len(l) != 1 || l[0].ID != keepRec.ID {
		t.Errorf("left: %+v", l)
	}
	if _, err := ca.RedeemToken(keep, t0.Add(27*time.Hour)); err != nil {
		t.Errorf("kept token: %v", err)
	}
	// A pruned token is unknown.
	if _, err := ca.RedeemToken(used, t0); !errors.Is(err, authority.ErrTokenUnknown) {
		t.Errorf("pruned token: %v", err)
	}
	if _, err := ca.PruneTokens(-time.Hour, t0); err == nil || !strings.Contains(err.Error(), "--older-than") {
		t.Errorf("negative age: %v", err)
	}
}

// TestTokenDBVersion checks that only a database with tokens is marked as
// the newer format, and that a newer one still is refused.
func TestTokenDBVersion(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	path := filepath.Join(res.ClientCA.Dir, authority.DBFile)
	version := func() int {
		t.Helper()
		var v struct{ Version int }
		data, err := os.ReadFile(path)
		if err != nil || json.Unmarshal(data, &v) != nil {
			t.Fatal(err)
		}
		return v.Version
	}
	if v := version(); v != 1 {
		t.Errorf("new CA database version %d, want 1", v)
	}
	_, rec := createToken(t, ca, authority.TokenOptions{Name: "alice", TTL: time.Second})
	if v := version(); v != 2 {
		t.Errorf("database with a token: version %d, want 2", v)
	}
	if _, err := ca.PruneTokens(0, rec.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	if v := version(); v != 1 {
		t.Errorf("database without tokens again: version %d, want 1", v)
	}

	for _, bad := range []struct{ data, msg string }{
		{`{"version": 3, "crl_number": 0, "certificates": []}`, "unsupported CA database version 3"},
		{`{"version": 2, "crl_number": 0, "certificates": [], "tokens": [{"id": "x", "sha256": "00"}]}`, "token 1"},
	} {
		if err := os.WriteFile(path, []byte(bad.data), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := authority.OpenCA(res.ClientCA.Dir, nil); err == nil || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("%s: %v", bad.data, err)
		}
	}
}

// raceRedeem has every one of redeemers try token at once and returns how
// many succeeded and the refusals.
func raceRedeem(token string, redeemers []*authority.CA) (int, []error) {
	start := make(chan struct{})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		won      int
		refusals []error
	)
	for _, ca := range redeemers {
		wg.Go(func() {
			<-start
			_, err := ca.RedeemToken(token, time.Now())
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else {
				refusals = append(refusals, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return won, refusals
}

// TestTokenSingleUseConcurrent races 50 goroutines over one token, on one
// shared handle and on handles of their own, several times: exactly one
// wins each round, the rest are told it was used.
func TestTokenSingleUseConcurrent(t *testing.T) {
	_, res := initPKI(t, "")
	shared := openCA(t, res.ClientCA.Dir)
	for round := range 5 {
		token, _ := createToken(t, shared, authority.TokenOptions{Name: fmt.Sprintf("user%d", round)})
		var redeemers []*authority.CA
		for i := range 50 {
			if i%2 == 0 {
				redeemers = append(redeemers, shared)
			} else {
				redeemers = append(redeemers, openCA(t, res.ClientCA.Dir))
			}
		}
		won, refusals := raceRedeem(token, redeemers)
		if won != 1 {
			t.Errorf("round %d: %d of 50 redeemed the token", round, won)
		}
		for _, err := range refusals {
			if !errors.Is(err, authority.ErrTokenUsed) {
				t.Errorf("round %d: refusal %v, want used", round, err)
			}
		}
	}
	l, _ := shared.ListTokens()
	for _, r := range l {
		if r.State(time.Now()) != authority.TokenUsed {
			t.Errorf("token %s: %s", r.ID, r.State(time.Now()))
		}
	}
}

// TestTokenTwoHandles redeems through a handle opened before the token was
// made, then through another: each sees the other's change.
func TestTokenTwoHandles(t *testing.T) {
	_, res := initPKI(t, "")
	a, b := openCA(t, res.ClientCA.Dir), openCA(t, res.ClientCA.Dir)
	token, rec := createToken(t, a, authority.TokenOptions{Name: "alice"})
	if _, err := b.RedeemToken(token, time.Now()); err != nil {
		t.Fatalf("handle opened before the token was made: %v", err)
	}
	if _, err := a.RedeemToken(token, time.Now()); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("the other handle: %v", err)
	}
	// b's change did not undo a's record, nor a's later one b's.
	if _, err := a.RevokeToken(rec.ID); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("revoke through a: %v", err)
	}
}

// redeemHelperEnv makes the test binary a redeemer for
// TestTokenSingleUseProcesses: "DIR TOKEN N" races N goroutines once
// stdin says go, and prints how many won and how many were told "used".
const redeemHelperEnv = "TWOWAY_TEST_REDEEM"

func redeemHelper(spec string) int {
	var dir, token string
	var n int
	if _, err := fmt.Sscan(spec, &dir, &token, &n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var redeemers []*authority.CA
	for range n {
		ca, err := authority.OpenCA(dir, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		redeemers = append(redeemers, ca)
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	won, refusals := raceRedeem(token, redeemers)
	used := 0
	for _, err := range refusals {
		if errors.Is(err, authority.ErrTokenUsed) {
			used++
		} else {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	fmt.Printf("%d %d\n", won, used)
	return 0
}

// TestTokenSingleUseProcesses races redeemers in four processes over one
// token: the database lock holds across processes, not only goroutines.
func TestTokenSingleUseProcesses(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	const procs, each = 4, 10
	for round := range 3 {
		token, _ := createToken(t, ca, authority.TokenOptions{Name: fmt.Sprintf("user%d", round)})
		var (
			cmds  []*exec.Cmd
			outs  []*bytes.Buffer
			gates []*os.File
		)
		for range procs {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", redeemHelperEnv, res.ClientCA.Dir, token, each))
			gate, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			cmd.Stdin, cmd.Stdout, cmd.Stderr = gate, &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			gate.Close()
			cmds, outs, gates = append(cmds, cmd), append(outs, &out), append(gates, w)
		}
		for _, w := range gates {
			w.WriteString("go\n")
			w.Close()
		}
		won, used := 0, 0
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("redeemer %d: %v: %s", i, err, outs[i])
			}
			var w, u int
			if _, err := fmt.Sscan(outs[i].String(), &w, &u); err != nil {
				t.Fatalf("redeemer %d said %q", i, outs[i])
			}
			won, used = won+w, used+u
		}
		if won != 1 || used != procs*each-1 {
			t.Errorf("round %d: %d won and %d were told used, of %d in %d processes", round, won, used, procs*each, procs)
		}
	}
}
