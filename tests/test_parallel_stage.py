"""How the slow stage splits the real-process tests between xdist workers (tests/conftest.py)."""

import pytest

from tests.conftest import redis_url_for_worker, xdist_group_for


def test_each_xdist_worker_gets_its_own_test_redis_database():
    base = "redis://127.0.0.1:6379/14"
    assert redis_url_for_worker(base, None) == base
    assert redis_url_for_worker(base, "gw0") == base
    assert redis_url_for_worker(base, "gw1") == "redis://127.0.0.1:6379/15"
    assert redis_url_for_worker("redis://:pw@redis:6380", "gw3") == "redis://:pw@redis:6380/3"


def test_a_worker_past_the_last_redis_database_fails_and_says_how_to_fix_it():
    with pytest.raises(RuntimeError, match=r"gw2 needs Redis database 16 .*PORTMON_TEST_WORKERS"):
        redis_url_for_worker("redis://127.0.0.1:6379/14", "gw2")


def test_lab_and_loopback_tests_each_run_on_one_worker_the_rest_anywhere():
    assert xdist_group_for("tests/scanner/test_udp_lab.py", {"lab"}) == "lab"
    assert xdist_group_for("tests/lab/test_lab.py", {"process"}) == "lab"
    assert xdist_group_for("tests/scanner/engines/test_nmap.py", {"lab", "process"}) == "lab"
    assert xdist_group_for("tests/scanner/test_pipeline.py", {"celery", "db"}) == "loopback"
    assert xdist_group_for("tests/poc/test_findings.py", {"process"}) == "loopback"
    assert xdist_group_for("tests/scanner/test_pipeline.py", {"db"}) is None  # fast gate
    assert xdist_group_for("tests/dashboard/test_browser.py", {"browser", "db"}) is None
