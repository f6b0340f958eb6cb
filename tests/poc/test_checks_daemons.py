"""Every built-in check against real daemons in a lab namespace: open ones are found,
the same daemons with authentication or a hardened configuration are not.

Debian's redis-server, memcached, vsftpd, rsync and Python's http.server; stand-ins
(tests/poc/standins.py) for Elasticsearch, Docker, ZooKeeper and MongoDB, which Debian
does not ship. Host A runs the open configurations, host B the closed ones.
"""

import shutil
import sys

import pytest

from poc.engine import check_run
from tests.lab import Lab
from tests.poc.daemons import Daemon, rsyncd_conf, standin, vsftpd_conf

pytestmark = pytest.mark.lab

SERVICES = {
    # check: (port, open argv, closed argv); "{ip}" and "{tmp}" are filled in per host.
    "redis_noauth": (
        6379,
        ["redis-server", "--bind", "{ip}", "--port", "6379", "--protected-mode", "no",
         "--save", "", "--appendonly", "no", "--dir", "{tmp}"],
        ["redis-server", "--bind", "{ip}", "--port", "6379", "--protected-mode", "no",
         "--save", "", "--appendonly", "no", "--dir", "{tmp}", "--requirepass", "s3cret"],
    ),
    "memcached_stats": (
        11211,
        ["memcached", "-u", "root", "-l", "{ip}", "-p", "11211", "-U", "0"],
        ["memcached", "-u", "root", "-l", "{ip}", "-p", "11211", "-U", "0",
         "-Y", "{tmp}/memcached-auth"],
    ),
    "ftp_anonymous": (
        21, ["vsftpd", "{tmp}/vsftpd-anon.conf"], ["vsftpd", "{tmp}/vsftpd-closed.conf"]
    ),
    "rsync_modules": (
        873,
        ["rsync", "--daemon", "--no-detach", "--address={ip}", "--port=873",
         "--config={tmp}/rsyncd-listed.conf"],
        ["rsync", "--daemon", "--no-detach", "--address={ip}", "--port=873",
         "--config={tmp}/rsyncd-hidden.conf"],
    ),
    "http_dir_listing": (
        8000,
        [sys.executable, "-m", "http.server", "--bind", "{ip}", "-d", "{tmp}/listing", "8000"],
        [sys.executable, "-m", "http.server", "--bind", "{ip}", "-d", "{tmp}/site", "8000"],
    ),
    "elasticsearch_open": (9200, standin("elasticsearch"), standin("elasticsearch", auth=True)),
    "docker_api_open": (2375, standin("docker"), standin("docker", auth=True)),
    "zookeeper_srvr": (2181, standin("zookeeper"), standin("zookeeper", auth=True)),
    "mongodb_noauth": (27017, standin("mongodb"), standin("mongodb", auth=True)),
}  # fmt: skip
STANDIN_PORT_ARGS = {"elasticsearch_open", "docker_api_open", "zookeeper_srvr", "mongodb_noauth"}
EVIDENCE = {
    "redis_noauth": "redis_version:",
    "memcached_stats": "STAT version",
    "ftp_anonymous": "230",
    "rsync_modules": "backups",
    "http_dir_listing": "Directory listing for /",
    "elasticsearch_open": "customers",
    "docker_api_open": "ApiVersion 1.43",
    "zookeeper_srvr": "Zookeeper version: 3.8.0",
    "mongodb_noauth": "crm",
}


def _prepare(tmp):
    (tmp / "memcached-auth").write_text("portmon:s3cret\n")
    (tmp / "listing").mkdir()
    (tmp / "listing" / "backup.sql").write_text("-- dump\n")
    (tmp / "site").mkdir()
    (tmp / "site" / "index.html").write_text("<html><title>Welcome</title></html>\n")
    rsyncd_conf(tmp, listed=True)
    rsyncd_conf(tmp, listed=False)


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    for tool in ("redis-server", "memcached", "vsftpd", "rsync"):
        assert shutil.which(tool), f"{tool} is missing: bin/setup installs it"
    tmp = tmp_path_factory.mktemp("daemons")
    tmp.chmod(0o755)
    started = []
    with Lab(hosts=2, ports_per_host=(0, 0), seed=9) as lab:
        open_ip, closed_ip = lab.hosts
        _prepare(tmp)
        vsftpd_conf(tmp, ip=open_ip, anonymous=True)
        vsftpd_conf(tmp, ip=closed_ip, anonymous=False)
        try:
            for name, (port, open_argv, closed_argv) in SERVICES.items():
                for ip, argv in ((open_ip, open_argv), (closed_ip, closed_argv)):
                    argv = [a.format(ip=ip, tmp=tmp) for a in argv]
                    if name in STANDIN_PORT_ARGS:
                        argv = argv[:4] + [ip, str(port)] + argv[4:]
                    log = tmp / f"{name}-{ip}.log"
                    started.append(Daemon(lab.namespace, argv, ip, port, log).start())
            yield {"open": open_ip, "closed": closed_ip}
        finally:
            for daemon in started:
                daemon.stop()


@pytest.mark.parametrize("check", sorted(SERVICES))
def test_it_proves_an_open_service_and_clears_a_closed_one(daemons, check):
    port = SERVICES[check][0]

    found = check_run(check=check, ip=daemons["open"], port=port, timeout=5)
    cleared = check_run(check=check, ip=daemons["closed"], port=port, timeout=5)

    assert found.verdict is not None, found.error
    assert found.verdict.vulnerable, found.verdict
    assert EVIDENCE[check] in found.verdict.evidence
    assert cleared.verdict is not None, cleared.error
    assert not cleared.verdict.vulnerable, cleared.verdict
