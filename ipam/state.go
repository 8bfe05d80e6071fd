package ipam

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/twoway/twoway/internal/atomicfile"
)

// stateVersion is the format of the state file; a file of another version
// is refused rather than misread.
const stateVersion = 1

// stateFile is the JSON form of the state file:
//
//	{"version":1,"seq":7,"leases":[{"identity":"alice","ipv4":"198.18.100.2","released":7}]}
type stateFile struct {
	Version int          `json:"version"`
	Seq     uint64       `json:"seq"`
	Leases  []stateLease `json:"leases"`
}

type stateLease struct {
	Identity string     `json:"identity"`
	IPv4     netip.Addr `json:"ipv4,omitzero"`
	IPv6     netip.Addr `json:"ipv6,omitzero"`
	// Released orders offline identities for reclaiming: the lowest
	// goes first.
	Released uint64 `json:"released,omitempty"`
}

// loadState reads path. A missing file is an empty state.
func loadState(path string) (*stateFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &stateFile{Version: stateVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ipam: read state file: %w", err)
	}
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("ipam: state file %s: %w: %s (move it away to start with no leases)",
			path, ErrCorruptState, fmt.Sprintf(format, args...))
	}
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, corrupt("%v", err)
	}
	if dec.More() {
		return nil, corrupt("trailing data after the JSON object")
	}
	if st.Version != stateVersion {
		return nil, corrupt("version %d, want %d", st.Version, stateVersion)
	}
	idents := make(map[string]bool)
	addrs := make(map[netip.Addr]string)
	for i, l := range st.Leases {
		if l.Identity == "" {
			return nil, corrupt("lease %d has no identity", i)
		}
		if idents[l.Identity] {
			return nil, corrupt("identity %q appears twice", l.Identity)
		}
		idents[l.Identity] = true
		if l.IPv4.IsValid() && !l.IPv4.Is4() {
			return nil, corrupt("lease of %q: ipv4 %s is not an IPv4 address", l.Identity, l.IPv4)
		}
		if l.IPv6.IsValid() && (!l.IPv6.Is6() || l.IPv6.Is4In6() || l.IPv6.Zone() != "") {
			return nil, corrupt("lease of %q: ipv6 %s is not a plain IPv6 address", l.Identity, l.IPv6)
		}
		for _, a := range []netip.Addr{l.IPv4, l.IPv6} {
			if !a.IsValid() {
				continue
			}
			if other, dup := addrs[a]; dup {
				return nil, corrupt("%s leased to both %q and %q", a, other, l.Identity)
			}
			addrs[a] = l.Identity
		}
		if l.Released > st.Seq {
			return nil, corrupt("lease of %q released at %d, after seq %d", l.Identity, l.Released, st.Seq)
		}
	}
	return &st, nil
}

// fileStore is the single-gateway Store: the records live in memory and,
// when it has a path, in a JSON state file that survives restarts. The Pool
// is its only writer and decides from an exact view, so Commit never
// conflicts; holds are this process's sessions, so after a restart every
// identity is offline.
type fileStore struct {
	path   string // "" for memory only
	logger *slog.Logger

	mu     sync.Mutex // serialises changes and file writes; guards the fields below
	recs   map[string]*Record
	seq    uint64 // release order, persisted
	update func(Update)
}

func newFileStore(path string, logger *slog.Logger) *fileStore {
	return &fileStore{path: path, logger: logger, recs: make(map[string]*Record)}
}

// Open loads the state file, if any, and writes it back at once, so that a
// state directory that is not writable fails here rather than at the first
// connection.
func (s *fileStore) Open(update func(Update)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.update = update
	if s.path != "" {
		st, err := loadState(s.path)
		if err != nil {
			return err
		}
		s.seq = st.Seq
		for _, l := range st.Leases {
			s.recs[l.Identity] = &Record{Identity: l.Identity, IPv4: l.IPv4, IPv6: l.IPv6, Released: l.Released}
		}
		if err := s.save(); err != nil {
			return err
		}
	}
	u := Update{All: true, Records: make([]Record, 0, len(s.recs))}
	for _, r := range s.recs {
		u.Records = append(u.Records, *r)
	}
	update(u)
	return nil
}

// Commit applies ch and writes the state file when an address changed. A
// failed write is logged, not returned: the addresses in memory are valid,
// only their stickiness across a restart is at risk, and refusing VPN
// sessions over a full disk would be worse.
func (s *fileStore) Commit(ch Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var u Update
	changed := len(ch.Victims) > 0
	for _, v := range ch.Victims {
		if v.empty() {
			delete(s.recs, v.Identity)
			u.Records = append(u.Records, Record{Identity: v.Identity})
			continue
		}
		v.Held = false
		s.recs[v.Identity] = &v
		u.Records = append(u.Records, v)
	}
	if r := ch.Record; r.Identity != "" {
		old := s.recs[r.Identity]
		changed = changed || old == nil || old.addrs() != r.addrs()
		r.Held = true
		s.recs[r.Identity] = &r
		u.Records = append(u.Records, r)
	}
	s.update(u)
	if changed {
		if err := s.save(); err != nil {
			s.logger.Warn("lease state not saved; addresses may change after a restart", "err", err)
		}
	}
	return nil
}

// Release does not write the state file: the release order it records only
// ranks offline identities for reclaiming, and is saved with the next
// assignment change. That keeps a mass disconnect from queueing a file sync
// per session.
func (s *fileStore) Release(identity string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs[identity]
	if r == nil {
		return nil
	}
	s.seq++
	r.Held, r.Released = false, s.seq
	s.update(Update{Records: []Record{*r}})
	return nil
}

// save writes the records to the state file atomically (temp file, fsync,
// rename), mode 0600. Callers hold s.mu.
func (s *fileStore) save() error {
	if s.path == "" {
		return nil
	}
	// Identities online now are recorded as released after every offline
	// one: after a restart they are all offline, and the ones that were
	// using their addresses last should be reclaimed last.
	now := s.seq + 1
	st := stateFile{Version: stateVersion, Seq: now, Leases: make([]stateLease, 0, len(s.recs))}
	for _, r := range s.recs {
		l := stateLease{Identity: r.Identity, IPv4: r.IPv4, IPv6: r.IPv6, Released: r.Released}
		if r.Held {
			l.Released = now
		}
		st.Leases = append(st.Leases, l)
	}
	slices.SortFunc(st.Leases, func(a, b stateLease) int { return cmp.Compare(a.Identity, b.Identity) })
	// Marshalling plain strings, addresses and numbers cannot fail.
	data, _ := json.MarshalIndent(st, "", "  ")
	if err := atomicfile.Write(s.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("ipam: write state file: %w", err)
	}
	return nil
}
