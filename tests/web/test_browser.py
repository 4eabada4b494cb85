"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, driven
by Selenium), against ``bakery serve`` with simulated Pis in netns mode: sign in, see the
fleet, bake a Pi from its page and watch its timeline fill live until its userspace is
up, unbake it; upload a bakeform with its progress, make a disk. A screenshot of each
page goes to ``test-artifacts/screenshots`` (``BAKERY_TEST_ARTIFACTS`` moves it)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakery.sim.image import build_sd_image, fleet_boot_files
from bakery.sim.network import NETNS_TOOLS
from bakery.sim.runner import SimulatedSite, SiteOptions

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.tools(*NETNS_TOOLS, "chromium", "chromedriver"),
]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BAKERY_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
#: Chromium as the machine allows it: no sandbox as root, and none of its own traffic
#: (update checks, sync) on a machine with a closed network.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[SimulatedSite]:
    work = tmp_path_factory.mktemp("dashboard")
    options = SiteOptions(
        root=work / "data",
        workdir=work / "site",
        pis=2,
        models=["4B"],
        mode="netns",
        power_on_gap=0,
    )
    with SimulatedSite(options) as running:
        yield running


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait_for(driver: webdriver.Chrome, css: str, seconds: float = 30, text: str = ""):
    """The first element matching ``css`` (containing ``text``), once it is there."""

    def found(_driver):
        for element in driver.find_elements(By.CSS_SELECTOR, css):
            if text in element.text:
                return element
        return False

    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(
        found, message=f"no {css} with {text!r} within {seconds} s"
    )


def sign_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    """Sign in from the front page; returns once the answer to the form has loaded."""
    driver.get(url + "/")
    wait_for(driver, "#token").send_keys(token)
    submit(driver, driver.find_element(By.ID, "sign-in"))


def submit(driver: webdriver.Chrome, button: WebElement) -> None:
    """Click a form's button; returns once the page its answer loads has replaced this
    one (reading the old page meanwhile would find the last answer's message, or lose it
    half-read as the page goes)."""
    button.click()
    WebDriverWait(driver, 30, poll_frequency=0.1).until(staleness_of(button))


def flash(driver: webdriver.Chrome) -> str:
    return wait_for(driver, "p.flash").text


def test_an_operator_bakes_a_pi_watches_it_boot_live_and_unbakes_it(site, browser):
    url = site.server.url
    browser.get(url + "/")
    assert browser.title == "Sign in · Bakery"
    screenshot(browser, "sign-in")

    sign_in(browser, url, "bky_" + "x" * 43)
    assert wait_for(browser, "#sign-in-error").text == "invalid or revoked token"
    assert browser.title == "Sign in · Bakery"

    sign_in(browser, url, site.server.token)
    wait_for(browser, "#fleet li.pi")
    tiles = browser.find_elements(By.CSS_SELECTOR, "#fleet li.pi")
    assert sorted(tile.get_attribute("data-serial") for tile in tiles) == sorted(
        pi.serial for pi in site.pis
    )
    assert all("state-available" in tile.get_attribute("class") for tile in tiles)
    screenshot(browser, "fleet")

    pi = site.pis[0]
    browser.find_element(By.CSS_SELECTOR, f'li[data-serial="{pi.serial}"] a').click()
    Select(wait_for(browser, "#bakeform")).select_by_visible_text("demo")
    submit(browser, browser.find_element(By.ID, "bake"))
    assert flash(browser).startswith(f"baked demo onto {pi.serial} as bake ")
    assert wait_for(browser, "#timeline").get_attribute("data-live") == "yes"

    up = wait_for(browser, "#timeline tbody tr", 60, text="userspace up")
    assert "fresh" in up.get_attribute("class")  # came over the live stream, not a reload
    files = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#timeline tr.fresh")]
    assert any("start4.elf" in row for row in files) and any("cmdline.txt" in row for row in files)
    assert pi.state == "booted"
    wait_for(browser, '#pi-head [data-field="boot"]', text="up")
    screenshot(browser, "pi-booted")

    browser.refresh()
    bars = browser.find_elements(By.CSS_SELECTOR, "#boot-chart rect[class^=phase-]")
    assert {bar.get_attribute("class") for bar in bars} >= {"phase-0", "phase-1", "phase-2"}
    screenshot(browser, "pi-boot-chart")

    submit(browser, browser.find_element(By.XPATH, "//button[text()='Unbake']"))
    assert flash(browser).endswith(f"{pi.serial} is free")
    assert "available" in wait_for(browser, '#pi-head [data-field="state"]').text
    assert site.api.get(f"/pis/{pi.serial}")["state"] == "available"


#: Keeps each status the upload form shows, with its progress bar's value then, in the
#: tab's sessionStorage: the page reloads when the upload is done, and what it showed on
#: the way is read after.
RECORD_UPLOAD_STATUS = """
const progress = document.getElementById("upload-progress");
const status = document.getElementById("upload-status");
sessionStorage.setItem("upload-shown", "[]");
new MutationObserver((changes) => {
  const shown = JSON.parse(sessionStorage.getItem("upload-shown"));
  for (const change of changes) {
    for (const node of change.addedNodes) {
      shown.push([progress.value, node.textContent]);
    }
  }
  sessionStorage.setItem("upload-shown", JSON.stringify(shown));
}).observe(status, {childList: true});
"""


def test_a_bakeform_uploads_with_its_progress_and_a_disk_is_made(site, browser, tmp_path):
    image = build_sd_image(tmp_path / "uploaded.img", boot=fleet_boot_files())
    sign_in(browser, site.server.url, site.server.token)
    wait_for(browser, "header nav a", text="Bakeforms").click()
    wait_for(browser, "#upload-name").send_keys("uploaded")
    browser.find_element(By.ID, "upload-file").send_keys(str(image))
    browser.execute_script(RECORD_UPLOAD_STATUS)
    browser.find_element(By.ID, "upload-button").click()

    wait_for(browser, 'tr[data-name="uploaded"]', 60)  # the page reloads once it is ready
    shown = browser.execute_script("return JSON.parse(sessionStorage.getItem('upload-shown'))")
    assert [100, "uploaded; extracting on the server…"] in shown, shown
    assert shown[-1] == [100, "bakeform uploaded is ready"], shown
    uploading = [text for _, text in shown if text.startswith("uploading")]
    assert all(re.fullmatch(r"uploading \d{1,3} %", text) for text in uploading), shown
    assert [value for value, _ in shown] == sorted(value for value, _ in shown), shown
    assert [form["name"] for form in site.api.get("/bakeforms")] == ["demo", "uploaded"]
    screenshot(browser, "bakeforms")

    wait_for(browser, "header nav a", text="Bakes").click()
    wait_for(browser, "#bakes")
    screenshot(browser, "bakes")

    wait_for(browser, "header nav a", text="Disks").click()
    wait_for(browser, "#disk-size").send_keys("64")
    submit(browser, browser.find_element(By.ID, "create-disk"))
    assert flash(browser).startswith("created disk ")
    (disk,) = site.api.get("/disks")
    wait_for(browser, f'#disks tr[data-id="{disk["id"]}"]')
    screenshot(browser, "disks")
    submit(browser, browser.find_element(By.XPATH, f'//tr[@data-id="{disk["id"]}"]//button'))
    assert flash(browser) == f"deleted disk {disk['id']}"


def test_a_read_only_token_sees_no_action_and_its_posts_are_refused(site, browser):
    watcher = site.api.post("/tokens", {"name": "watcher", "role": "viewer"})["token"]
    pi = site.pis[1]
    sign_in(browser, site.server.url, watcher)
    for page in ("/", f"/pis/{pi.serial}", "/bakeforms", "/bakes", "/disks"):
        browser.get(site.server.url + page)
        wait_for(browser, "main h1")
        assert browser.find_elements(By.CSS_SELECTOR, "main form") == [], page
    screenshot(browser, "viewer-pi")

    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector('form.sign-out input[name=csrf_token]').value;
        const body = new URLSearchParams({csrf_token: csrf, action: "on"});
        fetch(arguments[0], {method: "POST", body: body, redirect: "manual"})
            .then((answer) => done(answer.status));
        """,
        f"/pis/{pi.serial}/power",
    )

    assert status == 403
    assert site.api.get(f"/pis/{pi.serial}/events", limit=5)[-1]["kind"] != "power"
