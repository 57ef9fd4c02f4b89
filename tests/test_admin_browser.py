"""The run page's pause, resume, cancel and revert buttons, in a real browser (headless
Chromium through Selenium) against a live server. Skipped without Chromium, except
under CI, where .ci/run installs it and a missing browser is a failure."""

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from chronicles.testdata.generator import Options, generate
from maintenance.engine.runner import execute
from maintenance.engine.runs import create_run
from maintenance.engine.states import Status
from maintenance.models import Finding, MaintenanceRun

pytestmark = pytest.mark.django_db(transaction=True)
DRIVER = shutil.which("chromedriver")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


@pytest.fixture
def browser():
    if not (DRIVER and BROWSER):
        message = "needs Debian's chromium and chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def log_in(browser, live_server, may_start):
    user = get_user_model().objects.create_user("keeper", password="a long password", is_staff=True)
    names = ["view_maintenancerun", "view_runbatch", "view_finding"]
    names += ["start_maintenancerun"] if may_start else []
    user.user_permissions.set(Permission.objects.filter(codename__in=names))
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("keeper")
    browser.find_element(By.NAME, "password").send_keys("a long password")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda driver: "Site administration" in driver.page_source)


def buttons(browser):
    from selenium.webdriver.common.by import By

    return [b.text for b in browser.find_elements(By.CSS_SELECTOR, ".object-tools button")]


def press(browser, label, then):
    """Click a button and wait for the page that follows to say `then`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    (button,) = [
        b for b in browser.find_elements(By.CSS_SELECTOR, ".object-tools button") if b.text == label
    ]
    button.click()
    WebDriverWait(browser, 10).until(lambda driver: then in driver.page_source)


def test_an_operator_pauses_resumes_and_cancels_from_the_run_page(
    browser, live_server, monkeypatch
):
    sent = []
    monkeypatch.setattr("maintenance.admin.send", lambda run: sent.append(run.pk))
    log_in(browser, live_server, may_start=True)
    run = create_run("archive_old_scenes", {}, trigger=MaintenanceRun.Trigger.CLI)
    browser.get(f"{live_server.url}/admin/maintenance/maintenancerun/{run.pk}/change/")
    assert buttons(browser) == ["Pause", "Cancel"]

    press(browser, "Pause", then=f"Run #{run.pk} is paused.")
    assert buttons(browser) == ["Resume", "Cancel"]

    press(browser, "Resume", then=f"Run #{run.pk} is queued.")
    assert sent == [run.pk]

    press(browser, "Cancel", then=f"Run #{run.pk} is cancelled.")
    assert buttons(browser) == []
    run.refresh_from_db()
    assert run.status == Status.CANCELLED


def test_staff_without_the_permission_see_no_buttons(browser, live_server):
    log_in(browser, live_server, may_start=False)
    run = create_run("archive_old_scenes", {}, trigger=MaintenanceRun.Trigger.CLI)
    browser.get(f"{live_server.url}/admin/maintenance/maintenancerun/{run.pk}/change/")
    assert "archive_old_scenes" in browser.page_source
    assert buttons(browser) == []


def test_an_operator_reverts_a_fix_from_its_run_page(browser, live_server, broker_queue):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    generate(Options(seed=8, chronicles=2, characters=40, scenes=60, defect_rate=0.1))
    fix = execute(create_run("validate_data_integrity", {"fix": True}, trigger="cli"))
    assert fix.status == Status.SUCCEEDED and fix.changed
    by_rule = Counter(Finding.objects.filter(run=fix, fixed=True).values_list("rule", flat=True))
    log_in(browser, live_server, may_start=True)
    browser.get(f"{live_server.url}/admin/maintenance/maintenancerun/{fix.pk}/change/")
    assert buttons(browser) == ["Revert"]

    press(browser, "Revert", then="revert_conflict")
    rows = browser.find_elements(By.CSS_SELECTOR, "#revert-counts tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert {what: int(n) for what, n in cells} == by_rule
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "revert-confirm.png"))

    browser.find_element(By.CSS_SELECTOR, "input[name=confirm]").click()
    WebDriverWait(browser, 10).until(
        lambda driver: "Started revert_run as run #" in driver.page_source
    )
    undo = MaintenanceRun.objects.get(operation="revert_run")
    assert browser.current_url.endswith(f"/maintenancerun/{undo.pk}/change/")
    assert undo.status == Status.QUEUED
    assert broker_queue.llen(current_app.conf.task_default_queue) == 1  # its message

    execute(undo)  # what a worker would do with the message
    browser.refresh()
    assert (
        browser.find_element(By.CSS_SELECTOR, ".field-status_badge .readonly").text == "succeeded"
    )
    undo.refresh_from_db()
    assert undo.changed == fix.changed


def screenshots(browser, name):
    """The page at 1400 and at 1920 pixels wide (var/screenshots/NAME.png and
    NAME-1920.png), for a look at the layout; the window is 1400 wide again after."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width, suffix in [(1920, "-1920"), (1400, "")]:
        browser.set_window_size(width, 1200)
        browser.save_screenshot(str(SCREENSHOTS / f"{name}{suffix}.png"))


def test_an_operator_starts_a_dry_run_from_start_a_run(browser, live_server, broker_queue):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests import factories

    for i in range(4):
        factories.scene(name=f"old{i}", created_days_ago=400)
    log_in(browser, live_server, may_start=True)
    browser.get(f"{live_server.url}/admin/maintenance/maintenancerun/")
    (link,) = browser.find_elements(By.CSS_SELECTOR, ".object-tools a")
    assert link.text.casefold() == "start a run"  # the admin's CSS writes it in capitals
    link.click()
    WebDriverWait(browser, 10).until(lambda driver: "start-operations" in driver.page_source)
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#start-operations a")]
    assert "archive_old_scenes" in names and "validate_data_integrity" in names
    screenshots(browser, "start-list")

    browser.find_element(By.LINK_TEXT, "archive_old_scenes").click()
    WebDriverWait(browser, 10).until(lambda driver: "start_form" in driver.page_source)
    assert browser.find_element(By.NAME, "dry_run").is_selected()
    days = browser.find_element(By.NAME, "older_than_days")
    assert days.get_attribute("value") == "90" and days.get_attribute("min") == "1"
    screenshots(browser, "start-form")

    browser.find_element(By.CSS_SELECTOR, "input[name=start]").click()
    WebDriverWait(browser, 10).until(
        lambda driver: "Started archive_old_scenes (dry run) as run #" in driver.page_source
    )
    run = MaintenanceRun.objects.get(operation="archive_old_scenes")
    assert browser.current_url.endswith(f"/maintenancerun/{run.pk}/change/")
    assert "No worker has ever answered" in browser.page_source  # no heartbeat in the test
    assert (run.status, run.dry_run, run.trigger, run.requested_by) == (
        Status.QUEUED,
        True,
        "admin",
        "keeper",
    )
    assert broker_queue.llen(current_app.conf.task_default_queue) == 1  # its message

    done = execute(MaintenanceRun.objects.get(pk=run.pk))  # what a worker would do
    browser.refresh()
    # (the status as a field, or as the coloured badge of the list)
    status = browser.find_element(
        By.CSS_SELECTOR, ".field-status .readonly, .field-status_badge .readonly"
    )
    assert status.text.casefold().startswith("succeeded"), status.text
    assert done.changed == 4  # what a real run would archive; a dry run archives nothing


def test_the_run_page_follows_a_run_to_100_percent_and_links_to_its_batches(
    browser, live_server, postgresql
):
    """A run executing in another thread (a worker, as far as the page can tell): its page
    updates its progress in place, reloads when the run ends at 100%, and its batches link
    lists the batches newest first. PostgreSQL: the runner's thread needs a database it
    can share with the live server's."""
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests import factories

    for i in range(60):
        factories.scene(name=f"old{i}")
    # 20 batches of 0.4 s: time for the page to load and watch, even on a loaded machine.
    run = create_run("archive_old_scenes", {"batch_size": 3}, trigger="cli")
    worker = threading.Thread(target=execute, args=(run,), kwargs={"on_batch": slow})
    log_in(browser, live_server, may_start=True)
    worker.start()
    try:
        WebDriverWait(browser, 20).until(lambda _: running(run))
        browser.get(f"{live_server.url}/admin/maintenance/maintenancerun/{run.pk}/change/")
        browser.execute_script("window.sameDocument = true")
        first = progress_of(browser)
        screenshots(browser, "run-live")
        WebDriverWait(browser, 20).until(
            lambda driver: (
                progress_of(driver) != first
                and driver.execute_script("return window.sameDocument === true")
            )
        )  # updated in place, without a reload
        WebDriverWait(browser, 30).until(lambda driver: status_of(driver) == "succeeded")
    finally:
        worker.join(60)
    assert "100%" in progress_of(browser)
    assert not browser.execute_script("return window.sameDocument === true")  # it reloaded

    browser.find_element(By.PARTIAL_LINK_TEXT, "batches, newest first").click()
    WebDriverWait(browser, 10).until(lambda driver: "Run batches" in driver.page_source)
    numbers = [
        int(cell.text.split()[1])
        for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list .field-batch")
    ]
    assert numbers == list(range(20, 0, -1))
    screenshots(browser, "run-batches")


def slow(report):
    time.sleep(0.4)  # a batch a worker takes its time over, so the page can watch


def running(run):
    return MaintenanceRun.objects.filter(pk=run.pk, status=Status.RUNNING).exists()


def status_of(browser):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, ".field-status_badge .readonly").text


def progress_of(browser):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, ".field-progress .readonly").text


def test_an_operator_pauses_a_running_run_and_resumes_it(
    browser, live_server, postgresql, monkeypatch
):
    """Pause while a worker (a thread here) is in the middle of the run: it stops at a
    batch boundary, paused; Resume queues it again and it finishes the rest, every scene
    archived once."""
    import threading

    from selenium.webdriver.support.ui import WebDriverWait

    from tests import factories

    sent = []
    monkeypatch.setattr("maintenance.admin.send", lambda run: sent.append(run.pk))
    for i in range(80):
        factories.scene(name=f"old{i}")
    run = create_run("archive_old_scenes", {"batch_size": 2}, trigger="cli")  # 16 s in all
    worker = threading.Thread(target=execute, args=(run,), kwargs={"on_batch": slow})
    log_in(browser, live_server, may_start=True)
    worker.start()
    try:
        WebDriverWait(browser, 20).until(lambda _: running(run))
        browser.get(f"{live_server.url}/admin/maintenance/maintenancerun/{run.pk}/change/")
        assert buttons(browser) == ["Pause", "Cancel"]
        press(browser, "Pause", then=f"Run #{run.pk} is pausing.")
        WebDriverWait(browser, 30).until(lambda driver: status_of(driver) == "paused")
    finally:
        worker.join(60)
    run.refresh_from_db()
    assert run.status == Status.PAUSED and 0 < run.batches < 40
    assert buttons(browser) == ["Resume", "Cancel"]

    press(browser, "Resume", then=f"Run #{run.pk} is queued.")
    assert sent == [run.pk]
    finished = execute(MaintenanceRun.objects.get(pk=run.pk))  # what the worker would do
    assert finished.status == Status.SUCCEEDED and finished.changed == 80
    browser.refresh()
    assert status_of(browser) == "succeeded"
