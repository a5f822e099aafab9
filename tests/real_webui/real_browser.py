"""Headless Chromium on the real web UI page, through the harness's own ui.py / ui_forge.py helpers.

Imported only by tests that run (selenium is needed then). Every page also gets a small recorder,
injected before the page's own scripts, that notes each HTTP answer of 400 or more and each failed
gradio queue event: the console alone does not say which request failed or why.
"""

from __future__ import annotations

import sys
import time

from real_harness import HARNESS_LIB

RECORDER = r"""
(function () {
  if (window.__rcRecorder) return;
  window.__rcRecorder = true;
  window.__rcBad = [];
  window.__rcAll = [];
  function note(status, url) {
    window.__rcAll.push(status + " " + url);
    if (status >= 400) window.__rcBad.push(status + " " + url);
  }
  var origFetch = window.fetch;
  window.fetch = function (input, init) {
    var url = typeof input === "string" ? input : (input && input.url) || String(input);
    return origFetch.apply(this, arguments).then(function (r) { note(r.status, url); return r; });
  };
  var origOpen = XMLHttpRequest.prototype.open, origSend = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) { this.__rcUrl = url; return origOpen.apply(this, arguments); };
  XMLHttpRequest.prototype.send = function () {
    var x = this;
    x.addEventListener("loadend", function () { note(x.status, x.__rcUrl); });
    return origSend.apply(this, arguments);
  };
  var OrigWS = window.WebSocket;
  function WS(url, protocols) {
    var ws = protocols === undefined ? new OrigWS(url) : new OrigWS(url, protocols);
    ws.addEventListener("message", function (e) {
      try {
        var m = JSON.parse(e.data);
        if (m && m.msg === "process_completed" && m.success === false) {
          window.__rcBad.push("queue event failed: " + JSON.stringify(m.output || m).slice(0, 400));
        }
      } catch (err) { /* not JSON */ }
    });
    return ws;
  }
  WS.prototype = OrigWS.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (k) { WS[k] = OrigWS[k]; });
  window.WebSocket = WS;
})();
"""


def ui_module(flavor: str):
    """The harness's selenium helpers: ui.py, or ui_forge.py (gradio 4 pages) for Forge."""
    for p in (str(HARNESS_LIB), str(HARNESS_LIB / "forge")):
        if p not in sys.path:
            sys.path.insert(0, p)
    if flavor in ("forge", "forgeneo"):  # gradio 4 pages
        import ui_forge

        return ui_forge
    import ui

    return ui


def driver(flavor: str):
    ui = ui_module(flavor)
    d = ui.driver()
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
    return d


def bad_requests(d, clear: bool = True) -> list[str]:
    """HTTP answers >= 400 and failed queue events since the page loaded (or since the last call)."""
    try:
        out = d.execute_script("var b = window.__rcBad || []; if (arguments[0]) window.__rcBad = []; return b;",
                               clear)
    except Exception:  # noqa: BLE001 - the page is reloading
        return []
    return list(out or [])


def severe_console(ui, d) -> list[str]:
    return [line for line in ui.console(d) if line.startswith("SEVERE")]


def error_badges(d, within: str) -> list[str]:
    """gradio's per-component 'Error' status badges and error toasts inside `within`."""
    return d.execute_script(
        """
        var root = document.querySelector(arguments[0]) || document;
        var out = [];
        root.querySelectorAll('.error, .toast-body.error, [data-testid="error"]').forEach(function (e) {
          var t = (e.textContent || '').trim();
          if (t && /error/i.test(t)) {
            var block = e.closest('[id]');
            out.push((block ? '#' + block.id + ': ' : '') + t.slice(0, 200));
          }
        });
        document.querySelectorAll('.toast-body.error').forEach(function (e) {
          out.push('toast: ' + (e.textContent || '').trim().slice(0, 200));
        });
        return out;
        """, within) or []


def wait_js(d, script: str, timeout: float, what: str, *args):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = d.execute_script(script, *args)
        except Exception as e:  # noqa: BLE001 - the page is reloading
            last = f"{type(e).__name__}: {e}"
        if last and not (isinstance(last, str) and last.startswith(("StaleElement", "JavascriptException"))):
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def set_txt2img(ui, d, prompt: str, *, steps: int = 4, width: int = 64, height: int = 64, seed: int = 1,
                batch_count: int = 1, batch_size: int = 1) -> None:
    ui.set_text(d, "#txt2img_prompt textarea", prompt)
    for sel, v in (("#txt2img_steps input[type=number]", steps), ("#txt2img_width input[type=number]", width),
                   ("#txt2img_height input[type=number]", height), ("#txt2img_seed input", seed),
                   ("#txt2img_batch_count input[type=number]", batch_count),
                   ("#txt2img_batch_size input[type=number]", batch_size)):
        ui.set_number(d, sel, v)
    time.sleep(1)


def generate_txt2img(ui, d, prompt: str, timeout: float = 900, **kw) -> str:
    """Fill the txt2img form, press Generate, return the new infotext once the generation is done."""
    from selenium.webdriver.common.by import By

    set_txt2img(ui, d, prompt, **kw)
    before = d.find_element(By.CSS_SELECTOR, "#html_info_txt2img").text
    ui.click(d, "#txt2img_generate")
    end = time.time() + timeout
    while time.time() < end:
        info = d.find_element(By.CSS_SELECTOR, "#html_info_txt2img").text
        if info and info != before and "Steps:" in info:
            return info
        time.sleep(2)
    raise AssertionError(f"txt2img did not finish within {timeout:.0f}s")


def panel(d, tab: str = "txt2img") -> dict:
    """What the replicheck panel under the gallery shows: state, cards (index, verdict), text."""
    return d.execute_script(
        """
        var root = typeof gradioApp === 'function' ? gradioApp() : document;
        var p = root.querySelector('#replicheck_panel_' + arguments[0]);
        if (!p) return {present: false, state: null, cards: [], text: ''};
        var inner = p.querySelector('.rc-panel');
        var cards = Array.prototype.map.call(p.querySelectorAll('.rc-card'), function (c) {
          return [c.getAttribute('data-index'), c.getAttribute('data-verdict'), (c.textContent || '').trim()];
        });
        return {present: true, state: inner ? inner.getAttribute('data-state') : null, cards: cards,
                text: (p.textContent || '').trim()};
        """, tab)


def wait_panel(d, tab: str, done, timeout: float, what: str) -> dict:
    """Poll the panel until `done(panel)` is true."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = panel(d, tab)
        if done(last):
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for the panel to show {what}; it shows: {last!r}")


def textbox_by_label(d, label: str, within: str = "body"):
    """The textarea/input of the visible gradio textbox whose label starts with `label` (gradio 3
    and 4 both put the input inside its label)."""
    from selenium.webdriver.common.by import By

    for lab in d.find_elements(By.CSS_SELECTOR, f"{within} label"):
        if lab.is_displayed() and lab.text.strip().startswith(label):
            els = lab.find_elements(By.CSS_SELECTOR, "textarea, input")
            if els:
                return els[0]
    raise LookupError(f"no visible textbox labelled {label!r} in {within}")


def install_from_url(ui, d, url: str, timeout: float = 900) -> str:
    """Extensions -> Install from URL -> Install, with ui.py's helpers only (AUTOMATIC1111 and
    Forge alike); returns the text of the result box."""
    from selenium.webdriver.common.by import By

    ui.tab(d, "Extensions")
    ui.tab(d, "Install from URL", nav="#tabs_extensions > .tab-nav")
    box = textbox_by_label(d, "URL for extension's git repository", "#tabs_extensions")
    box.clear()
    box.send_keys(url)
    time.sleep(1)
    d.execute_script("arguments[0].click()", ui.button(d, "Install", "#tabs_extensions"))
    end = time.time() + timeout
    while time.time() < end:
        text = d.find_element(By.CSS_SELECTOR, "#extension_install_result").text.strip()
        if text:
            return text
        time.sleep(2)
    raise AssertionError(f"no install result within {timeout:.0f}s")


def choose(d, elem_id: str, value: str) -> str:
    """Pick `value` in the gradio dropdown `#elem_id` by typing it and pressing Enter; returns what
    the dropdown then shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = d.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click()", box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value)
    time.sleep(1)
    box.send_keys(Keys.ENTER)
    time.sleep(1)
    return box.get_attribute("value")
