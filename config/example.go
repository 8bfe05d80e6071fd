package config

// ExampleServer is a complete, commented server.toml. It loads as is when
// the files it names exist next to it (the tests check that), so
// `twoway config example` style output can be used as a starting point.
func ExampleServer() string { return exampleServer }

// ExampleClient is a complete, commented client.toml; see ExampleServer.
func ExampleClient() string { return exampleClient }

const exampleServer = `# twoway gateway configuration (server.toml).
# Relative paths are relative to the directory of this file.

# Address of the TLS listener. Default ":8443"; use ":443" when the gateway
# owns the host.
listen = ":8443"

# Started as root (not by the systemd unit), the gateway goes on as this
# account once it listens. Default: "twoway" if that account exists, else
# root. "root" keeps root; VPN mode always does (it changes routes, NAT and
# DNS until it stops). Reloads then read the files as this user.
# user = "twoway"

[tls]
# The gateway certificate followed by its issuing chain, and its key.
cert = "gateway.crt"
key = "gateway.key"                    # must be mode 0600
# key_password_file = "gateway.pass"   # first line: password of an encrypted key
# Clients must present a certificate chaining to this bundle
# (client-ca/bundle.crt from 'twoway pki init').
client_ca = "pki/client-ca/bundle.crt"
# Revocation lists for the client CA, PEM or DER; reloaded on SIGHUP.
crls = ["pki/client-ca/crl.pem"]
# A CRL past its next update: "warn" keeps using it (and logs, status and
# metrics say so), "reject" refuses every client it covers until a fresh
# one is loaded.
# crl_stale = "warn"
# Session tickets let a client that reconnects skip the certificate
# exchange; its certificate is still checked against the CRLs above.
# session_tickets = true
# allow_insecure_key_permissions = false

[limits]
handshake_timeout = "10s"       # TLS handshake and hello
max_sessions = 10000            # concurrent client sessions
max_handshakes = 256            # TLS handshakes in progress; idle connections are evicted first
max_sessions_per_identity = 4   # a new session beyond this replaces the identity's oldest (0 = no limit)
receive_budget_mib = 64         # data one session may have in flight or unread at the gateway
receive_budget_total_mib = 1024 # ... and all sessions together
max_streams_per_session = 256   # concurrent forwarded connections per session
handshake_rate = 5              # failed handshakes per second per source before it is slowed (0 = no limit)
handshake_burst = 20            # ... allowed at once before the rate applies
keepalive_interval = "10s"      # a silent session pings after this long
dead_peer_timeout = "25s"       # ...and is closed when nothing arrived for this long

[policy]
# Who may connect at all. Names match the certificate's CN or any SAN;
# groups match its OU values. "*" admits every verified identity.
[policy.admit]
identities = ["alice"]
groups = ["eng", "ops"]

# Rules are checked in order; the first one that applies to the identity and
# matches the destination decides. No match means deny.
#   targets:   "any", "198.18.0.0/15", "198.19.1.10:22", "db.corp.example:5432",
#              "*.corp.example:80,443,8000-8999", "[2001:db8::]/32:443"
#   protocols: tcp, udp, icmp (default: all)
#   binds:     addresses the gateway may listen on for -R forwards
#   action:    allow (default) or deny

[[policy.rule]]
name = "no-management-net"
groups = ["*"]
action = "deny"
targets = ["198.19.255.0/24"]

[[policy.rule]]
name = "eng-web"
groups = ["eng"]
targets = [
  "*.corp.example:80,443,8000-8999",
  "198.18.0.0/16:443",
  "[2001:db8::]/32:443",
]
protocols = ["tcp"]

[[policy.rule]]
name = "ops-everything"
groups = ["ops"]
targets = ["any"]

[[policy.rule]]
name = "alice-ssh"
identities = ["alice"]
targets = ["198.19.1.10:22", "db.corp.example:5432"]
binds = ["127.0.0.1:8080", "0.0.0.0:9000-9100"]

# VPN mode: clients that enable it get addresses from these pools and a TUN
# device; their packets are routed onto the LAN under the same policy.
[vpn]
enable = false                     # true turns VPN mode on (needs root)
ipv4 = "198.18.100.0/24"           # client pools; at least one
ipv6 = "2001:db8:100::/64"
# gateway = ["198.18.100.1"]       # the gateway's own tunnel address (default: first host)
routes = ["198.18.0.0/16", "2001:db8::/32"]  # pushed to clients; ["0.0.0.0/0", "::/0"] = full tunnel
dns = ["198.18.0.53"]              # pushed DNS servers ...
search_domains = ["corp.example"]  # ... and search domains
mtu = 1380                         # tunnel MTU (default 1380)
client_to_client = false           # may clients reach each other (VPN packets and forwards)?
lan_to_clients = false             # may LAN hosts open connections to clients?
forwarding = "nat"                 # "nat": masquerade to the gateway's LAN address; "routed": the LAN routes the pools here
# lan_interface = "eth0"           # NAT only out of this interface (default: any but the TUN)
# lan_announce = "none"            # routed fleet: "proxy-arp" answers ARP/NDP on lan_interface for the clients this gateway holds
# tun = "twoway0"                  # TUN device name
# offload = true                   # kernel segmentation offloads: superpackets pass through whole (Linux)
state_dir = "/var/lib/twoway"      # sticky leases (leases.json) and crash-cleanup records
udp = true                         # offer the UDP data path (packets as datagrams; TLS stays the control plane)
# udp_port = 8443                  # its port, on every address (default: the listen port)
# manage_path_queue = true         # over UDP, keep the queue on the path to each client short (CoDel on measured delay)

[vpn.static]                       # fixed addresses per identity
alice = ["198.18.100.10", "2001:db8:100::10"]

[[vpn.group]]                      # a range of the pool only this group's members get
group = "ops"
prefixes = ["198.18.100.128/26"]

# Enrollment: laptops trade a one-time token ('twoway pki token create')
# for a client certificate ('twoway enroll'), signed here by this CA, whose
# certificate must be in tls.client_ca. Off unless ca is set.
# [enroll]
# ca = "pki/client-ca"             # a CA directory; a dedicated sub-CA is better
# password_file = "client-ca.pw"   # if its key is encrypted; mode 0600
# The same CA renews its own client certificates, over a session or EST
# (simplereenroll), for as long as each one lived; this caps that.
# renew_max_days = 30              # default 0: no cap

# A fleet of gateways sharing client addresses through an existing etcd v3
# cluster: an identity keeps its address whichever gateway it lands on.
# Off without endpoints; vpn.state_file is not used then.
# [fleet]
# endpoints = ["https://etcd1.corp.example:2379", "https://etcd2.corp.example:2379"]
# cert_file = "etcd/gw1.crt"       # this gateway's client certificate for etcd (etcd's PKI)
# key_file = "etcd/gw1.key"        # mode 0600
# ca_file = "etcd/ca.crt"          # the CA of etcd's server certificates; none: plain connection
# name = "gw1"                     # unique in the fleet
# prefix = "/twoway/"
# lease_ttl = "10s"                # a dead gateway's users count as offline after this
# store_unreachable = "refuse"    # while etcd is away, new sessions get no address; "serve-cached": the one the gateway knows they had

[control]
# Local socket for 'twoway status' (and 'twoway kick' on the gateway).
# Default: /run/twoway/server.sock when run as root; "off" disables it.
# socket = "/run/twoway/server.sock"

[metrics]
# Prometheus /metrics endpoint; off unless set. Keep it on loopback or a
# management network: it names certificate subjects.
# listen = "127.0.0.1:9109"

[log]
level = "info"    # debug, info, warn, error
format = "text"   # text or json
`

const exampleClient = `# twoway client configuration (client.toml).
# Relative paths are relative to the directory of this file.

# Gateways to try, in order.
servers = ["gw.corp.example:8443", "198.18.0.1:8443"]
# Name the gateway certificate must carry (default: the host dialed).
server_name = "gw.corp.example"
# Started as root, the client goes on as this account once its listeners
# are open (default "twoway" if it exists; "root" keeps root; VPN mode
# always keeps root).
# user = "twoway"

[tls]
cert = "alice.crt"                   # client certificate and its issuing chain
key = "alice.key"                    # must be mode 0600
# key_password_file = "alice.pass"   # first line: password of an encrypted key
# The gateway must present a certificate chaining to this bundle
# (server-ca/bundle.crt from 'twoway pki init').
server_ca = "pki/server-ca/bundle.crt"
# Optional SPKI pins of the gateway key ('twoway pki inspect' prints them).
# pins = ["base64-sha256-of-the-public-key="]
# Renew the certificate over the live session at two thirds of its
# lifetime when the gateway offers it ([enroll] ca there), writing a new
# key and the certificate over the files above (default true).
# renew = true

# Port forwards, as ssh's -L, -R and -D. "local" is always the client-side
# address and "remote" the gateway-side one.

[[forward]]   # -L 127.0.0.1:5432:db.corp.example:5432
type = "local"
local = "127.0.0.1:5432"
remote = "db.corp.example:5432"

[[forward]]   # -R 127.0.0.1:8080:127.0.0.1:3000
type = "remote"
remote = "127.0.0.1:8080"
local = "127.0.0.1:3000"

[[forward]]   # -D 127.0.0.1:1080 (SOCKS5)
type = "dynamic"
local = "127.0.0.1:1080"

[reconnect]
min_backoff = "1s"
max_backoff = "1m"
# order = "in-order"            # "random": each client its own order, to spread over a fleet
# keepalive = "10s"             # ping a gateway silent for this long
# dead_peer = "25s"             # then give it up and try the next one

# VPN mode: a TUN device with the address, routes, DNS and MTU the gateway
# pushes; restored when the client exits, or on the next start after a crash.
[vpn]
enable = false                  # true asks the gateway for VPN mode (needs root)
# tun = "twoway0"               # device name (macOS: "utun")
# state_dir = "/var/lib/twoway" # crash-cleanup record of what was changed
# resolv_conf = "/etc/resolv.conf"  # written when systemd-resolved is not used
# offload = true                # kernel segmentation offloads: superpackets pass through whole (Linux)
# persist = false               # true: keep address, routes, DNS while reconnecting (kill switch)
transport = "auto"              # "auto": packets over UDP while the gateway's UDP port answers, else the TLS connection; "tcp": always the TLS connection
# manage_path_queue = true      # over UDP, keep the queue on the path to the gateway short (CoDel on measured delay)

# SOCKS5 proxies of dynamic forwards (type = "dynamic", -D) accept anyone
# who can reach them unless a user is set: then the RFC 1929 user name and
# password are required.
[socks]
# user = "alice"
# password_file = "/etc/twoway/socks.pass"   # first line; not readable by group or others

# An HTTP proxy to reach the gateways through (CONNECT; the TLS session to
# the gateway is inside it, verified as always). Without url, HTTPS_PROXY
# and NO_PROXY from the environment apply; url = "direct" ignores them.
[proxy]
# url = "http://proxy.corp.example:3128"
# no_proxy = "corp.example,198.18.0.0/15"    # gateways reached directly
# user = "alice"
# password_file = "/etc/twoway/proxy.pass"   # first line; not readable by group or others

[control]
# Local socket for 'twoway status' (and 'twoway kick' on the gateway).
# Default: /run/twoway/client.sock when run as root; "off" disables it.
# socket = "/run/twoway/client.sock"

[metrics]
# Prometheus /metrics endpoint; off unless set. Keep it on loopback or a
# management network: it names certificate subjects.
# listen = "127.0.0.1:9109"

[log]
level = "info"
format = "text"
`
