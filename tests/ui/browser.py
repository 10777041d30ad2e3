"""Headless Chromium driven by Selenium, with Debian's chromium + chromium-driver.

Selenium's own driver/browser download (Selenium Manager) and Playwright's browser download do not
work on a closed network; the distribution packages do (`.ci/install_browser.sh`). The flags keep
Chromium from phoning home (updates, sync, QUIC...), which on a closed network stalls page loads.
"""

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--password-store=basic",
    "--window-size=1440,1000",
    "--lang=en-US",
)


def find(candidates, name: str) -> str | None:
    for path in candidates:
        if Path(path).is_file():
            return path
    return shutil.which(name)


def missing_reason() -> str | None:
    """Why a browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements-dev.txt)"
    if not find(CHROMIUM_CANDIDATES, "chromium"):
        return "Debian chromium is not installed (run .ci/install_browser.sh)"
    if not find(CHROMEDRIVER_CANDIDATES, "chromedriver"):
        return "Debian chromium-driver is not installed (run .ci/install_browser.sh)"
    return None


class Browser:
    """A WebDriver plus the few helpers a UI test needs: bounded waits and numbered screenshots."""

    def __init__(self, shots_dir: Path, default_timeout_s: float = 30):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.shots_dir = Path(shots_dir)
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = default_timeout_s
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        options = webdriver.ChromeOptions()
        options.binary_location = find(CHROMIUM_CANDIDATES, "chromium")
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")  # fresh profile every time
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(
            executable_path=find(CHROMEDRIVER_CANDIDATES, "chromedriver"),
            log_output=str(self.shots_dir / "chromedriver.log"),
        )
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(60)
        self.driver.set_script_timeout(30)
        self._step = 0

    def shot(self, name: str) -> Path:
        self._step += 1
        path = self.shots_dir / f"{self._step:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, condition: Callable, timeout_s: float | None = None, message: str = "", poll_s: float = 0.5):
        """Poll condition(driver) until truthy (exceptions count as 'not yet'); returns its value."""
        deadline = time.monotonic() + (timeout_s or self.timeout)
        last_exc = None
        while True:
            try:
                value = condition(self.driver)
                if value:
                    return value
            except Exception as exc:  # stale elements, not-yet-rendered React nodes...
                last_exc = exc
            if time.monotonic() > deadline:
                self.shot("timeout")
                raise TimeoutError(
                    f"timed out after {timeout_s or self.timeout}s: {message}"
                    + (f" (last error: {last_exc!r})" if last_exc else "")
                )
            time.sleep(poll_s)

    def console_log(self) -> str:
        try:
            return "\n".join(f"{e['level']} {e['message']}" for e in self.driver.get_log("browser"))
        except Exception as exc:
            return f"(no browser log: {exc!r})"

    def close(self) -> None:
        try:
            (self.shots_dir / "browser-console.log").write_text(self.console_log())
        finally:
            try:
                self.driver.quit()
            finally:
                shutil.rmtree(self._profile, ignore_errors=True)
