"""Drives the web console of a running `sluice dev` in headless Chromium (WebDriver).

The story an operator lives through: place an order and watch the stock drop; swap in a
plugin version with a bug, whose orders become dead letters; roll it back from the console;
redrive the dead letter and watch the order apply; swap the bug in again and watch the guard
roll it back on its own after its first orders, with its reason in the plugins table. Screenshots of each step go to
SCREENSHOT_DIR. Every wait is bounded: a step that does not happen fails by name.

Environment: SLUICE_URL (http://127.0.0.1:PORT), SLUICE_ADMIN_TOKEN, BROKEN_PLUGIN (path to
a .wasm that traps on every order), SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium),
CHROMEDRIVER (default /usr/bin/chromedriver).
"""

import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

URL = os.environ["SLUICE_URL"]
TOKEN = os.environ["SLUICE_ADMIN_TOKEN"]
BROKEN_PLUGIN = os.environ["BROKEN_PLUGIN"]
SHOTS = os.environ["SCREENSHOT_DIR"]
STEP_TIMEOUT = 30
# Records a new version decides before the guard judges it (`sluice dev --guard-records`).
GUARD_RECORDS = int(os.environ.get("GUARD_RECORDS", "3"))


class StepFailed(Exception):
    pass


def wait_for(what, condition, timeout=STEP_TIMEOUT):
    """Poll `condition` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as error:  # the DOM is redrawn every second: retry stale reads
            last_error = error
        time.sleep(0.2)
    raise StepFailed(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def admin(method, path, body):
    request = urllib.request.Request(
        f"{URL}{path}", method=method, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as response:
        return response.status


def put_product(product, stock):
    """The test's own product, through the admin API: the fuzzer, run before on the same
    server, may have drained or renamed the seeded ones."""
    request = urllib.request.Request(
        f"{URL}/catalogs/{product}", method="PUT",
        data=json.dumps({"productName": "Console test", "stock": stock, "unitPrice": 100}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=STEP_TIMEOUT) as response:
        if response.status not in (200, 201):
            raise StepFailed(f"PUT /catalogs/{product} answered {response.status}")


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(STEP_TIMEOUT)
    driver.set_script_timeout(STEP_TIMEOUT)
    shots = []

    def shot(name):
        path = os.path.join(SHOTS, f"{len(shots) + 1:02d}-{name}.png")
        driver.save_screenshot(path)
        shots.append(path)
        print(f"    screenshot {path}")

    def step(text):
        print(f"--> {text}", flush=True)

    def css(selector):
        return driver.find_element(By.CSS_SELECTOR, selector)

    def click(selector, what):
        """The console redraws its tables every second: an element found just before a
        redraw is stale, so find it again and retry, bounded."""
        wait_for(f"clicking {what}", lambda: css(selector).click() or True)

    def stock_of(product):
        return int(css(f'#stock tr[data-product="{product}"] td[data-stock]').get_attribute("data-stock"))

    def order_status(order_id):
        return css(f'#orders tr[data-order="{order_id}"] .status').text

    def place_order(product, quantity):
        Select(css("#order-product")).select_by_value(product)
        field = css('#order-form input[name="quantity"]')
        field.clear()
        field.send_keys(str(quantity))
        previous = css("#order-result").get_attribute("data-order-id")
        css("#order-submit").click()
        return wait_for("the order to be placed", lambda: (
            css("#order-result").get_attribute("data-order-id") != previous
            and css("#order-result").get_attribute("data-order-id")))

    def active_version():
        return css('#plugins tr[data-plugin="stock"]').get_attribute("data-version")

    try:
        step("open the console; admin sections ask for the token")
        driver.get(URL + "/")
        wait_for("the console to report ready", lambda: css("#health").text == "ready")
        wait_for("the plugins table to ask for the admin token",
                 lambda: "admin token" in css("#plugins tbody").text)
        token = css("#admin-token")
        token.send_keys(TOKEN)
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", token)
        wait_for("the stock plugin to be listed", lambda: css('#plugins tr[data-plugin="stock"]'))
        product = "E2E-CONSOLE"
        put_product(product, 100)
        wait_for(f"{product} in the order form", lambda: css(f'#order-product option[value="{product}"]'))
        shot("console")

        step(f"place an order for 2 of {product}; the stock drops by 2")
        before = stock_of(product)
        first = place_order(product, 2)
        wait_for("the order to be APPLIED", lambda: order_status(first) == "APPLIED")
        wait_for(f"the stock of {product} to drop from {before} to {before - 2}",
                 lambda: stock_of(product) == before - 2)
        handled_by = css(f'#orders tr[data-order="{first}"] td:last-child').text
        if not handled_by.startswith("stock@"):
            raise StepFailed(f"the order shows no deciding plugin version: {handled_by!r}")
        shot("order-applied")

        step("swap in a broken stock version through the console")
        good_version = active_version()
        css("#install-file").send_keys(os.path.abspath(BROKEN_PLUGIN))
        css("#install-submit").click()
        wait_for("the broken version to become active", lambda: active_version() != good_version)
        if "install:" not in css("#plugin-result").text:
            raise StepFailed(f"install said: {css('#plugin-result').text!r}")
        shot("plugin-swapped")

        step("an order under the broken version becomes a dead letter and is reported REJECTED; stock stays")
        at_swap = stock_of(product)
        second = place_order(product, 1)
        letter = wait_for("a dead letter for the order", lambda: css('#dead-letters tr[data-state="open"]'))
        letter_id = letter.get_attribute("data-dead-letter")
        click(f'#dead-letters tr[data-dead-letter="{letter_id}"] button.view', "Payload")
        wait_for("the dead letter's payload", lambda: second in css("#dead-letter-view").text)
        if stock_of(product) != at_swap:
            raise StepFailed("the stock changed although the order was dead-lettered")
        # The catalog side reports a dead-lettered order rejected (the redrive may turn it round).
        wait_for("the dead-lettered order to show REJECTED", lambda: order_status(second) == "REJECTED")
        shot("dead-letter")

        step("roll the plugin back from the console")
        click('#plugins tr[data-plugin="stock"] button.rollback', "Roll back")
        wait_for("the good version to be active again", lambda: active_version() == good_version)

        step(f"redrive dead letter {letter_id}; the order applies and the stock drops by 1")
        click(f'#dead-letters tr[data-dead-letter="{letter_id}"] button.redrive', "Redrive")
        wait_for("the redrive to report APPLIED", lambda: "APPLIED" in css("#dead-letter-result").text)
        wait_for("the dead letter to be resolved", lambda: css(
            f'#dead-letters tr[data-dead-letter="{letter_id}"]').get_attribute("data-state") == "resolved")
        wait_for("the redriven order to be APPLIED", lambda: order_status(second) == "APPLIED")
        wait_for(f"the stock of {product} to drop to {at_swap - 1}", lambda: stock_of(product) == at_swap - 1)
        wait_for("the throughput chart to have counted records",
                 lambda: driver.execute_script("return document.getElementById('throughput-chart') !== null"))
        shot("redriven")

        step("swap the broken version in again: after its first orders the guard rolls it back on its own, and says why")
        # The fuzzer, run before on the same server, may have turned the guard off.
        if admin("PUT", "/plugins/stock/guard", {"enabled": True}) != 204:
            raise StepFailed("PUT /plugins/stock/guard did not answer 204")
        css("#install-file").send_keys(os.path.abspath(BROKEN_PLUGIN))
        css("#install-submit").click()
        wait_for("the broken version to become active", lambda: active_version() != good_version)
        for _ in range(GUARD_RECORDS):
            place_order(product, 1)
        wait_for("the guard to roll the broken version back", lambda: active_version() == good_version,
                 timeout=60)
        guard = wait_for("the console to show the guard's rollback", lambda: css(
            '#plugins tr[data-plugin="stock"] [data-guard="rolled-back"]'))
        if "dead letters" not in guard.text:
            raise StepFailed(f"the guard's rollback shows no reason: {guard.text!r}")
        shot("guard-rolled-back")

        step("the API page renders the OpenAPI document")
        driver.get(URL + "/api")
        wait_for("the createOrder operation on the API page", lambda: css("#createOrder"))
        shot("api-page")
    except Exception:
        try:
            shot("failure")
        finally:
            logs = driver.get_log("browser") if hasattr(driver, "get_log") else []
            for entry in logs:
                print(f"    browser: {entry}", file=sys.stderr)
        raise
    finally:
        driver.quit()
    print(f"console test passed: {len(shots)} screenshots in {SHOTS}")


if __name__ == "__main__":
    try:
        main()
    except StepFailed as failure:
        print(f"console test FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
