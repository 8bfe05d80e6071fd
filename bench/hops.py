"""Per-hop latency of idle pings from four tcpdump text dumps (bench/vpn-hops.sh).

Input: PREFIX.cin.txt (client tunnel device), PREFIX.cout.txt (client's end
of the client-gateway link), PREFIX.gout.txt (gateway's end), PREFIX.glan.txt
(gateway's LAN interface), each `tcpdump -tt -n` output. Output: mean, p50,
p90, p99 in microseconds per hop.
"""
import argparse
import re
import statistics

ICMP = re.compile(r'ICMP echo (request|reply), id \d+, seq (\d+)')
OUTER = re.compile(r' IP (\S+) > (\S+):.* length (\d+)')


def load(path):
    """Returns ({seq: time} of echo requests, {seq: time} of replies, [(time, src) of outer packets with payload])."""
    req, rep, outer = {}, {}, []
    with open(path) as f:
        for line in f:
            t = float(line.split(' ', 1)[0])
            m = ICMP.search(line)
            if m:
                (req if m.group(1) == 'request' else rep).setdefault(int(m.group(2)), t)
                continue
            m = OUTER.search(line)
            if m and int(m.group(3)) > 0:
                outer.append((t, m.group(1)))
    return req, rep, outer


def first_after(outer, t, src):
    """The time of the first outer packet from src (an ADDR.PORT prefix) at or after t."""
    for ot, osrc in outer:
        if ot >= t and osrc.startswith(src):
            return ot
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--client', required=True, help="the client's outer address")
    ap.add_argument('--gateway', required=True, help="the gateway's outer address")
    ap.add_argument('--title', default='')
    ap.add_argument('prefix')
    a = ap.parse_args()
    t1, t8, _ = load(a.prefix + '.cin.txt')
    _, _, cout = load(a.prefix + '.cout.txt')
    _, _, gout = load(a.prefix + '.gout.txt')
    t4, t5, _ = load(a.prefix + '.glan.txt')
    names = ['client send', 'wire c>g', 'gw recv', 'corp', 'gw send', 'wire g>c', 'client recv', 'total']
    hops = {n: [] for n in names}
    c, g = a.client + '.', a.gateway + '.'
    for s, start in t1.items():
        if s not in t4 or s not in t5 or s not in t8:
            continue
        t2, t3 = first_after(cout, start, c), first_after(gout, start, c)
        t6, t7 = first_after(gout, t5[s], g), first_after(cout, t5[s], g)
        # An outer packet that left after the inner one arrived cannot have carried it.
        if None in (t2, t3, t6, t7) or t3 > t4[s] or t7 > t8[s]:
            continue
        times = [start, t2, t3, t4[s], t5[s], t6, t7, t8[s]]
        for i, n in enumerate(names[:-1]):
            hops[n].append((times[i + 1] - times[i]) * 1e6)
        hops['total'].append((t8[s] - start) * 1e6)
    n = len(hops['total'])
    print('%s: %d of %d pings matched (microseconds)' % (a.title, n, len(t1)))
    if n == 0:
        return
    print('  %-12s %7s %7s %7s %7s' % ('hop', 'mean', 'p50', 'p90', 'p99'))
    for name in names:
        v = sorted(hops[name])
        print('  %-12s %7.0f %7.0f %7.0f %7.0f' % (name, statistics.mean(v), v[n // 2], v[int(n * .9)], v[int(n * .99)]))


if __name__ == '__main__':
    main()
