"""ZooKeeper's four-letter word `srvr`: server details to anyone who asks."""

from poc.checks.base import Check, CheckError, Target, Verdict
from poc.checks.registry import check


@check(
    name="zookeeper_srvr",
    title="ZooKeeper answers srvr without authentication",
    severity="medium",
    services=("zookeeper",),
    ports=(2181,),
)
def zookeeper_srvr(spec: Check, target: Target) -> Verdict:
    with target.connect() as conn:
        conn.send(b"srvr")
        answer = conn.read_all()
    if b"Zookeeper version:" in answer:
        return spec.verdict(True, answer)
    if b"not in the whitelist" in answer or b"not executed" in answer:
        # 3.5+: four-letter words are off unless listed in 4lw.commands.whitelist.
        return spec.verdict(False, answer)
    raise CheckError("not a ZooKeeper answer")
