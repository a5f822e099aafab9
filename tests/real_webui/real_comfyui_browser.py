"""Headless Chromium on ComfyUI's page (selenium; imported only by the test that uses it): load an API-format
workflow into the page's graph as a user's drop of the file does (app.loadApiJson), queue it, read the page."""

from __future__ import annotations

import json


def chromium():
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(a)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def open_comfyui(driver, url: str, timeout: float = 300) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_script_timeout(timeout)
    driver.get(url + "/")
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return !!(window.app && window.app.graph && window.app.extensionManager)"))


def queue_api_workflow(driver, prompt: dict) -> None:
    driver.execute_async_script("""
        const [api, done] = arguments;
        (async () => {
          await window.app.loadApiJson(api, "replicheck.json");
          await window.app.queuePrompt(0, 1);
          done(true);
        })().catch((e) => done(String(e)));
    """, prompt)


def save_view(driver, png_path: str, workflow_path: str | None = None) -> None:
    """A screenshot of the page, and the page's workflow (the UI format ComfyUI saves) when asked."""
    driver.execute_script("window.app.canvas.ds.offset = [40, 40]; window.app.canvas.ds.scale = 1;"
                          "window.app.graph.setDirtyCanvas(true, true);")
    driver.save_screenshot(png_path)
    if workflow_path:
        data = driver.execute_script("return window.app.graph.serialize();")
        with open(workflow_path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")


def console_errors(driver) -> list[str]:
    """The page's console errors that concern replicheck (ComfyUI's own offline noise is left out)."""
    return [e["message"] for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and "replicheck" in e.get("message", "").lower()]
