"""The run page's pause, resume and cancel buttons, in a real browser (headless
Chromium through Selenium) against a live server. Skipped without Chromium, except
under CI, where .ci/run installs it and a missing browser is a failure."""

import os
import shutil

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from maintenance.engine.runs import create_run
from maintenance.engine.states import Status
from maintenance.models import MaintenanceRun

pytestmark = pytest.mark.django_db(transaction=True)
DRIVER = shutil.which("chromedriver")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


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
    names = ["view_maintenancerun"] + (["start_maintenancerun"] if may_start else [])
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
