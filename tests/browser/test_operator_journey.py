"""In a real browser (Debian's Chromium driven by Playwright) against a live server and a real
Celery worker: an operator sees a fault and its diagnosis, is refused self-approval on screen, a
second person approves in the queue, the first sees the repair succeed, and a report downloads and
opens. A screenshot of every page is kept under test-artifacts/screenshots/."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from healing import services
from healing.models import Repair
from tests.conftest import entry_names
from tests.integration.celery_procs import start_worker, wait_until

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # the ORM is used beside Playwright's sync API in this thread
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def sign_in(browser, live_server, username: str, *, phone: bool = False):
    context = browser.new_context(viewport={"width": 390, "height": 844} if phone else {"width": 1366, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill("pw-" + username)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    return page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_operator_and_an_approver_heal_a_fault_in_the_browser(browser, live_server, store, make_target, approver, second_approver, tmp_path):
    for name in entry_names(store)[3:5]:  # a writer crashed mid-burst: two truncated entries
        data = (store / name).read_bytes()
        (store / name).write_bytes(data[: len(data) // 2])
    target = make_target(store, check_interval_seconds=3600)
    services.check_target(target_id=target.pk)
    worker = start_worker(tmp_path)
    try:
        anna = sign_in(browser, live_server, "anna")
        assert anna.get_by_text("fs.entry_corrupt").first.is_visible()
        assert anna.get_by_text("Writer crashed mid-write").first.is_visible()
        shot(anna, "01-overview")
        anna.get_by_role("link", name="fs.entry_corrupt").first.click()
        assert anna.get_by_text("Why (diagnosis)").is_visible() and anna.get_by_text("writer_crash_mid_write").first.is_visible()
        shot(anna, "02-issue")
        anna.get_by_role("button", name="Plan a repair").click()
        anna.wait_for_selector("text=Awaiting approval")
        shot(anna, "03-repair-planned")
        anna.get_by_role("button", name="Approve").click()
        refusal = anna.get_by_text("you requested this repair, so someone else must approve it (separation of duties)")
        assert refusal.is_visible()
        shot(anna, "04-self-approval-refused")
        repair = Repair.objects.get(code="fs.entry_corrupt")
        assert repair.status == "awaiting_approval"

        bert = sign_in(browser, live_server, "bert")
        bert.goto(f"{live_server.url}/approvals/")
        shot(bert, "05-approvals-queue")
        bert.get_by_label("Comment").first.fill("two truncated entries, quarantine them")
        bert.get_by_role("button", name="Approve").first.click()
        bert.wait_for_selector("text=approved.")
        shot(bert, "06-approved-in-place")

        wait_until(lambda: Repair.objects.get(pk=repair.pk).status in {"succeeded", "rolled_back"}, timeout=90, what="the worker to run the repair")
        anna.goto(f"{live_server.url}/repairs/{repair.pk}/")
        assert anna.get_by_text("Succeeded").first.is_visible() and anna.get_by_text("passed").first.is_visible()
        shot(anna, "07-repair-succeeded")

        anna.goto(f"{live_server.url}/targets/{target.name}/")
        anna.wait_for_selector("#charts .main-svg")
        shot(anna, "08-target")
        anna.goto(f"{live_server.url}/compliance/")
        anna.get_by_role("button", name="Generate").click()
        anna.wait_for_selector("text=generated")
        with anna.expect_download() as download_info:
            anna.get_by_role("link", name="PDF").first.click()
        pdf_path = download_info.value.path()
        import pypdf

        text = "".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(Path(pdf_path).read_bytes())).pages)
        assert f"Repair #{repair.pk}" in text and "chain intact" in text
        shot(anna, "09-compliance")
        for name, url in [("10-audit", "/audit/"), ("11-verify", "/audit/verify/"), ("12-checks", "/checks/"), ("13-reviews", "/reviews/"),
                          ("14-api-docs", "/api/docs/")]:
            anna.goto(f"{live_server.url}{url}")
            anna.wait_for_load_state("networkidle")
            shot(anna, name)
        phone = sign_in(browser, live_server, "anna", phone=True)
        shot(phone, "15-overview-phone")
        assert phone.get_by_text(target.name).first.is_visible()
    finally:
        worker.stop()
