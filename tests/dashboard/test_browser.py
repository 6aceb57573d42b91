"""The dashboard in a real browser (headless Chromium) against every service: a person
signs in, creates a model, uploads example-model and watches it build, runs it on a PNG
from the Run page and sees the grayscale output; then an API key is made and revoked,
and the person signs out."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from services.embedded.sandbox_setup import check_bwrap
from services.packages import zip_folder
from tests.api._client import EXAMPLE_MODEL, Client, Reply, ready_version
from tests.api.conftest import Stack, running_stack
from tests.dashboard._browser import (
    browser_missing,
    chromium,
    console_errors,
    screenshot,
    wait_for,
)
from tests.dashboard._person import create_user
from tests.notifier._receiver import Receiver

PASSWORD = "a password for the browser"
HOSTILE = Path(__file__).resolve().parents[1] / "packages" / "hostile"
NOOP = Path(__file__).resolve().parents[1] / "packages" / "noop"
HOSTILE_TEXT = "<img src=x onerror=window.__pwned=5><script>window.__pwned=6</script>"
BUILD_TIMEOUT_S = 300  # a first build makes a virtualenv and installs Pillow


@pytest.fixture(scope="module")
def full_stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    reason = browser_missing() or check_bwrap()
    if reason is not None:
        pytest.skip(f"the browser journey needs Chromium and bubblewrap: {reason}")
    env = {**stack_env, "CLINAI_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8"}  # the receiver
    services = ["projector", "api", "builder", "executor", "notifier"]
    with running_stack(env, services) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    reason = browser_missing()
    if reason is not None:
        pytest.skip(reason)
    with chromium() as driver:
        yield driver


def _text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _sign_in(driver: WebDriver, url: str, name: str) -> None:
    driver.get(f"{url}/")
    wait_for(driver, lambda d: d.current_url.startswith(f"{url}/sign-in"))
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    screenshot(driver, "01-sign-in")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(driver, lambda d: d.current_url == f"{url}/models")


async def test_sign_in_upload_build_run_and_see_the_output(
    full_stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    url, name = full_stack.url, f"pat-{uuid.uuid4().hex[:6]}"
    await create_user(url, full_stack.admin_key, name, PASSWORD)
    _sign_in(browser, url, name)

    # Create a model.
    model_name = f"grayscale-{uuid.uuid4().hex[:6]}"
    browser.find_element(By.ID, "model-name").send_keys(model_name)
    browser.find_element(By.ID, "model-description").send_keys("turns images gray")
    screenshot(browser, "02-models")
    browser.find_element(By.CSS_SELECTOR, "#create-model button").click()
    wait_for(browser, lambda d: "/models/mdl_" in d.current_url)
    assert _text(browser, "h1") == model_name
    Select(browser.find_element(By.ID, "model-visibility")).select_by_value("public")
    browser.find_element(By.CSS_SELECTOR, "#model-settings button[type=submit]").click()
    wait_for(browser, lambda d: _text(d, "#visibility") == "public")

    # Upload example-model: the file chooser of the drop zone (a browser test cannot
    # drag a file in from the desktop); progress, then the new version's page.
    package = tmp_path / "example-model.zip"
    package.write_bytes(zip_folder(EXAMPLE_MODEL))
    screenshot(browser, "03-model")
    browser.find_element(By.ID, "package").send_keys(str(package))
    wait_for(browser, lambda d: "/versions/ver_" in d.current_url)

    # The build log fills live until the version is ready.
    wait_for(browser, lambda d: _text(d, "#build-log").strip() != "", BUILD_TIMEOUT_S)
    wait_for(browser, lambda d: "ready" in _text(d, "#version-status"), BUILD_TIMEOUT_S)
    assert "✓" in _text(browser, "#version-status")  # status is a symbol and a word
    assert "built in" in _text(browser, "#build-time")
    wait_for(browser, lambda d: d.find_elements(By.ID, "schema-table"))
    assert "levels" in _text(browser, "#schema-table")
    screenshot(browser, "04-version")

    # Run it on a PNG from the Run page: a form made from the input schema.
    browser.find_element(By.ID, "run-link").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "input-input"))
    image = tmp_path / "red.png"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, format="PNG")
    image.write_bytes(buffer.getvalue())
    browser.find_element(By.ID, "input-input").send_keys(str(image))
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#input-input-preview img"))
    levels = browser.find_element(By.ID, "input-levels")
    assert levels.get_attribute("min") == "2" and levels.get_attribute("max") == "256"
    levels.clear()
    levels.send_keys("7")
    browser.find_element(By.ID, "run-submit").click()
    wait_for(browser, lambda d: "succeeded" in _text(d, "#job-status"), 120)
    assert '"width": 40' in _text(browser, "#job-result")
    output = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "img.output"))[0]
    wait_for(browser, lambda d: d.execute_script("return arguments[0].naturalWidth", output) == 40)
    assert output.get_attribute("alt") == "grayscale.png"
    screenshot(browser, "05-run", full_page=True)
    job_id = _text(browser, "#job-id")

    # The job in the history, with its latency; the filters leave it out or in.
    browser.find_element(By.LINK_TEXT, "Jobs").click()
    row = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]'))
    assert "succeeded" in row[0].text and " s" in row[0].text
    screenshot(browser, "06-jobs")
    browser.get(f"{url}/jobs?status=failed")
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')
    today = datetime.now(UTC).date()
    browser.get(f"{url}/jobs?since={today + timedelta(days=1)}")
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')
    browser.get(f"{url}/jobs?since={today}&status=succeeded")
    row = browser.find_elements(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]')
    assert row

    # Run again with the same inputs: the Run form, filled in with the job's (the file
    # aside: a browser cannot fill one in, and the field says so).
    row[0].find_element(By.CSS_SELECTOR, "a.again").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-refill="input"]'))
    assert browser.find_element(By.ID, "input-levels").get_attribute("value") == "7"
    assert "Choose the file again" in _text(browser, '[data-refill="input"]')
    assert job_id in _text(browser, "#again")
    screenshot(browser, "06-run-again")
    browser.find_element(By.ID, "input-input").send_keys(str(image))
    browser.find_element(By.ID, "run-submit").click()
    wait_for(browser, lambda d: "succeeded" in _text(d, "#job-status"), 120)
    again = _text(browser, "#job-id")
    assert again != job_id
    rerun = await Client(url, full_stack.admin_key).get(f"/v1/jobs/{again}")
    assert rerun.body["inputs"]["levels"] == 7, rerun.body
    assert console_errors(browser) == []


async def test_html_and_script_from_a_model_execute_nothing(
    full_stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    """tests/packages/hostile: its result, output names and log carry HTML and script;
    with the model's description, the pages show them as text."""
    url, name = full_stack.url, f"rex-{uuid.uuid4().hex[:6]}"
    admin = Client(url, full_stack.admin_key)
    made = await admin.post("/v1/users", json={"name": name, "password": PASSWORD})
    owner = Client(url, made.body["api_key"]["secret"])
    await owner.get("/v1/me", params={"after_seq": str(made.body["seq"])})
    model = (
        await owner.post(
            "/v1/models",
            json={"name": f"hostile-{uuid.uuid4().hex[:6]}", "description": HOSTILE_TEXT},
        )
    ).body
    version = await owner.upload(
        f"/v1/models/{model['id']}/versions", "package", "p.zip", zip_folder(HOSTILE)
    )
    assert version.status == 201, version.body
    version_id = version.body["id"]
    await _projected(owner, f"/v1/versions/{version_id}", version)

    _sign_in(browser, url, name)
    browser.get(f"{url}/models/{model['id']}")
    wait_for(browser, lambda d: d.find_elements(By.TAG_NAME, "main"), 5)
    assert HOSTILE_TEXT in _text(browser, "main")  # shown as text
    browser.get(f"{url}/versions/{version_id}")
    wait_for(browser, lambda d: "ready" in _text(d, "#version-status"), BUILD_TIMEOUT_S)
    browser.get(f"{url}/versions/{version_id}/run")
    wait_for(browser, lambda d: d.find_elements(By.ID, "input-input"))
    given = tmp_path / "input.txt"
    given.write_text("hello")
    browser.find_element(By.ID, "input-input").send_keys(str(given))
    browser.find_element(By.ID, "run-submit").click()
    wait_for(browser, lambda d: "succeeded" in _text(d, "#job-status"), 120)
    wait_for(browser, lambda d: _text(d, "#job-log"))
    assert "<script>window.__pwned = 1</script>" in _text(browser, "#job-result")
    assert "<script>window.__pwned = 1</script>" in _text(browser, "#job-log")
    outputs = _text(browser, "#job-outputs")
    assert "<img src=x onerror=window.__pwned=2>.txt" in outputs
    screenshot(browser, "08-hostile", full_page=True)
    assert browser.execute_script("return window.__pwned === undefined")
    browser.get(f"{url}/models")
    assert HOSTILE_TEXT in _text(browser, "#models")
    assert browser.execute_script("return window.__pwned === undefined")
    assert console_errors(browser) == []


async def test_create_and_revoke_an_api_key_then_sign_out(
    full_stack: Stack, browser: WebDriver
) -> None:
    url, name = full_stack.url, f"quin-{uuid.uuid4().hex[:6]}"
    await create_user(url, full_stack.admin_key, name, PASSWORD)
    _sign_in(browser, url, name)
    browser.get(f"{url}/keys")
    browser.set_window_size(390, 844)  # a phone
    screenshot(browser, "07-keys-phone", full_page=True)
    browser.set_window_size(1200, 900)
    key_name = browser.find_element(By.ID, "key-name")
    key_name.clear()
    key_name.send_keys("laptop")
    browser.find_element(By.CSS_SELECTOR, "#create-key button").click()
    secret = wait_for(browser, lambda d: _text(d, "#secret"))
    assert secret.startswith("clinai_")
    screenshot(browser, "07-keys")
    row = browser.find_element(By.CSS_SELECTOR, "#keys tbody tr")
    row.find_element(By.CSS_SELECTOR, "button.revoke").click()
    wait_for(browser, lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, "#keys tbody tr").text)

    browser.find_element(By.ID, "sign-out").click()
    wait_for(browser, lambda d: d.current_url.startswith(f"{url}/sign-in"))
    browser.get(f"{url}/keys")
    wait_for(browser, lambda d: d.current_url.startswith(f"{url}/sign-in"))
    assert console_errors(browser) == []


async def _projected(client: Client, path: str, written: Reply) -> None:
    """Wait until the read models, which the pages are made from, hold what `written`
    (a command's answer) wrote: a page opened sooner says "not found" for good."""
    seen = await client.get(path, params={"after_seq": written.headers["x-clinai-seq"]})
    assert seen.status == 200, seen.body


async def test_create_a_webhook_and_see_a_delivery_listed(
    full_stack: Stack, browser: WebDriver, receiver: Receiver
) -> None:
    url, name = full_stack.url, f"sam-{uuid.uuid4().hex[:6]}"
    admin = Client(url, full_stack.admin_key)
    made = await admin.post("/v1/users", json={"name": name, "password": PASSWORD})
    owner = Client(url, made.body["api_key"]["secret"])
    await owner.get("/v1/me", params={"after_seq": str(made.body["seq"])})
    _sign_in(browser, url, name)
    browser.get(f"{url}/webhooks")
    browser.find_element(By.ID, "hook-url").send_keys(receiver.url("/hooks"))
    browser.find_element(By.ID, "hook-description").send_keys("<b>mine</b>")
    browser.find_element(By.CSS_SELECTOR, "#create-webhook button").click()
    secret = wait_for(browser, lambda d: _text(d, "#webhook-output-value"))
    assert secret.startswith("whsec_")

    # A job of this user's: its events are delivered to the receiver.
    model = (await owner.post("/v1/models", json={"name": f"m-{uuid.uuid4().hex[:6]}"})).body
    version = await owner.upload(
        f"/v1/models/{model['id']}/versions", "package", "p.zip", zip_folder(NOOP)
    )
    assert version.status == 201, version.body
    await _projected(owner, f"/v1/versions/{version.body['id']}", version)
    browser.get(f"{url}/versions/{version.body['id']}")
    wait_for(browser, lambda d: "ready" in _text(d, "#version-status"), BUILD_TIMEOUT_S)
    job = await owner.upload("/v1/jobs", "input", "in.txt", b"hello", version=version.body["id"])
    assert job.status in (201, 202), job.body

    browser.get(f"{url}/webhooks")
    assert "<b>mine</b>" in _text(browser, "section.hook")

    def delivered(driver: WebDriver) -> bool:
        driver.find_element(By.CSS_SELECTOR, "section.hook button.deliveries").click()
        rows = driver.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")
        return any("succeeded" in row.text and "job." in row.text for row in rows)

    # In a thread: the receiver answers on this test's event loop meanwhile.
    await asyncio.to_thread(wait_for, browser, delivered, 60)
    screenshot(browser, "09-webhooks", full_page=True)
    assert console_errors(browser) == []


async def test_the_admin_creates_a_user_and_an_invitation_that_sets_a_password(
    full_stack: Stack, browser: WebDriver
) -> None:
    url, admin_name = full_stack.url, f"root-{uuid.uuid4().hex[:6]}"
    created = await Client(url, full_stack.admin_key).post(
        "/v1/users", json={"name": admin_name, "password": PASSWORD, "is_admin": True}
    )
    await Client(url, full_stack.admin_key).get(
        "/v1/me", params={"after_seq": str(created.body["seq"])}
    )
    _sign_in(browser, url, admin_name)
    browser.find_element(By.LINK_TEXT, "Admin").click()
    newcomer = f"val-{uuid.uuid4().hex[:6]}"
    browser.find_element(By.ID, "user-name").send_keys(newcomer)
    browser.find_element(By.CSS_SELECTOR, "#create-user button").click()
    assert wait_for(browser, lambda d: _text(d, "#admin-output-value")).startswith("clinai_")
    browser.refresh()
    row = wait_for(
        browser,
        lambda d: [
            r for r in d.find_elements(By.CSS_SELECTOR, "#users tbody tr") if newcomer in r.text
        ],
    )[0]
    assert "none" in row.text  # no password yet
    row.find_element(By.CSS_SELECTOR, "button.invite").click()
    link = wait_for(browser, lambda d: _text(d, "#admin-output-value"))
    assert "/invitation#usr_" in link
    user_id = link.partition("#")[2].partition(".")[0]
    Select(browser.find_element(By.ID, "limits-user")).select_by_value(user_id)
    browser.find_element(By.ID, "max-queued").send_keys("7")
    browser.find_element(By.CSS_SELECTOR, "#set-limits button").click()
    wait_for(browser, lambda d: '"max_queued_jobs":7' in _text(d, "#admin-output-value"))
    screenshot(browser, "10-admin", full_page=True)

    browser.get(link)
    browser.find_element(By.ID, "password").send_keys("the newcomer's password")
    browser.find_element(By.CSS_SELECTOR, "#invitation button").click()
    wait_for(browser, lambda d: d.current_url == f"{url}/models")
    assert newcomer in _text(browser, "nav")
    assert console_errors(browser) == []


def _fetch(driver: WebDriver, method: str, path: str, csrf: bool) -> int:
    """The status of a request the page's own script could make, with the session's
    cookie, and with or without its CSRF token."""
    status: int = driver.execute_async_script(
        """
        const [method, path, csrf, done] = arguments;
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const headers = {"Content-Type": "application/json"};
        if (csrf) headers["X-CSRF-Token"] = token;
        fetch(path, {method, headers, credentials: "same-origin",
                     body: method === "GET" ? undefined : JSON.stringify({name: "csrf-less"})})
          .then((r) => done(r.status), () => done(0));
        """,
        method,
        path,
        csrf,
    )
    return status


async def test_a_second_user_reaches_nothing_of_the_first_by_url(
    full_stack: Stack, browser: WebDriver
) -> None:
    """The first user's model, version, job and webhook, asked for by URL by a second
    user signed in in the browser: the not-found page (or the API's 404), and none of
    their data in the page."""
    url = full_stack.url
    admin = Client(url, full_stack.admin_key)
    made = await admin.post("/v1/users", json={"name": f"una-{uuid.uuid4().hex[:6]}"})
    first = Client(url, made.body["api_key"]["secret"])
    await first.get("/v1/me", params={"after_seq": str(made.body["seq"])})
    version_id = await ready_version(first, "noop")
    version = (await first.get(f"/v1/versions/{version_id}")).body
    model_id = version["model_id"]
    model_name = (await first.get(f"/v1/models/{model_id}")).body["name"]
    job = await first.upload("/v1/jobs", "input", "secret-input.txt", b"hello", version=version_id)
    assert job.status in (201, 202), job.body
    job_id = job.body["id"]
    hook = await first.post(
        "/v1/webhooks",
        json={
            "url": "http://127.0.0.1:9/first-users-hook",
            "events": ["job.succeeded"],
            "description": "first's hook",
        },
    )
    assert hook.status == 201, hook.body
    secrets_of_first = (model_name, "secret-input.txt", "first-users-hook", "first's hook")

    second = f"vic-{uuid.uuid4().hex[:6]}"
    await create_user(url, full_stack.admin_key, second, PASSWORD)
    _sign_in(browser, url, second)

    def refused(path: str) -> None:
        browser.get(f"{url}{path}")
        wait_for(browser, lambda d: d.find_elements(By.TAG_NAME, "h1"), 5)
        assert _text(browser, "h1") == "Not found", path
        source = browser.page_source
        assert not [s for s in secrets_of_first if s in source], path

    refused(f"/models/{model_id}")
    refused(f"/versions/{version_id}")
    refused(f"/versions/{version_id}/run#{job_id}")
    refused(f"/versions/{version_id}/run?again={job_id}")
    screenshot(browser, "11-not-yours")

    # Once the model is public, its version and Run page are open to all; its jobs and
    # the first user's webhooks are not.
    public = await first.request("PATCH", f"/v1/models/{model_id}", json={"visibility": "public"})
    assert public.status == 202, public.body
    await first.get(f"/v1/models/{model_id}", params={"after_seq": str(public.body["seq"])})
    run_page = f"/versions/{version_id}/run"
    for path in (f"{run_page}#{job_id}", f"{run_page}?again={job_id}"):
        browser.get(f"{url}{path}")
        wait_for(browser, lambda d: d.find_elements(By.ID, "input-input"))
        if "#" in path:
            wait_for(browser, lambda d: "not found" in _text(d, "#job-status").lower())
        else:
            wait_for(browser, lambda d: "not found" in _text(d, "#again").lower())
        source = browser.page_source
        assert "secret-input.txt" not in source and "hello from run" not in source, path
    browser.get(f"{url}/webhooks")
    assert not [s for s in secrets_of_first if s in browser.page_source]
    assert hook.body["id"] not in browser.page_source
    assert _fetch(browser, "GET", f"/v1/jobs/{job_id}", csrf=True) == 404
    hook_path = f"/v1/webhooks/{hook.body['id']}"
    assert _fetch(browser, "GET", f"{hook_path}/deliveries", csrf=True) == 404
    assert _fetch(browser, "POST", f"{hook_path}/rotate-secret", csrf=True) == 404

    # A state-changing request from the page without the CSRF token: 403, and nothing
    # made; with it, the same request is accepted.
    assert _fetch(browser, "POST", "/v1/models", csrf=False) == 403
    assert _fetch(browser, "DELETE", f"/v1/models/{model_id}", csrf=False) == 403
    assert _fetch(browser, "POST", "/v1/models", csrf=True) == 201


# Form controls without a label: neither a <label> (for= or around it), nor aria-label,
# nor aria-labelledby.
_UNLABELLED = """
return [...document.querySelectorAll("input, select, textarea")]
  .filter((c) => c.type !== "hidden")
  .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label")
                 && !c.getAttribute("aria-labelledby"))
  .map((c) => c.outerHTML);
"""
_POSITIVE_TABINDEX = """
return [...document.querySelectorAll("[tabindex]")].filter((e) => e.tabIndex > 0)
  .map((e) => e.outerHTML);
"""
# The elements that stick out past a phone's screen (none: the page fits; a wide table
# scrolls sideways in its own box, .table-wrap).
_WIDER_THAN_THE_SCREEN = """
const width = document.documentElement.scrollWidth;
if (width <= window.innerWidth + 1) return [];
const out = [...document.querySelectorAll("body *")]
  .filter((e) => !e.parentElement.closest(".table-wrap"))
  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
  .map((e) => e.outerHTML.slice(0, 120));
return out.length ? out : [`the page is ${width} px wide`];
"""
_STATUS_WORDS = {
    "uploaded",
    "building",
    "ready",
    "failed",
    "queued",
    "running",
    "succeeded",
    "canceled",
}


def _tab_reaches(driver: WebDriver, css: str, presses: int = 80) -> bool:
    """Whether Tab, pressed from the top of the page, reaches the element `css` names."""
    target = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.switch_to.active_element == target:
            return True
    return False


def _check_page(driver: WebDriver, name: str, reach: tuple[str, ...] = ()) -> None:
    """Every form field labelled, no positive tabindex, each status a word (not colour
    alone), `reach` reachable by Tab; and a phone-width screenshot of the page."""
    assert driver.execute_script(_UNLABELLED) == [], name
    assert driver.execute_script(_POSITIVE_TABINDEX) == [], name
    for status in driver.find_elements(By.CSS_SELECTOR, ".status"):
        words = set(status.text.split())
        assert words & _STATUS_WORDS, f"{name}: status {status.text!r} has no word"
    for css in reach:
        assert _tab_reaches(driver, css), f"{name}: Tab never reaches {css}"
    size = driver.get_window_size()
    driver.set_window_size(390, 844)  # a phone
    try:
        assert driver.execute_script(_WIDER_THAN_THE_SCREEN) == [], f"{name} is wider than a phone"
        assert screenshot(driver, f"phone-{name}", full_page=True).stat().st_size > 0
    finally:
        driver.set_window_size(size["width"], size["height"])


async def test_every_page_has_labels_words_for_status_keyboard_access_and_fits_a_phone(
    full_stack: Stack, browser: WebDriver
) -> None:
    url, name = full_stack.url, f"wes-{uuid.uuid4().hex[:6]}"
    admin = Client(url, full_stack.admin_key)
    made = await admin.post(
        "/v1/users", json={"name": name, "password": PASSWORD, "is_admin": True}
    )
    owner = Client(url, made.body["api_key"]["secret"])
    await owner.get("/v1/me", params={"after_seq": str(made.body["seq"])})
    version_id = await ready_version(owner, "noop")
    model_id = (await owner.get(f"/v1/versions/{version_id}")).body["model_id"]
    job = await owner.upload("/v1/jobs", "input", "in.txt", b"hello", version=version_id)
    assert job.status in (201, 202), job.body
    await owner.get(f"/v1/jobs/{job.body['id']}", params={"wait": "30"})

    for path, page in (("/sign-in", "sign-in"), ("/invitation", "invitation")):
        browser.get(f"{url}{path}")
        _check_page(browser, page, ("button[type=submit]",))
    _sign_in(browser, url, name)
    pages: list[tuple[str, str, str | None, tuple[str, ...]]] = [
        ("/models", "models", None, ("#create-model button", "#sign-out")),
        (f"/models/{model_id}", "model", None, ("#model-settings button", "#package")),
        (f"/versions/{version_id}", "version", "#schema-table", ("#run-link",)),
        (f"/versions/{version_id}/run#{job.body['id']}", "job", "#job-outputs a", ("#job-again",)),
        (f"/versions/{version_id}/run", "run", "#input-input", ("#run-submit",)),
        ("/jobs", "jobs", None, ("a.again", "#filter-status")),
        ("/keys", "keys", None, ("#create-key button",)),
        ("/webhooks", "webhooks", None, ("#create-webhook button",)),
        ("/admin", "admin", None, ("#create-user button",)),
        ("/account", "account", None, ("form button[type=submit]",)),
        ("/models/mdl_nothing", "not-found", None, ()),
    ]
    for path, page, loaded, reach in pages:
        browser.get(f"{url}{path}")
        wait_for(browser, lambda d: d.find_elements(By.TAG_NAME, "main"), 5)
        if loaded is not None:
            wait_for(browser, lambda d, css=loaded: d.find_elements(By.CSS_SELECTOR, css))
        _check_page(browser, page, reach)
    # Only the not-found page's own 404 is in the console.
    assert [e for e in console_errors(browser) if "mdl_nothing" not in e] == []
