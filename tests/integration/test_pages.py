"""The plain pages, through HTTP as a person uses them."""

from __future__ import annotations

from healing import services
from healing.models import Issue, Repair
from tests.failure_injection.faults import INJECTORS


def test_an_operator_sees_the_fault_and_an_approver_approves_it_in_the_page(client, store, make_target, approver, viewer):
    INJECTORS["fs.entry_corrupt"](store)
    target = make_target(store)
    services.target_pass(target_id=target.pk)
    issue = Issue.objects.get(code="fs.entry_corrupt")
    repair = Repair.objects.get()

    assert client.get("/").status_code == 302, "signed-out users go to the sign-in page"
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert "fs.entry_corrupt" in page and target.name in page
    issue_page = client.get(f"/issues/{issue.pk}/").content.decode()
    assert "Corrupt entry" in issue_page and issue.sample[0]["subject"] in issue_page
    download = client.get(f"/issues/{issue.pk}/subjects.jsonl")
    assert download.status_code == 200 and issue.sample[0]["subject"] in download.content.decode()
    refused = client.post(f"/repairs/{repair.pk}/approve/", {"comment": "me"}, follow=True).content.decode()
    assert "not allowed to approve" in refused

    client.force_login(approver)
    page = client.post(f"/repairs/{repair.pk}/approve/", {"comment": "quarantine"}, follow=True).content.decode()
    assert "approved" in page.lower()
    repair.refresh_from_db()
    assert repair.status == "approved"
    assert client.get("/checks/").status_code == 200
    assert client.get(f"/targets/{target.name}/").status_code == 200
    assert client.get("/repairs/999999/").status_code == 404
    js = client.get("/assets/plotly.min.js")
    assert js.status_code == 200 and js["Content-Type"] == "application/javascript"
