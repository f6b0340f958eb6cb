"""The probe ledger: which probes got no answer, and how to probe them again."""

from scanner.recall import ProbeLedger, reprobe_plan


def test_it_lists_exactly_the_unanswered_probes_of_each_host():
    ledger = ProbeLedger(["198.18.0.1", "198.18.0.2"], ((1, 1000), (8080, 8080)))
    for port in [*range(1, 1001), 8080]:
        if port not in (7, 8080):
            ledger.mark("198.18.0.1", port)
        ledger.mark("198.18.0.2", port)
    ledger.mark("198.18.0.9", 22)  # not in this shard: ignored
    ledger.mark("198.18.0.1", 5000)  # not a probed port: ignored
    assert ledger.unanswered("198.18.0.1") == [7, 8080]
    assert ledger.unanswered("198.18.0.2") == []
    assert reprobe_plan(ledger).exact == [("198.18.0.1", 7), ("198.18.0.1", 8080)]


def test_it_sweeps_filtering_hosts_again_and_leaves_silent_ones():
    ledger = ProbeLedger(["198.18.0.1", "198.18.0.2", "198.18.0.3"], ((1, 10000),))
    for port in range(1, 10001):
        ledger.mark("198.18.0.1", port)
        if port <= 5000:  # a firewall drops the upper half
            ledger.mark("198.18.0.2", port)
    plan = reprobe_plan(ledger)
    assert plan.exact == []
    assert plan.rescan == ["198.18.0.2"]
    assert plan.silent == ["198.18.0.3"]


def test_a_batch_of_answers_marks_the_same_probes_as_one_by_one():
    ports = ((1, 1000), (8080, 8080))
    answers = [("198.18.0.1", port) for port in range(1, 1001, 3)]
    answers += [("198.18.0.2", 8080), ("198.18.0.9", 22), ("198.18.0.1", 5000)]
    one = ProbeLedger(["198.18.0.1", "198.18.0.2"], ports)
    batch = ProbeLedger(["198.18.0.1", "198.18.0.2"], ports)
    for ip, port in answers:
        one.mark(ip, port)
    batch.mark_many(answers)

    assert batch.bits == one.bits
    assert batch.unanswered("198.18.0.2") == list(range(1, 1001))
    assert len(batch.unanswered("198.18.0.1")) == 1001 - len(range(1, 1001, 3))
