"""The chip's web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

One module-scoped server (API key, one start-up adapter, an adapter folder with another) and one browser
session. The test run saves screenshots at 1280x800 and 390x844 and prints the folder they are in.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from dse_helpers import write_spec
from serve_helpers import RunningServer, peft_adapter, real_tokenizer, tiny_image

from romachip.cli.main import main
from romachip.dse import LocalExecutor, SweepPlan, load_results, load_sweep_spec, run_sweep
from romachip.dse.answer import analyse
from romachip.serve import ServeConfig
from romachip.serve.sweep_page import create_sweep_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no headless Chromium here: `apt-get install chromium chromium-driver` (.ci/run installs them)",
)
KEY = "sk-romachip-web"
PROMPT = "What does the ROM hold?"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("web")
    image = tiny_image(root / "tiny.rom", real_tokenizer())
    alpha = peft_adapter(root / "alpha", 1)
    allowed = root / "allowed"
    allowed.mkdir()
    peft_adapter(allowed / "gamma", 3, r=8, target_modules=["o_proj", "up_proj"])
    config = ServeConfig(image=image.path, adapters=(("alpha", alpha),), adapter_dir=allowed, api_key=KEY,
                         max_tokens=32)  # fmt: skip
    server = RunningServer(config)
    yield {"root": root, "image": image, "alpha": alpha, "server": server}
    server.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory, request) -> Path:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("web-screenshots")
    yield folder
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # printed even without -s: a person looks at them
        print(f"\nweb page screenshots (1280x800, 390x844): {folder}")


@pytest.fixture(scope="module")
def browser(world, tmp_path_factory):  # noqa: ANN001, ANN201
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    downloads = tmp_path_factory.mktemp("downloads")  # the sweep page's export downloads a file
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})  # fmt: skip
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(WAIT_S)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.get(world["server"].url + "/")
    yield driver
    driver.quit()


def _wait(driver, what, timeout_s: float = WAIT_S):  # noqa: ANN001, ANN202
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page redraws lists after each change: an element read mid-redraw is read again
    wait = WebDriverWait(driver, timeout_s, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(lambda d: what(d))


def _by_css(driver, css: str):  # noqa: ANN001, ANN202
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def _visible_error(driver) -> str:  # noqa: ANN001
    box = _by_css(driver, "#error")[0]
    return box.text if box.is_displayed() else ""


def _sram(driver) -> dict[str, int]:  # noqa: ANN001
    """Bytes per kind of segment of the SRAM bar, as drawn (read in one script: the bar may be redrawn)."""
    return driver.execute_script(
        "const out = {}; for (const s of document.querySelectorAll('#sram-bar span'))"
        " out[s.dataset.kind] = (out[s.dataset.kind] || 0) + Number(s.dataset.bytes); return out;"
    )


def _screenshot(driver, path: Path, width: int, height: int) -> None:  # noqa: ANN001
    """A screenshot of exactly width x height CSS pixels of viewport (a phone's when narrow)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (width, height)


def _send(driver, prompt: str, *, model: str, temperature: str, seed: str, max_tokens: str) -> None:  # noqa: ANN001
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(_by_css(driver, "#model")[0]).select_by_value(model)
    for field, value in (("temperature", temperature), ("seed", seed), ("max-tokens", max_tokens)):
        box = _by_css(driver, f"#{field}")[0]
        box.clear()
        box.send_keys(value)
    area = _by_css(driver, "#prompt")[0]
    driver.execute_script("arguments[0].value = arguments[1]", area, prompt)
    area.send_keys(Keys.CONTROL, Keys.ENTER)  # the keyboard sends


def test_the_page_asks_for_the_key_once_and_lists_the_models(world, browser) -> None:
    _wait(browser, lambda d: _by_css(d, "#keyform")[0].is_displayed())
    assert "API key" in _visible_error(browser)
    _by_css(browser, "#apikey")[0].send_keys("sk-wrong\n")  # a wrong key is said so, and asked for again
    _wait(browser, lambda d: "Incorrect API key" in _visible_error(d) and _by_css(d, "#keyform")[0].is_displayed())
    _by_css(browser, "#apikey")[0].send_keys(KEY + "\n")
    _wait(browser, lambda d: len(_by_css(d, "#model option")) == 2)
    assert [o.get_attribute("value") for o in _by_css(browser, "#model option")] == ["tiny", "alpha"]
    assert _visible_error(browser) == "" and not _by_css(browser, "#keyform")[0].is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('romachip.apiKey')") == KEY
    assert browser.execute_script("return localStorage.length") == 0  # the key lives in the session only
    assert _by_css(browser, "#load-folder option")[0].get_attribute("value") == "gamma"


def test_a_streamed_reply_equals_romachip_run_and_shows_the_chip(world, browser, shots, capsys) -> None:
    _send(browser, PROMPT, model="alpha", temperature="0.8", seed="7", max_tokens="12")
    done = _wait(browser, lambda d: _by_css(d, "#messages li.assistant[data-state=done]"))
    shown = done[-1].find_element("css selector", ".text").text
    argv = ["run", str(world["image"].path), "--adapter", f"alpha={world['alpha']}", "--use", "alpha", "--chat",
            "--prompt", PROMPT, "--seed", "7", "--temperature", "0.8", "--max-tokens", "12", "--json"]  # fmt: skip
    assert main(argv) == 0
    run = json.loads(capsys.readouterr().out)
    assert shown == run["text"].strip() and shown  # the page trims nothing but what the browser does not show
    fields = {dd.get_attribute("data-field"): dd.text for dd in _by_css(browser, "#chip-numbers dd")}
    assert fields["ttft"].endswith(" ms") and float(fields["ttft"].split()[0]) > 0
    assert "tokens/s" in fields["decode"] and " mJ" in fields["energy"]
    assert "adapter alpha rank 4" in fields["chipname"]
    rows = _wait(browser, lambda d: _by_css(d, "#compare .bar-row"))
    assert [r.get_attribute("class").split()[1] for r in rows[:2]] == ["chip", "host"] and len(rows) >= 3
    assert _sram(browser)["kv"] > 0  # the conversation's context now holds KV
    for width, height in ((1280, 800), (390, 844)):
        _screenshot(browser, shots / f"chat-{width}x{height}.png", width, height)
        assert _by_css(browser, "#prompt")[0].is_displayed() and _by_css(browser, "#send")[0].is_displayed()


def test_loading_and_unloading_an_adapter_changes_the_sram_bar(world, browser) -> None:
    before = _sram(browser)
    bank = world["server"].backend.loaded.registry.bank
    assert before["adapter"] == bank.stored("alpha").nbytes
    _by_css(browser, "#load-name")[0].send_keys("gamma")
    _by_css(browser, "#load")[0].click()
    _wait(browser, lambda d: _by_css(d, "#adapters li[data-adapter=gamma]"))
    loaded = _wait(browser, lambda d: _sram(d) if _sram(d)["adapter"] != before["adapter"] else None)
    gamma = bank.stored("gamma").nbytes
    assert loaded["adapter"] == before["adapter"] + gamma and loaded["free"] < before["free"]
    _by_css(browser, "#adapters li[data-adapter=gamma] button")[0].click()
    _wait(browser, lambda d: not _by_css(d, "#adapters li[data-adapter=gamma]"))
    after = _wait(browser, lambda d: _sram(d) if _sram(d)["adapter"] == before["adapter"] else None)
    assert after == before
    # loading it under a name already taken is refused in words, and nothing changes
    _by_css(browser, "#load-name")[0].send_keys("alpha")
    _by_css(browser, "#load")[0].click()
    _wait(browser, lambda d: "already loaded" in _visible_error(d))
    assert _sram(browser) == before


def test_an_over_long_prompt_is_refused_in_words(world, browser) -> None:
    limit = world["server"].backend.context_limit(None)
    _send(browser, "rom " * (limit + 8), model="tiny", temperature="0", seed="0", max_tokens="4")
    message = _wait(browser, lambda d: _visible_error(d))
    assert "maximum context length" in message and str(limit) in message
    assert not _by_css(browser, "#messages li[data-state=streaming]")  # no half reply left behind
    assert _by_css(browser, "#send")[0].is_enabled()
    started = time.monotonic()  # the page is still usable: the next prompt is answered
    _send(browser, PROMPT, model="tiny", temperature="0", seed="0", max_tokens="4")
    _wait(browser, lambda d: len(_by_css(d, "#messages li.assistant[data-state=done]")) == 2)
    assert _visible_error(browser) == "" and time.monotonic() - started < WAIT_S


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):  # noqa: ANN001, ANN201
    """The dse tests' small sweep (4 designs of llama-3.2-1b on roma) and its page on a loopback port."""
    import uvicorn

    tmp = tmp_path_factory.mktemp("sweep")
    with LocalExecutor(1) as ex:
        run_sweep(SweepPlan(*load_sweep_spec(write_spec(tmp))), tmp / "R", executor=ex)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_sweep_app(tmp / "R"), log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield {"folder": tmp / "R", "url": f"http://127.0.0.1:{sock.getsockname()[1]}"}
    server.should_exit = True
    thread.join(10.0)
    sock.close()


def test_the_sweep_page_draws_the_front_and_exports_a_design_simulate_runs(sweep, browser, shots, capsys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    (answer,) = analyse(load_results(sweep["folder"]))
    browser.get(sweep["url"] + "/sweep")
    circles = _wait(browser, lambda d: _by_css(d, "#plot circle"))
    assert len(circles) == len(answer.feasible)
    front = {c.get_attribute("data-key") for c in _by_css(browser, "#plot circle.front")}
    assert front == {r["key"] for r in answer.front}
    Select(_by_css(browser, "#x-metric")[0]).select_by_value("area_mm2")
    Select(_by_css(browser, "#y-metric")[0]).select_by_value("tokens_per_s")
    best = max(answer.front, key=lambda r: r["tokens_per_s"])
    point = _by_css(browser, f'#plot circle[data-key="{best["key"]}"]')[0]
    assert "area_mm2" in point.get_attribute("aria-label") and "tokens_per_s" in point.get_attribute("aria-label")
    ActionChains(browser).move_to_element(point).perform()  # hover: the design and its numbers
    _wait(browser, lambda d: best["key"][:10] in _by_css(d, "#design-title")[0].text)
    names, values = _by_css(browser, "#design dt"), _by_css(browser, "#design dd")
    shown = {n.text: v.text for n, v in zip(names, values, strict=True)}
    assert shown["clock_hz"] in {"2.500e+8", "5.000e+8"} and "tokens_per_j" in shown
    point.click()
    _by_css(browser, "#export")[0].click()
    exported = _wait(browser, lambda d: _by_css(d, "#exported")[0].text)
    path = exported.split("written to ", 1)[1].split(":", 1)[0]
    _screenshot(browser, shots / "sweep-1280x800.png", 1280, 800)
    assert main(["simulate", "--chip", path, "--model", "llama-3.2-1b", "--prompt", "256", "--generate", "1",
                 "--json"]) == 0  # fmt: skip
    sim = json.loads(capsys.readouterr().out)
    assert sim["decode_tokens_per_s_first"] == pytest.approx(best["tokens_per_s"], rel=1e-12)
