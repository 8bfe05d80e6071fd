package router

// Verdict is what the router did with one packet.
type Verdict uint8

// Verdicts. The Drop verdicts are the reasons counted in Stats.
const (
	// ToLAN: written to the LAN (from a peer, allowed by policy).
	ToLAN Verdict = iota
	// ToPeer: queued for a peer (from the LAN, or client-to-client).
	ToPeer
	// DropMalformed: headers did not parse, or forbidden options.
	DropMalformed
	// DropLinkLocal: destination is link-scoped; never forwarded.
	DropLinkLocal
	// DropSpoof: source is not one of the sending peer's addresses.
	DropSpoof
	// DropClientToClient: destination is another peer and
	// client-to-client traffic is disabled.
	DropClientToClient
	// DropPolicy: the policy denied the flow.
	DropPolicy
	// DropNoRoute: from the LAN to an address no peer holds.
	DropNoRoute
	// DropQueue: the destination peer's queue was full.
	DropQueue

	numVerdicts
)

// lanError counts packets the LAN's Write did not take; it is a counter,
// not a verdict.
const (
	lanError    = int(numVerdicts)
	ecnMarked   = lanError + 1 // packets the queues marked CE instead of dropping
	queueDrops  = lanError + 2 // packets the queues accepted (counted ToPeer) and dropped later
	numCounters = queueDrops + 1
)

var verdictNames = [numVerdicts]string{
	ToLAN:              "to-lan",
	ToPeer:             "to-peer",
	DropMalformed:      "malformed",
	DropLinkLocal:      "link-local",
	DropSpoof:          "spoof",
	DropClientToClient: "client-to-client",
	DropPolicy:         "policy",
	DropNoRoute:        "no-route",
	DropQueue:          "queue",
}

// String returns the verdict's name as used in logs ("policy", "spoof", ...).
func (v Verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return "unknown"
}

// Stats counts packets by outcome since the Router was created.
type Stats struct {
	ToLAN  uint64 // delivered from peers to the LAN
	ToPeer uint64 // delivered to peers' queues

	Malformed      uint64
	LinkLocal      uint64
	Spoof          uint64
	ClientToClient uint64
	Policy         uint64
	NoRoute        uint64
	// Queue counts packets a peer's queue dropped: for room (from the
	// flow holding the most bytes) or because CoDel judged the queue
	// too long. Packets it accepted count in ToPeer first.
	Queue    uint64
	LANError uint64 // refused by the LAN's Write
	// Marked counts packets CoDel marked CE (ECN) instead of dropping:
	// delivered, not a drop.
	Marked uint64
}

// Dropped returns the total of all drop counters.
func (s Stats) Dropped() uint64 {
	return s.Malformed + s.LinkLocal + s.Spoof + s.ClientToClient + s.Policy + s.NoRoute + s.Queue + s.LANError
}
