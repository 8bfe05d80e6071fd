package ipam

import "net/netip"

// Store keeps a Pool's assignments beyond the process and, for a fleet of
// gateways, shares them with the other gateways. The default, for a single
// gateway, keeps them in memory and in Config.StateFile (see New); package
// fleet has one on etcd (see NewWithStore).
//
// The split: a Pool keeps its own view of the records and makes every
// decision (static, sticky, lowest never held, reclaim) from it, so the
// choice logic is the same whatever the store. A store applies each decision
// all or nothing, refuses one made from a view that has gone stale, and
// tells the Pool about every change, its own ones included. A store with
// other writers (other gateways) thus never needs a lock across them: it
// compares the versions a decision was made from, and the Pool decides
// again from a fresher view when they differ.
//
// Holds are the store's business too: an identity is held while some
// session of it, on any gateway, is open, and a held identity's addresses
// are neither changed nor reclaimed. A Pool tells its store when it takes
// its first hold on an identity (Commit) and when it drops its last
// (Release).
//
// Concurrency contract: a Store serves one Pool. The Pool calls Commit and
// Release one at a time, except that Commits of changes that keep
// addresses (Change.KeepsAddresses) may run concurrently with each other
// and with one other Commit or Release; never while it holds the lock of
// its view. The
// store calls the update function passed to Open from one goroutine at a
// time, in the order it applied the changes, possibly during a Commit or a
// Release.
type Store interface {
	// Open delivers every stored record to update (Update.All) before it
	// returns, and from then on every change. It is called once, by
	// NewWithStore.
	Open(update func(Update)) error

	// Commit applies ch atomically and, when ch.Record names an identity,
	// adds this gateway's hold on it. It fails with an error wrapping
	// ErrConflict, and changes nothing, when a record ch was decided from
	// has another Version in the store by now or an address in ch.Free is
	// taken; before it returns, update has delivered the changes that
	// conflicted, so the Pool may simply decide again. When Commit returns
	// nil, update has delivered ch. A ch that only holds Record as the
	// Pool's view has it (same addresses and Version, no Victims, Free or
	// Drop) changes no address in that view: a store that grants it
	// without reaching its backend (package fleet, while etcd is
	// unreachable) need deliver nothing.
	Commit(ch Change) error

	// Release drops this gateway's hold on identity, whose last session
	// on this gateway ended. The identity is offline once no gateway
	// holds it; its addresses stay its own until reclaimed. When Release
	// returns, update has delivered the change.
	Release(identity string) error
}

// Record is one identity's assignment as a store keeps it.
type Record struct {
	Identity   string
	IPv4, IPv6 netip.Addr // invalid when none

	// Held is whether a gateway (this one included) holds the identity.
	Held bool

	// Released ranks offline identities for reclaiming, lowest first:
	// an identity released later has a higher one.
	Released uint64

	// Version is the store's version of the record, which Commit
	// compares; 0 when the record is not stored. Pools treat it as
	// opaque.
	Version uint64
}

// addrs returns r's addresses by famIndex.
func (r *Record) addrs() [2]netip.Addr { return [2]netip.Addr{r.IPv4, r.IPv6} }

// setAddrs sets r's addresses from a famIndex-ordered pair.
func (r *Record) setAddrs(a [2]netip.Addr) { r.IPv4, r.IPv6 = a[0], a[1] }

// empty reports whether r has no address.
func (r *Record) empty() bool { return !r.IPv4.IsValid() && !r.IPv6.IsValid() }

// Update is a change a store reports to its Pool.
type Update struct {
	// Records are the new records of the identities that changed. A
	// record without addresses that is not held means the identity is
	// gone from the store.
	Records []Record
	// All means Records is everything the store holds: identities not in
	// it are gone.
	All bool
}

// Change is one decision of a Pool, for Store.Commit.
type Change struct {
	// Record is the acquiring identity's new record, with the Version the
	// Pool decided from (0: none stored); the store adds this gateway's
	// hold on it. It is the zero Record in a change that only forgets
	// addresses (Victims).
	Record Record

	// Victims are the new records of offline identities that lose
	// addresses, to Record or because they are no longer assignable,
	// each with the Version the Pool decided from. A victim left without
	// addresses is deleted.
	Victims []Record

	// Free lists the addresses of Record that nobody had in the Pool's
	// view: the store must find them untaken.
	Free []netip.Addr

	// Drop lists the addresses nobody has after the change: Record's
	// former ones, and those Victims lose that Record does not take.
	Drop []netip.Addr
}

// KeepsAddresses reports whether ch only takes a hold on Record with the
// addresses its stored record already has (a user coming back, or
// failing over from another gateway): no address changes hands, so it
// cannot collide with another decision of the same Pool.
func (ch Change) KeepsAddresses() bool {
	return ch.Record.Identity != "" && ch.Record.Version != 0 &&
		len(ch.Free) == 0 && len(ch.Victims) == 0 && len(ch.Drop) == 0
}
