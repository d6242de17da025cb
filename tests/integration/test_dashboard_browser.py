"""The web dashboard, driven in headless Chromium against a real running stack.

Submits the demo sweep through the form, watches it finish, and checks the charts, tables and the
authenticated result download. Chromium and chromedriver are the system's (scripts/setup.sh installs
them); nothing is downloaded from the internet. Skips only when they are not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT
from tests.support.stack import Service

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ARTIFACTS = ROOT / "test-artifacts"
SWEEP = "0,0.2,0.3"
JOB_TIMEOUT_S = 600


def _which_chromium() -> tuple[str | None, str | None]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return browser, driver


def _chromium() -> tuple[str, str]:
    """The system's Chromium and chromedriver (scripts/setup.sh installs them); skip without them."""
    browser, driver = _which_chromium()
    if browser is None or driver is None:
        pytest.skip("Chromium and chromedriver are not installed (scripts/setup.sh test installs them)")
    return browser, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium, chromedriver = _chromium()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    profile = tempfile.mkdtemp(prefix="pb-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1440,1000",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch drivers
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.downloads = downloads
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # stale elements while the page re-renders
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


def _testid(driver: Any, testid: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def _set_key(driver: Any, key: str) -> None:
    from selenium.webdriver.common.by import By

    # The page opens the key panel by itself when its first API call answers 401, possibly just as we
    # click the toggle (which would close it again): click until the field shows, at most a few times.
    field = driver.find_element(By.ID, "api-key")
    for _ in range(5):
        if field.is_displayed():
            break
        driver.find_element(By.ID, "settings-toggle").click()
        time.sleep(0.5)
    field.clear()
    field.send_keys(key)
    _testid(driver, "save-key")[0].click()


def _js_errors(driver: Any) -> list[str]:
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]


def _screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def test_root_redirects_to_dashboard_with_strict_csp(service: Service) -> None:
    response = httpx.get(f"{service.url}/", follow_redirects=True)
    assert response.status_code == 200
    assert str(response.url).endswith("/ui/")
    assert "text/html" in response.headers["content-type"]
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "http" not in csp
    for name in ("js/app.js", "js/api.js", "js/charts.js", "js/views/result/index.js", "style.css"):
        asset = httpx.get(f"{service.url}/ui/{name}")
        assert asset.status_code == 200, name
        # No external resources: the hosts have no internet.
        assert "https://" not in asset.text and "http://" not in asset.text.replace("http://www.w3.org/2000/svg", "")
    assert httpx.get(f"{service.url}/ui/..%2Fdashboard.py").status_code == 404


def test_missing_key_shows_problem(service: Service, browser: Any) -> None:
    if httpx.get(f"{service.url}/v1/jobs").status_code != 401:
        pytest.skip("this stack runs without authentication")
    browser.get(f"{service.url}/ui/#/jobs")
    browser.execute_script("sessionStorage.clear(); location.reload();")
    box = _wait(lambda: next((e for e in _testid(browser, "error") if e.is_displayed()), None), 20, "problem box")
    assert "401" in box.text


def _final_status(browser: Any) -> str:
    """The status the open job page shows once the job has ended."""
    status: str = _wait(
        lambda: (
            (s := _testid(browser, "job-status")[0].get_attribute("data-status")) in ("succeeded", "failed", "canceled")
            and s
        ),
        JOB_TIMEOUT_S,
        "the job to finish",
        interval=1.0,
    )
    return status


def test_submit_sweep_and_watch_it_complete(service: Service, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service.url}/ui/")
    _set_key(browser, service.api_key)
    browser.get_log("browser")  # drop what happened before the key was set

    browser.get(f"{service.url}/ui/#/submit")
    browser.refresh()
    checkpoint = _wait(lambda: _testid(browser, "checkpoint-select")[0], 20, "submit form")
    _wait(
        lambda: any(o.get_attribute("data-name") == "yolov5n_shapes.pt" for o in Select(checkpoint).options),
        30,
        "the builtin checkpoint in the list",
    )
    option = next(o for o in Select(checkpoint).options if o.get_attribute("data-name") == "yolov5n_shapes.pt")
    Select(checkpoint).select_by_value(option.get_attribute("value"))
    dataset = _testid(browser, "dataset-select")[0]
    _wait(lambda: any(o.get_attribute("value") == "shapes-val" for o in Select(dataset).options), 20, "datasets")
    Select(dataset).select_by_value("shapes-val")
    for testid, value in (("sparsities-input", SWEEP), ("img-size-input", "256"), ("max-images-input", "24")):
        field = _testid(browser, testid)[0]
        field.clear()
        field.send_keys(value)
    _testid(browser, "use-cache")[0].click()  # a fresh evaluation, not a cached answer
    _screenshot(browser, "dashboard-submit.png")
    _testid(browser, "submit-job")[0].click()

    _wait(lambda: "#/jobs/" in browser.current_url, 30, "the job page")
    job_id = browser.current_url.split("#/jobs/")[1].split("?")[0]
    status = _final_status(browser)
    if status != "succeeded":
        _screenshot(browser, "dashboard-failed.png")
    assert status == "succeeded", f"job {job_id} ended {status}"

    points = _wait(lambda: (p := _testid(browser, "map-point")) and len(p) == 3 and p, 30, "3 mAP points")
    assert sorted(float(p.get_attribute("data-x")) for p in points) == [0.0, 0.2, 0.3]
    assert all(0.0 <= float(p.get_attribute("data-y")) <= 1.0 for p in points)
    assert len(_testid(browser, "map50-point")) == 3
    assert len(_testid(browser, "latency-point")) == 3
    assert len(_testid(browser, "run-row")) == 3
    assert _testid(browser, "layer-bar"), "per-layer sparsity chart is empty"
    env = _testid(browser, "environment")[0].text
    assert "torch" in env

    # The result JSON download goes through fetch with the bearer key.
    _testid(browser, "download-result")[0].click()
    saved = _wait(
        lambda: next((p for p in browser.downloads.glob("*.json") if p.stat().st_size > 0), None), 30, "download"
    )
    downloaded = json.loads(saved.read_text())
    assert downloaded["job_id"] == job_id and len(downloaded["runs"]) == 3

    browser.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    shot = _screenshot(browser, "dashboard-job.png")
    if os.environ.get("PRUNEBENCH_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")

    # The jobs list shows it as succeeded, with nothing left to cancel.
    browser.get(f"{service.url}/ui/#/jobs")
    row = _wait(
        lambda: next((r for r in _testid(browser, "job-row") if r.get_attribute("data-job-id") == job_id), None),
        20,
        "the job in the list",
    )
    assert row.get_attribute("data-status") == "succeeded"
    _screenshot(browser, "dashboard-jobs.png")
    assert _js_errors(browser) == []


def test_cancel_from_the_jobs_list(service: Service, browser: Any) -> None:
    body = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsities": [0.1, 0.3, 0.5, 0.7, 0.9]}
    headers = {"Authorization": f"Bearer {service.api_key}"}
    response = httpx.post(f"{service.url}/v1/jobs", json={**body, "use_cache": False}, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    browser.get(f"{service.url}/ui/")
    _set_key(browser, service.api_key)
    browser.get(f"{service.url}/ui/#/jobs")

    def cancel_button() -> Any:
        for row in _testid(browser, "job-row"):
            if row.get_attribute("data-job-id") == job_id:
                buttons = row.find_elements("css selector", '[data-testid="cancel-job"]')
                return buttons[0] if buttons else None
        return None

    with contextlib.suppress(Exception):
        _wait(cancel_button, 20, "the cancel button").click()
    final = _wait(
        lambda: (
            (s := httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=headers).json()["status"])
            in ("canceled", "succeeded", "failed")
            and s
        ),
        120,
        "the job to stop",
        interval=0.5,
    )
    assert final == "canceled"
    _wait(
        lambda: any(
            r.get_attribute("data-job-id") == job_id and r.get_attribute("data-status") == "canceled"
            for r in _testid(browser, "job-row")
        ),
        10,
        "the list to show the cancellation",
    )


def _finished_job_page(service: Service, browser: Any, job_id: str) -> None:
    browser.get(f"{service.url}/ui/#/jobs/{job_id}")
    status = _final_status(browser)
    assert status == "succeeded", f"job {job_id} ended {status}"


def test_recovery_options_and_pruned_vs_recovered_curves(service: Service, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    browser.get(f"{service.url}/ui/")
    _set_key(browser, service.api_key)
    browser.get_log("browser")
    browser.get(f"{service.url}/ui/#/submit")
    browser.refresh()
    method = _wait(lambda: _testid(browser, "method-select")[0], 20, "submit form")
    options = _testid(browser, "channel-options")[0]
    assert not options.is_displayed()  # channel options only for the channel method
    Select(method).select_by_value("channel")
    assert options.is_displayed()
    Select(_testid(browser, "importance-select")[0]).select_by_value("bn_scale")
    _testid(browser, "recovery-bias_compensation")[0].click()
    _testid(browser, "recovery-bn_recalibration")[0].click()
    for testid, value in (
        ("sparsities-input", "0,0.3"),
        ("img-size-input", "128"),
        ("max-images-input", "8"),
        ("calibration-images-input", "8"),
    ):
        field = _testid(browser, testid)[0]
        field.clear()
        field.send_keys(value)
    _testid(browser, "use-cache")[0].click()
    _testid(browser, "submit-job")[0].click()
    _wait(lambda: "#/jobs/" in browser.current_url, 30, "the job page")
    job_id = browser.current_url.split("#/jobs/")[1].split("?")[0]
    _finished_job_page(service, browser, job_id)

    pruned = _wait(lambda: (p := _testid(browser, "pruned-map-point")) and len(p) == 2 and p, 30, "pruned points")
    recovered = _testid(browser, "recovered-map-point")
    assert (
        [float(p.get_attribute("data-x")) for p in pruned]
        == [0.0, 0.3]
        == [float(p.get_attribute("data-x")) for p in recovered]
    )
    headers = {"Authorization": f"Bearer {service.api_key}"}
    result = httpx.get(f"{service.url}/v1/jobs/{job_id}/result", headers=headers).json()
    report = result["runs"][1]["recovery"]
    assert (
        report["applied"] == ["bias_compensation", "bn_recalibration"]
        and result["settings"]["importance"] == "bn_scale"
    )
    assert float(recovered[1].get_attribute("data-y")) == pytest.approx(report["map_after"])
    assert not _testid(browser, "loss-chart")  # no fine-tuning, no loss curve

    # A fine-tuned point adds the loss curve, one point per epoch.
    body = {"checkpoint": "yolov5n_shapes.pt", "dataset": "shapes-val", "sparsity": 0.3, "method": "channel"}
    body |= {"img_size": 128, "max_images": 8, "include_dense": False}
    body["finetune"] = {"dataset": "shapes-train-mini", "epochs": 2, "img_size": 64, "batch_size": 8, "max_images": 8}
    response = httpx.post(f"{service.url}/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    _finished_job_page(service, browser, response.json()["id"])
    losses = _wait(lambda: (p := _testid(browser, "loss-point")) and len(p) == 2 and p, 30, "loss points")
    assert [float(p.get_attribute("data-x")) for p in losses] == [1.0, 2.0]
    _screenshot(browser, "dashboard-recovery.png")
    assert _js_errors(browser) == []
