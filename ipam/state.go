package ipam

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"

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

// snapshot is the state file content at one generation.
type snapshot struct {
	gen  uint64
	data []byte
}

// snapshot encodes the leases. Callers hold p.mu.
func (p *Pool) snapshot() *snapshot {
	p.gen++
	// Identities online now are recorded as released after every offline
	// one: after a restart they are all offline, and the ones that were
	// using their addresses last should be reclaimed last.
	now := p.seq + 1
	st := stateFile{Version: stateVersion, Seq: now, Leases: make([]stateLease, 0, len(p.byIdent))}
	for _, e := range p.byIdent {
		l := stateLease{Identity: e.identity, IPv4: e.addrs[0], IPv6: e.addrs[1], Released: e.released}
		if len(e.holders) > 0 {
			l.Released = now
		}
		st.Leases = append(st.Leases, l)
	}
	slices.SortFunc(st.Leases, func(a, b stateLease) int { return cmp.Compare(a.Identity, b.Identity) })
	// Marshalling plain strings, addresses and numbers cannot fail.
	data, _ := json.MarshalIndent(st, "", "  ")
	return &snapshot{gen: p.gen, data: append(data, '\n')}
}

// save writes snap to the state file atomically (temp file, fsync, rename),
// mode 0600, unless a newer snapshot is already on disk: writes happen
// outside p.mu and may finish out of order.
func (p *Pool) save(snap *snapshot) error {
	if p.state == "" {
		return nil
	}
	p.saveMu.Lock()
	defer p.saveMu.Unlock()
	if snap.gen <= p.saved {
		return nil
	}
	if err := writeAtomic(p.state, snap.data); err != nil {
		return fmt.Errorf("ipam: write state file: %w", err)
	}
	p.saved = snap.gen
	return nil
}

// write saves and logs a failure instead of failing the caller: the
// addresses in memory are valid, only their stickiness across a restart is
// at risk, and refusing VPN sessions over a full disk would be worse.
func (p *Pool) write(snap *snapshot) {
	if err := p.save(snap); err != nil {
		p.logger.Warn("lease state not saved; addresses may change after a restart", "err", err)
	}
}

func writeAtomic(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600)
}
