"""Drives the nullport console in a real headless Chromium over WebDriver (Selenium), as a
person would, while the Rust test (app/tests/console_browser.rs) makes the MCP calls and
opens the channel the steps below act on. Prints a JSON report of what the pages showed.

usage: console_browser.py LOGIN_URL SCREENSHOT_DIR EXPECTED_PATH
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

login, shots, expected_path = sys.argv[1], sys.argv[2], sys.argv[3]
base = login.split("/login")[0]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
report = {}
wait = WebDriverWait(driver, 40, poll_frequency=0.2)


def shot(name):
    driver.save_screenshot(os.path.join(shots, name + ".png"))


def submit(button, url):
    """Clicks a form's button and waits until the browser has left the page it was on and
    landed on `url`. The form posts and redirects back to the same URL, so waiting for the
    URL alone would return before the post was even sent, and the next `driver.get` could
    race the redirect."""
    button.click()
    wait.until(EC.staleness_of(button))
    wait.until(EC.url_to_be(url))


def pending_section():
    """Waits for a waiting call on the approvals page (reloading as a person would)."""
    deadline = time.time() + 40
    while time.time() < deadline:
        driver.get(base + "/approvals")
        found = driver.find_elements(By.CSS_SELECTOR, "section.pending")
        if found:
            return found[0]
        time.sleep(0.3)
    raise SystemExit("no pending approval appeared")


try:
    # Log in with the one-time URL: the status page.
    driver.get(login)
    wait.until(EC.presence_of_element_located((By.ID, "link")))
    report["status_link"] = driver.find_element(By.ID, "link").text
    shot("status")

    # The first call waits: its arguments are on the page; approve it with a reason.
    section = pending_section()
    report["first_args"] = section.find_element(By.CSS_SELECTOR, "pre.args").text
    report["first_title"] = section.find_element(By.TAG_NAME, "h2").text
    shot("approvals")
    section.find_element(By.NAME, "reason").send_keys("looked right in the browser")
    submit(section.find_element(By.CSS_SELECTOR, "button.approve"), base + "/approvals")

    # The second call: deny it.
    section = pending_section()
    report["second_args"] = section.find_element(By.CSS_SELECTOR, "pre.args").text
    section.find_element(By.NAME, "reason").send_keys("not this one")
    submit(section.find_element(By.CSS_SELECTOR, "button.deny"), base + "/approvals")

    # A live channel on the status page: close it from the page.
    deadline = time.time() + 40
    while time.time() < deadline:
        driver.get(base + "/")
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.channel[data-service='hold']")
        if rows:
            break
        time.sleep(0.3)
    else:
        raise SystemExit("the channel never showed")
    report["channel_row"] = rows[0].text
    shot("status-channel")
    submit(rows[0].find_element(By.CSS_SELECTOR, "button.close"), base + "/")

    # The audit trail, verified from the page.
    driver.get(base + "/audit")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "button[name='verify']")))
    shot("audit")
    driver.find_element(By.CSS_SELECTOR, "button[name='verify']").click()
    wait.until(EC.presence_of_element_located((By.ID, "verify")))
    report["verify"] = driver.find_element(By.ID, "verify").text
    report["audit_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "table.audit tr")) - 1

    # The policy page: allow through the form (the CLI's code path).
    driver.get(base + "/policy")
    shot("policy")
    driver.find_element(By.NAME, "peer").send_keys("agent")
    driver.find_element(By.NAME, "service").send_keys("extra")
    driver.find_element(By.CSS_SELECTOR, "button[value='allow']").click()
    wait.until(EC.presence_of_element_located((By.ID, "message")))
    report["policy_message"] = driver.find_element(By.ID, "message").text

    # The script ran under the strict policy with no error in the console.
    report["browser_errors"] = [
        e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"
    ] if hasattr(driver, "get_log") else []
finally:
    driver.quit()

print(json.dumps(report))
