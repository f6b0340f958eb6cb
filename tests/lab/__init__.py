"""A network-namespace lab: fake hosts with real banners for masscan, nmap and connect scans.

Usage (needs root, `ip netns` and nftables; otherwise Lab raises LabError with the reason —
let the test fail with it, do not skip)::

    from tests.lab import Lab, LabError

    with Lab(hosts=30, ports_per_host=(2, 6), loss=0.005, seed=1) as lab:
        lab.cidr        # "198.18.N.0/24": scan this (or lab.hosts), nothing else
        lab.hosts       # host IPs, all inside lab.cidr
        lab.truth       # {ip: {port: nmap service name}}, e.g. {22: "ssh", 34567: "redis"}
        lab.open_ports  # {(ip, port)}
        lab.fingerprint(ip, port)  # {"service", "product", "version"} as nmap -sV reports
        # masscan.sweep needs no adapter options (the route to lab.cidr picks them); a
        # plain masscan: --adapter lab.interface --adapter-ip lab.source_ip
        #                --router-mac lab.router_mac
        lab.egress_drops()                  # {device: frames to 198.18.0.0/15 dropped}
        lab.set_loss(0.005)                 # random loss of packets entering the lab
        lab.packet_counts()                 # (packets into the lab, packets dropped)
        lab.close_port(ip, port); lab.open_port(ip, port, service="http")

    Lab(**BENCHMARK_LAB)  # the benchmark lab: 62 hosts, 211 open ports, 0.5% loss
    Lab(on_link=True, offsets=[4, 7, 31])  # hosts .4 .7 .31 on the scanner's own /24

On-link labs (on_link=True) give the root side 198.18.N.254/24 on the veth instead of the
routed /30 link: the kernel's route to the hosts has no gateway, so Portmon scans them with
its connect scanner (scanner.engines.routes), as it does a network its scanner sits on.
A routed lab tests masscan only and an on-link one the connect scanner only: test both.

Layout: one network namespace per Lab (`pmlab-N`) joined to the root namespace by a veth pair
(`pmlabN` in the root namespace, `lab0` inside). Hosts are 198.18.N.0/24 addresses on `lab0`;
the link is 198.19.N.0/30 (root side .1 = lab.source_ip). The hosts are routed, not on-link:
the root namespace reaches 198.18.N.0/24 via the lab side of the link (198.19.N.2, whose MAC
is lab.router_mac), which is how Portmon's masscan route resolution sees a remote network.
One asyncio process inside the namespace (tests.lab.server) serves ssh, http, ftp, smtp,
redis and mysql with banners nmap -sV names correctly (tests.lab.services; redis shows its
version only on 6379, where nmap sends its INFO probe). Hosts and ports are deterministic
from the seed; about half sit on the service's well-known port, the rest on random ports
1024-65535.

Measured with masscan 1.3.2 (python -m tests.lab.selfcheck):
- TSO/GSO are switched off on the root veth: with them on, libpcap gives masscan a capture
  ring of only 32 frames and it loses SYN-ACKs (66% found at 100 kpps with *no* loss).
  Lab(offloads=True) keeps them on to reproduce that.
- The lab keeps a 10/s UDP broadcast toward the root side: masscan's receive thread only sees
  the scan's end when a packet arrives, and on a silent veth it would wait forever.
- masscan answers every RST-ACK of a closed port with a RST and counts it in --rate, so
  --rate 100000 sweeps about 50k probes/s here.

Safety:
- An egress guard: the lab's own nftables table (`netdev pmlab_guard_N`) hooks egress on every
  root-namespace interface but lo and veths and drops (and counts) frames to 198.18.0.0/15.
  masscan's raw frames pass no route or inet firewall, but this hook sees them. close() raises
  LabError if the counter moved: the teardown assertion of every lab test. Veths are left out
  because they lead to namespaces of this machine (other labs), not off it.
- A blackhole route for the whole 198.18.0.0/15 in the root namespace (added when absent,
  removed by the last lab that leaves); a lab refuses to start if that range is routed
  anywhere else, and checks that 198.19.255.1 resolves to the blackhole.
- The lab namespace has no default route and no forwarding: it can answer the root side's
  /30 and nothing else, so even a mistaken masscan target sent to lab.router_mac dies there.
- Concurrent labs (parallel test runs, a benchmark) get distinct slots N under a lock file in
  /run/portmon-lab; the state file records the owner pid, so a crashed run's namespace,
  veth, route and server are removed by the next lab (`python -m tests.lab.cleanup` too).
- Teardown kills the server, deletes veth and namespace (routes and nft tables go with
  them); the server also exits on its own when the owning process dies (stdin closes).
"""

from tests.lab.lab import BENCHMARK_LAB, Lab, LabError

__all__ = ["BENCHMARK_LAB", "Lab", "LabError"]
