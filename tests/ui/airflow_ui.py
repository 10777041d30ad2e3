"""What a person does in the Airflow 3.1 UI, as Selenium steps (a small page-object layer).

Selectors are those of apache-airflow 3.1.x's React UI (pinned in requirements.txt): the Simple
auth manager's login form (inputs `username` / `password`), the "Trigger Dag" button, the trigger
form's fields `element_<param>` (a Chakra select for enums: `select:element_<param>:trigger`, then
a role=option), the run page's `header-card` state badge, the task page's Logs / XCom tabs. When
the UI changes, this file is the one to update.
"""

import re
import time
from urllib.parse import unquote

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from ui.browser import Browser

TERMINAL_RUN_STATES = ("Success", "Failed")


class AirflowUI:
    def __init__(self, browser: Browser, base_url: str):
        self.b = browser
        self.d = browser.driver
        self.url = base_url.rstrip("/")

    # --- small helpers ----------------------------------------------------------------------------

    def _body_text(self) -> str:
        return self.d.find_element(By.TAG_NAME, "body").text

    def _click_text(self, selector: str, text: str, timeout_s: float | None = None):
        def find(d):
            for el in d.find_elements(By.CSS_SELECTOR, selector):
                if el.text.strip() == text and el.is_displayed():
                    return el
            return None

        el = self.b.wait(find, timeout_s, f"{selector} with text {text!r}")
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
        el.click()
        return el

    def _type(self, name: str, text: str, attempts: int = 3) -> None:
        """Replace the value of form field `name` the way a person does: select all, type.

        The form re-renders (React-controlled inputs) while keys arrive, and a burst of synthetic
        keystrokes can lose one; so type at a human-ish pace, check the value, and retype if needed.
        """
        value = None
        for _ in range(attempts):
            el = self.d.find_element(By.NAME, name)
            self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
            el.click()
            el.send_keys(Keys.CONTROL, "a")
            el.send_keys(Keys.DELETE)
            for char in text:
                el.send_keys(char)
                time.sleep(0.01)
            time.sleep(0.3)
            value = self.d.find_element(By.NAME, name).get_attribute("value")
            if value == text:
                return
        raise AssertionError(f"field {name}: typed {text!r}, the form shows {value!r}")

    # --- steps ------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> None:
        self.d.get(self.url + "/")
        user = self.b.wait(lambda d: d.find_element(By.NAME, "username"), 60, "the login form")
        self.b.shot("login-page")
        user.send_keys(username)
        self.d.find_element(By.NAME, "password").send_keys(password)
        self.d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.b.wait(
            lambda d: "/auth/login" not in d.current_url and d.find_elements(By.LINK_TEXT, "Dags"),
            60,
            "the home page after login",
        )
        self.b.shot("logged-in")

    def open_dag(self, dag_id: str) -> None:
        self._click_text("a", "Dags")  # the navigation bar
        self.b.wait(lambda d: "/dags" in d.current_url, message="the Dags list")
        self._click_text("a", dag_id, 60)
        # The DAG's own page (not the list, which has a Trigger button too): its tabs are there.
        self.b.wait(
            lambda d: (
                d.current_url.rstrip("/").endswith(f"/dags/{dag_id}")
                and any(a.text.strip() == "Overview" for a in d.find_elements(By.CSS_SELECTOR, "a"))
                and d.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']").is_displayed()
            ),
            60,
            f"the page of {dag_id}",
        )
        time.sleep(1)  # let the React page settle before clicking
        self.b.shot("dag-page")

    def trigger_with_params(self, text_params: dict[str, str], select_params: dict[str, str]) -> str:
        """Fill the trigger form (text/number fields, then selects), submit; returns the run id."""
        self.b.wait(
            lambda d: d.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"), message="the Trigger button"
        ).click()
        first = next(iter(text_params))
        self.b.wait(lambda d: d.find_element(By.NAME, f"element_{first}"), message="the trigger form")
        self.b.shot("trigger-form")
        # What a person sees as the form opens, before typing anything (the test asserts on it).
        dialog = self.d.execute_script(
            f"return document.getElementsByName('element_{first}')[0].closest('[role=dialog]')"
        )
        self.form_text = dialog.get_attribute("textContent")
        self.form_invalid = [
            el.get_attribute("name") or el.get_attribute("id")
            for el in dialog.find_elements(By.CSS_SELECTOR, "[aria-invalid=true], [data-invalid]")
        ]
        self.select_options: dict[str, list[str]] = {}  # each select's choices, as the form lists them
        for name, value in select_params.items():
            trigger = self.d.find_element(By.ID, f"select:element_{name}:trigger")
            self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", trigger)
            trigger.click()
            self.b.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "[role=option]"), message=f"{name}'s options")
            self.select_options[name] = [
                el.text.strip() for el in self.d.find_elements(By.CSS_SELECTOR, "[role=option]") if el.is_displayed()
            ]
            self._click_text("[role=option]", value)
            self.b.wait(
                lambda d, name=name, value=value: (
                    d.find_element(By.ID, f"select:element_{name}:trigger").text.strip() == value
                ),
                message=f"{name} = {value}",
            )
        for name, value in text_params.items():
            self._type(f"element_{name}", value)
        self.b.shot("trigger-form-filled")

        def submit(d):  # the dialog's own Trigger button (the page's one has an aria-label)
            for el in d.find_elements(By.CSS_SELECTOR, "[role=dialog] button"):
                if el.text.strip() == "Trigger" and el.is_enabled():
                    return el
            return None

        button = self.b.wait(submit, message="an enabled Trigger button in the form")
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()
        run_url = self.b.wait(
            lambda d: re.search(r"/runs/([^/?#]+)", d.current_url), 60, "the new run's page after submitting the form"
        )
        self.b.shot("run-triggered")
        return unquote(run_url.group(1))

    def run_state(self) -> str:
        badge = self.d.find_element(By.CSS_SELECTOR, "[data-testid=header-card] .chakra-badge")
        return badge.text.strip()

    def wait_run_finished(self, timeout_s: float, on_poll=None) -> str:
        """Watch the run page's state badge (the UI refreshes it by itself) until Success/Failed."""
        deadline = time.monotonic() + timeout_s
        state, shots = "", 0
        while time.monotonic() < deadline:
            if on_poll:
                on_poll()
            try:
                state = self.run_state()
            except Exception:
                state = ""
            if state in TERMINAL_RUN_STATES:
                self.b.shot(f"run-{state.lower()}")
                return state
            if shots < 3 and time.monotonic() > deadline - timeout_s + 40 * (shots + 1):
                shots += 1
                self.b.shot(f"run-{state.lower() or 'pending'}")
            time.sleep(3)
        self.b.shot("run-timeout")
        raise TimeoutError(f"run not finished after {timeout_s}s (last state shown: {state!r})")

    def open_task(self, run_id: str, task_id: str) -> None:
        """From the run page, click the task in the run's Task Instances list (a person's path).

        Only a link under /runs/<run>/tasks/ opens this run's task instance (Logs, XCom); the grid's
        task-name link opens the task across all runs."""
        suffix = f"/tasks/{task_id}"

        def find(d):
            for a in d.find_elements(By.CSS_SELECTOR, "a"):
                href = unquote(a.get_attribute("href") or "")
                if f"/runs/{run_id}/" in href and href.rstrip("/").endswith(suffix) and a.is_displayed():
                    return a
            return None

        link = self.b.wait(find, 60, f"a link to {task_id} of run {run_id}")
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", link)
        link.click()
        self.b.wait(
            lambda d: "/runs/" in d.current_url and unquote(d.current_url).rstrip("/").endswith(suffix),
            message=f"the task instance page of {task_id}",
        )

    def task_log_text(self, must_contain: str, timeout_s: float = 60) -> str:
        """The Logs tab (default tab of a task instance), once its text contains must_contain."""
        self._click_text("a", "Logs")
        text = self.b.wait(
            lambda d: must_contain in self._body_text() and self._body_text(),
            timeout_s,
            f"{must_contain!r} in the task log",
        )
        self.b.shot("task-log")
        return text

    def xcom_text(self, keys, timeout_s: float = 60) -> str:
        self._click_text("a", "XCom")
        text = self.b.wait(
            lambda d: (
                "/xcom" in d.current_url
                and all(re.search(rf"^{re.escape(k)}$", self._body_text(), re.M) for k in keys)
                and self._body_text()
            ),
            timeout_s,
            f"XCom keys {keys}",
        )
        self.b.shot("task-xcom")
        return text
