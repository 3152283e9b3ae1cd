"""JupyterLab as a user meets it (`make lab`): the server from the project's environment, Debian's
Chromium driven headless by Selenium through Debian's chromedriver, `01_train` opened, its kernel
the project's, every cell run at smoke size, no error, a figure and a widget progress bar drawn.
`make test` installs Chromium and chromedriver (`make browser`); the screenshot is kept in the
test's temporary folder (``lab.png``)."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from notebook_copy import SMALL, copy_repository, python_path
from xai_utils.pipeline.local_cluster import free_port, port_open

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
KERNEL = "Python 3 (xai_utils)"          # the kernel `make setup` installs in the environment


def _until(condition, timeout: float, what: str, every: float = 0.5):
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 with a token, in the copy's ``notebooks/`` as `make lab`
    starts it; its configuration and runtime files in the temporary folder."""
    repo = copy_repository(tmp_path / "repo")
    home = tmp_path / "jupyter"
    env = {**os.environ, "PYTHONPATH": python_path(repo), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings")}
    for name in ("XAI_RESULTS", "XAI_FIGURES", "XAI_CONFIG_DIR"):
        env.pop(name, None)
    news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))      # no question about Jupyter's news feed
    port, token = free_port(), secrets.token_hex(16)
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly", *(["--allow-root"] if os.geteuid() == 0 else []),
         str(repo / "notebooks")],
        cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    try:
        _until(lambda: port_open(port) or server.poll() is not None, 120, "the JupyterLab server")
        assert server.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
        yield repo, url, token
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium through chromedriver, both Debian's (no driver or browser is fetched)."""
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "Chromium is missing: run `make browser` (Debian's " \
                                                          "chromium and chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log")))
    try:
        yield driver
    finally:
        driver.quit()


def _prompts(driver) -> list[str]:
    """The input prompt of every code cell: ``[ ]:`` not run, ``[*]:`` queued or running, ``[3]:`` done."""
    return [p.text.strip() for p in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]


def test_jupyterlab_runs_the_training_notebook_in_a_browser(lab, browser, tmp_path):
    repo, url, token = lab
    notebook = repo / "notebooks" / "01_train.ipynb"
    # the smoke run, smaller: the parameters cell edited as a user would (paths keep their defaults)
    text = notebook.read_text()
    notebook.write_text(text.replace('"overrides = {}', '"overrides = ' + json.dumps(repr(SMALL))[1:-1], 1))
    assert "train_subset" in notebook.read_text()

    browser.get(f"{url}/lab/tree/01_train.ipynb?token={token}")
    kernel = _until(lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".jp-Toolbar-kernelName")
                             if e.text.strip() not in ("", "No Kernel", "Kernel")], 120, "the notebook's kernel")
    assert kernel[0].strip() == KERNEL
    _until(lambda: len(_prompts(browser)) > 3, 60, "the notebook's cells")
    _until(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
           or "Idle" in browser.find_element(By.CSS_SELECTOR, ".jp-Toolbar").get_attribute("innerHTML"),
           60, "an idle kernel")

    # Run > Run All Cells, through the menu bar
    menu = _until(lambda: [m for m in browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                           if m.text.strip() == "Run"], 30, "the Run menu")
    menu[0].click()
    _until(lambda: [i for i in browser.find_elements(By.CSS_SELECTOR, "li.lm-Menu-item[data-type='command']")
                    if i.text.strip().startswith("Run All Cells")], 30, "Run All Cells")[0].click()

    def finished() -> bool:
        prompts = _prompts(browser)
        errors = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        if any("Traceback" in e.text or "Error" in e.text for e in errors):
            raise AssertionError("a cell failed: " + " | ".join(e.text[-500:] for e in errors))
        return bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
    _until(finished, 400, "every cell to run", every=2)
    browser.save_screenshot(str(tmp_path / "lab.png"))

    # a figure drawn in the page, and the training's progress bar as a widget, not text
    images = browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
    assert images and all(img.get_property("naturalWidth") > 100 for img in images)
    assert browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-progress, "
                                                  ".jp-OutputArea-output .jupyter-widgets")
    # the run landed in the (copy of the) repository's results/, not beside the notebook
    run = repo / "results" / "smoke" / "shapes" / "ce" / "seed0"
    assert (run / "model.pt").is_file() and (run / "train_summary.json").is_file()
    assert not (repo / "notebooks" / "results").exists()
    assert (tmp_path / "lab.png").stat().st_size > 10_000
