"""The admin's token actions: a rotated token is shown once and works; revoke stops it."""

import re

from agents.models import Agent
from agents.selectors import agent_for_token


def test_it_rotates_and_revokes_from_the_admin(admin_client, enrolled):
    url = "/admin/agents/agent/"
    rotated = admin_client.post(
        url, {"action": "rotate_tokens", "_selected_action": [enrolled.agent_id]}, follow=True
    )

    token = re.search(r"it is not stored\): (\S+)<", rotated.content.decode()).group(1)
    assert agent_for_token(enrolled.token) is None and agent_for_token(token).name == "web1"
    admin_client.post(url, {"action": "revoke_tokens", "_selected_action": [enrolled.agent_id]})
    assert agent_for_token(token) is None and not Agent.objects.get().enabled


def test_it_lists_agents_inventory_history_and_reports_in_the_admin(admin_client, poster):
    poster.send({"proto": "tcp", "address": "0.0.0.0", "port": 22, "name": "sshd"})

    pages = {
        name: admin_client.get(f"/admin/agents/{name}/")
        for name in ("agent", "processsocket", "socketchange", "agentreport")
    }

    assert {name: page.status_code for name, page in pages.items()} == dict.fromkeys(pages, 200)
    assert "127.0.0.5" in pages["agent"].content.decode()
    assert "sshd" in pages["processsocket"].content.decode()
