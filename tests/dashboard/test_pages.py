"""The host page's one ports table, the run page's findings, the audit log's field diff,
admin links where a page sends you to the admin."""

import re
from datetime import timedelta

from django.utils import timezone

from agents.models import Agent, ProcessSocket
from audit.diff import field_changes
from audit.models import AuditEntry
from poc.models import PocCheck, PocResult
from scanner.models import Port, PortObservation, ScanRun
from scanner.services.results import run_import
from tests.dashboard.test_overview import rows_of


def test_it_joins_port_fingerprint_history_process_and_poc_verdict_in_one_table(
    login, users, world
):
    now = timezone.now()
    a = world["a"]
    Port.objects.create(host=a, port=23, state="closed", service="telnet")
    for i, (product, version) in enumerate(
        [("OpenSSH", "8.9"), ("OpenSSH", "8.9"), ("OpenSSH", "9.2")]
    ):
        older = ScanRun.objects.create(targets="198.18.0.10", state="finished", created_at=now)
        PortObservation.objects.create(run=older, host=a, port=22, service="ssh", product=product,
                                       version=version, fingerprinted=True,
                                       seen_at=now - timedelta(days=3 - i))  # fmt: skip
    agent = Agent.objects.create(name="db-agent", token_hash="x")
    ProcessSocket.objects.create(agent=agent, host=a, proto="tcp", port=22, name="sshd",
                                 user="root", first_seen=now, last_seen=now)  # fmt: skip
    ProcessSocket.objects.create(agent=agent, host=a, proto="tcp", port=22, name="dropbear",
                                 first_seen=now, last_seen=now, gone_at=now)  # fmt: skip
    check = PocCheck.objects.create(host=a, port=3306, check_name="mysql_empty_root",
                                    reason="new_port", state="done")  # fmt: skip
    PocResult.objects.create(run=check, host=a, port=3306, check_name="mysql_empty_root",
                             vulnerable=True, severity="high", title="no password")  # fmt: skip

    page = login(users["viewer"]).get("/hosts/198.18.0.10/").content.decode()
    rows = rows_of(page, "ports")
    assert [r[0] for r in rows] == ["22/tcp", "3306/tcp", "23/tcp"]  # open ones first
    ssh, mysql, telnet = rows
    assert ssh[2] == "ssh OpenSSH 8.9 → ssh OpenSSH 9.2"  # old -> new, repeats collapsed
    assert ssh[3] == "sshd (root)"  # listening now; the gone dropbear is not
    assert mysql[4] == "mysql_empty_root: vulnerable" and mysql[3] == "—"
    assert telnet[1] == "closed"
    # Every table has a header row, the events table included.
    for table in re.findall(r"<table[^>]*>(.*?)</table>", page, re.S):
        assert "<th>" in table, table[:200]
    assert "<th>Severity</th>" in page.split('id="host-events"', 1)[1]


def test_it_links_the_network_to_the_admin_for_staff(login, users, world):
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()
    link = f'href="/admin/scanner/network/{world["net"].pk}/change/"'
    assert link in login(users["admin"]).get("/hosts/198.18.0.10/").content.decode()
    assert link not in login(users["viewer"]).get("/hosts/198.18.0.10/").content.decode()


def test_it_lists_what_a_run_found_and_raised(login, users, world):
    run = world["run"]
    PortObservation.objects.create(run=run, host=world["a"], port=22, service="ssh",
                                   product="OpenSSH", fingerprinted=True)  # fmt: skip
    page = login(users["viewer"]).get(f"/runs/{run.pk}/").content.decode()
    found = rows_of(page, "run-ports")
    assert found[0][:3] == ["198.18.0.10", "22/tcp", "ssh OpenSSH"]
    raised = rows_of(page, "run-events")
    assert raised[0][0] == "high" and "198.18.0.10:3306/tcp" in raised[0][2]
    assert len(raised) == 4 and "engine auto" in page
    # Each table once, in the page's body; the title is the run's name (a merge once copied
    # both tables into the <title> block).
    assert page.count('id="run-ports"') == page.count('id="run-events"') == 1
    assert f"<title>Run {run.pk} · Portmon</title>" in page


def test_it_says_an_import_came_from_its_file_not_from_an_engine(login, users, world):
    from scanner.imports import Finding

    run = run_import(findings=[Finding("198.18.0.10", 8443, service="https")],
                     at=timezone.now(), source_name="lab-nmap.xml")  # fmt: skip
    page = login(users["viewer"]).get(f"/runs/{run.pk}/").content.decode()
    assert "imported from <code>lab-nmap.xml</code>" in page
    assert "engine" not in page and "swept" not in page
    assert rows_of(page, "run-ports")[0][:2] == ["198.18.0.10", "8443/tcp"]


def test_it_shows_audit_changes_as_fields_with_html_escaped(login, users, world):
    rule = world["rule"]
    AuditEntry.objects.create(
        action="rule.update", object_type="alerts.rule", object_id=str(rule.pk),
        object_repr="<b>rule</b>",
        before={"reason": "<script>alert(1)</script>", "port_lo": 1, "same": "x"},
        after={"reason": "<img src=x onerror=alert(1)>", "port_lo": 2, "same": "x"},
    )  # fmt: skip
    net = str(world["net"].pk)
    AuditEntry.objects.create(action="network.create", object_type="scanner.network",
                              object_id=net, after={"cidr": "198.18.0.0/24"})  # fmt: skip
    page = login(users["admin"]).get("/audit/").content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>rule" not in page
    assert "<del>&lt;script&gt;alert(1)&lt;/script&gt;</del> → <ins>&lt;img src=x" in page
    assert '<span class="field">port_lo</span>: <del>1</del> → <ins>2</ins>' in page
    assert '<span class="field">same</span>' not in page  # unchanged fields left out
    assert "{&#x27;" not in page and "{'" not in page  # no Python dict
    assert f'<a href="/rules/{rule.pk}/">alerts.rule #{rule.pk}</a>' in page
    assert '<span class="field">cidr</span>: <ins>198.18.0.0/24</ins>' in page
    # Linked from the menu for admins.
    assert '<a href="/audit/">Audit</a>' in page


def test_it_diffs_audit_values_of_any_shape():
    assert field_changes(None, None) == []
    created = field_changes(None, {"a": 1})
    assert (created[0].field, created[0].before, created[0].after) == ("a", None, "1")
    gone = field_changes({"a": [1, 2]}, None)
    assert (gone[0].before, gone[0].after) == ("[1, 2]", None)
    odd = field_changes(["x"], "text")
    assert (odd[0].field, odd[0].before, odd[0].after) == ("value", '["x"]', "text")
    long = field_changes({"a": "x" * 5000}, {"a": "y"})
    assert len(long[0].before) == 300 and long[0].before.endswith("…")


def test_it_links_pages_to_the_admin_where_they_send_you_there(login, users, world):
    from agents.models import Agent
    from scanner.models import ScanPolicy

    policy = ScanPolicy.objects.create(name="nightly", targets="198.18.0.0/24", ports="22")
    agent = Agent.objects.create(name="db-agent", token_hash="x")
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()
    admin = "/admin/scanner"
    links = {
        "/policies/": [f"{admin}/scanpolicy/{policy.pk}/change/", f"{admin}/scanpolicy/add/"],
        "/networks/": [f"{admin}/network/{world['net'].pk}/change/", f"{admin}/network/add/"],
        "/agents/": [f"/admin/agents/agent/{agent.pk}/change/"],
        "/rules/": ["/admin/alerts/highriskport/"],
    }  # fmt: skip
    staff = login(users["admin"])
    for path, hrefs in links.items():
        page = staff.get(path).content.decode()
        for href in hrefs:
            assert f'href="{href}"' in page, (path, href)
            # Each admin page answers (no link to a page that is not there).
            assert staff.get(href).status_code == 200, href
    viewer = login(users["viewer"])
    for path, hrefs in links.items():
        page = viewer.get(path).content.decode()
        assert not any(f'href="{href}"' in page for href in hrefs), path
