"""The daylight saving time warning of the CrontabSchedule admin, in a real browser
(headless Chromium through Selenium) against a live server. Skipped without Chromium,
except under CI, where a missing browser is a failure (the `browser` fixture)."""

import pytest
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule

from maintenance.dst import dst_problems
from tests import test_admin_browser

# The same browser, skipped or failed the same way (CI=true) without Chromium.
browser = test_admin_browser.browser

pytestmark = pytest.mark.django_db(transaction=True)


def log_in(browser, live_server, user):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys("password")  # pytest-django's
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda driver: "Site administration" in driver.page_source)


def add_crontab(browser, live_server, minute, hour, zone):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(f"{live_server.url}/admin/django_celery_beat/crontabschedule/add/")
    for name, value in (("minute", minute), ("hour", hour)):
        field = browser.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    Select(browser.find_element(By.NAME, "timezone")).select_by_value(zone)
    browser.find_element(By.NAME, "_save").click()
    WebDriverWait(browser, 10).until(lambda driver: "was added successfully" in driver.page_source)
    return [
        (item.get_attribute("class"), item.text)
        for item in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li")
    ]


def test_saving_a_crontab_at_0230_berlin_warns_of_its_dst_dates(browser, live_server, admin_user):
    log_in(browser, live_server, admin_user)

    shown = add_crontab(browser, live_server, "30", "2", "Europe/Berlin")

    row = CrontabSchedule.objects.get()
    dates = {f"{problem.local:%Y-%m-%d}" for problem in dst_problems(row, timezone.now())}
    (warning,) = [text for kind, text in shown if "warning" in kind]
    assert dates and all(day in warning for day in dates)
    assert "02:30" in warning and "Europe/Berlin" in warning
    assert any("success" in kind for kind, _ in shown)

    shown = add_crontab(browser, live_server, "0", "5", "Europe/Berlin")

    assert [kind for kind, _ in shown] == ["success"]
