"""Run the CDS Hooks sandbox (static build) next to the service and the fixture FHIR server, and drive
its PAMA Imaging tab in headless Chromium.

Everything is started as a subprocess through the command line (``python -m cds_service serve`` /
``fhir-server``, ``python -m http.server``), so this harness depends on the package's CLI only, not on
its module layout. Used by tests/test_sandbox_browser.py and by tests/sandbox_survey.py (the
before/after survey behind docs/sandbox-before.md).

What the sandbox does and which DOM hooks work: /work/shared/cds-hooks-sandbox/README.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CDS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 1000}
SELECT_SERVICE = "onc-imaging-order-select"
# The patient of the "reasons only" cases: a chart holding nothing but the Patient, so the service
# can only read the order's study and reasons (what the PAMA tab sends).
REASONS_ONLY_PATIENT = "bt-reasons-only"


def sandbox_build_dir() -> Path | None:
    """The static sandbox build: $CDS_SANDBOX_BUILD, else the team's shared copy (next to the checkout,
    or at /work/shared for a clone elsewhere on our machines)."""
    candidates = [os.environ.get("CDS_SANDBOX_BUILD", "")]
    for base in (REPO.parent, REPO.parent.parent, Path("/work")):
        candidates.append(str(base / "shared" / "cds-hooks-sandbox" / "build"))
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "index.html").is_file() and (path / "app.bundle.js").is_file():
            return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# the three servers


@dataclass
class Servers:
    service_url: str          # discovery endpoint, …/cds-services
    fhir_url: str
    sandbox_url: str
    workdir: Path

    def tab_url(self, patient: str) -> str:
        query = {"fhirServiceUrl": self.fhir_url, "patientId": patient, "screen": "pama",
                 "hook": "order-select", "serviceDiscoveryURL": self.service_url}
        return f"{self.sandbox_url}/?{urllib.parse.urlencode(query)}"


class _Processes:
    """Subprocesses in their own process groups, stopped (TERM, then KILL) in reverse order."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self.running.append((name, proc))
        return proc

    def wait_ready(self, name: str, proc: subprocess.Popen, url: str, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready at {url} after {timeout:.0f} s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_all(self) -> None:
        for _name, proc in reversed(self.running):
            _stop(proc)
        self.running.clear()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even by SIGKILL (e.g. a CI timeout), since
    the servers run in their own session and would otherwise outlive it. Linux only; elsewhere a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _reasons_only_chart(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    patient = {"resourceType": "Patient", "id": REASONS_ONLY_PATIENT, "gender": "female",
               "birthDate": "1968-04-02", "name": [{"family": "Reasons", "given": ["Only"]}]}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}]}
    (directory / "reasons-only.json").write_text(json.dumps(bundle))
    return directory


@contextlib.contextmanager
def running_servers(build: Path, workdir: Path | None = None):
    """Service, fixture FHIR server (fixture charts + the reasons-only patient) and the sandbox, on loopback."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sandbox-browser-")))
        procs = _Processes(workdir)
        stack.callback(procs.stop_all)
        service_port, fhir_port, sandbox_port = free_port(), free_port(), free_port()
        sandbox_origin = f"http://127.0.0.1:{sandbox_port}"
        env = dict(os.environ)
        env.update({
            "CDS_DATABASE_URL": f"sqlite:///{workdir / 'service.db'}",
            "CDS_CORS_ORIGINS": sandbox_origin,
            "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{service_port}",
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("CDS_MODE", None)
        charts = _reasons_only_chart(workdir / "charts")
        python = sys.executable
        started = [
            ("service", [python, "-m", "cds_service", "serve", "--host", "127.0.0.1", "--port", str(service_port)],
             f"http://127.0.0.1:{service_port}/cds-services"),
            ("fhir-server", [python, "-m", "cds_service", "fhir-server", "--port", str(fhir_port),
                             str(REPO / "fhir_fixtures"), str(charts)],
             f"http://127.0.0.1:{fhir_port}/metadata"),
            ("sandbox", [python, "-m", "http.server", str(sandbox_port), "--bind", "127.0.0.1", "--directory", str(build)],
             f"{sandbox_origin}/index.html"),
        ]
        # all three start at once, then each is waited for: the service's warm-up overlaps the others
        launched = [(name, procs.start(name, argv, env), url) for name, argv, url in started]
        for name, proc, url in launched:
            procs.wait_ready(name, proc, url)
        yield Servers(service_url=f"http://127.0.0.1:{service_port}/cds-services",
                      fhir_url=f"http://127.0.0.1:{fhir_port}", sandbox_url=sandbox_origin, workdir=workdir)


# --------------------------------------------------------------------------------------------------
# the PAMA tab


@dataclass
class Card:
    indicator: str            # info / warning / critical
    summary: str
    height: float
    buttons: list[str]


@dataclass
class TabState:
    rating: str               # the rating line, e.g. "PAMA Rating: not-appropriate⚠"
    study: str                # the study line ("" when none is shown)
    reasons: list[str]
    cards: list[Card]
    response: dict | None     # the service's last order-select answer

    @property
    def badge(self) -> str:
        return self.rating.removeprefix("PAMA Rating:").strip()


@dataclass
class Problem:
    what: str
    detail: str


@dataclass
class PamaTab:
    """One browser page showing the PAMA tab, with the traffic to our servers watched."""

    page: object
    servers: Servers
    patient: str | None = None
    in_flight: int = 0
    last_activity: float = 0.0
    service_calls: int = 0
    last_response: dict | None = None
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def open(cls, context, servers: Servers) -> "PamaTab":
        tab = cls(page=context.new_page(), servers=servers)
        tab._watch()
        return tab

    # -- traffic and console -------------------------------------------------------------------

    def _ours(self, url: str) -> bool:
        return url.startswith(self.servers.service_url.rsplit("/cds-services", 1)[0]) or url.startswith(
            self.servers.fhir_url)

    def _is_service(self, url: str) -> bool:
        return url.startswith(self.servers.service_url)

    def _watch(self) -> None:
        page = self.page

        def started(request):
            if self._ours(request.url) and request.method != "OPTIONS":
                self.in_flight += 1
                self.last_activity = time.monotonic()
                if self._is_service(request.url) and request.method == "POST":
                    self.service_calls += 1

        def ended(request):
            if self._ours(request.url) and request.method != "OPTIONS":
                self.in_flight = max(0, self.in_flight - 1)
                self.last_activity = time.monotonic()

        def failed(request):
            ended(request)
            if self._is_service(request.url):
                self.problems.append(Problem("request to the service failed", f"{request.method} {request.url}: "
                                                                               f"{request.failure}"))

        def answered(response):
            if not self._is_service(response.url):
                return
            if response.status >= 400:
                self.problems.append(Problem("service answered an error",
                                             f"{response.request.method} {response.url} → {response.status}"))
            elif response.request.method == "POST" and response.url.endswith("/" + SELECT_SERVICE):
                with contextlib.suppress(Exception):
                    self.last_response = response.json()

        page.on("request", started)
        page.on("requestfinished", ended)
        page.on("requestfailed", failed)
        page.on("response", answered)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(Problem("uncaught error in the page", str(error))))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        text = message.text
        url = (message.location or {}).get("url", "")
        # Expected on every load and not caused by the service (see the sandbox README): the missing
        # styles.css, and the sandbox's built-in public discovery endpoint, aborted to keep the page on
        # loopback. Our own discovery failing is caught by the service-traffic checks instead.
        if "Failed to load resource" in text and (url.endswith("/styles.css") or not url.startswith("http://127.0.0.1")):
            return
        if text.startswith("Could not retrieve any services at discovery endpoint") \
                and self.servers.service_url not in text:
            return
        self.problems.append(Problem("console error", f"{text} ({url})" if url else text))

    def take_problems(self) -> list[Problem]:
        found, self.problems = self.problems, []
        return found

    def settle(self, calls_before: int | None = None, quiet: float = 0.3, timeout: float = 20.0) -> None:
        """Wait until the page's calls are done: (a new service call if one is expected, then) nothing
        in flight to our servers for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            called = calls_before is None or self.service_calls > calls_before
            if called and self.in_flight == 0 and time.monotonic() - self.last_activity >= quiet:
                return
            self.page.wait_for_timeout(50)
        raise TimeoutError(f"the PAMA tab did not settle within {timeout:.0f} s")

    # -- actions --------------------------------------------------------------------------------

    def load(self, patient: str) -> None:
        """(Re)open the tab for ``patient``, with no study and no reason, once its first call is answered."""
        calls = self.service_calls
        self.page.goto(self.servers.tab_url(patient), wait_until="domcontentloaded")
        self.page.locator("h1:has-text('PAMA Imaging')").wait_for(timeout=30_000)
        self.settle(calls_before=calls, timeout=30.0)
        self.patient = patient

    def _choose(self, box: int, code: str, display: str | None) -> str:
        field_ = self.page.locator('input[id^="react-select"]').nth(box)
        field_.focus()
        field_.fill("")
        field_.type(code, delay=5)
        options = self.page.locator('[id*="-option-"]')
        option = options.filter(has_text=display).first if display else options.first
        option.wait_for(state="visible", timeout=10_000)
        text = option.inner_text().strip()
        calls = self.service_calls
        option.click()
        self.settle(calls_before=calls)
        return text

    def choose_study(self, code: str, display: str | None = None) -> str:
        return self._choose(0, code, display)

    def add_reason(self, code: str, display: str | None = None) -> str:
        return self._choose(1, code, display)

    def state(self) -> TabState:
        page = self.page
        lists = page.evaluate("""() => {
            const boxes = [...document.querySelectorAll('input[id^="react-select"]')];
            const reasonsTop = boxes.length > 1 ? boxes[1].getBoundingClientRect().top : Infinity;
            const study = [], reasons = [];
            for (const el of document.querySelectorAll('li [class*="current-selection"]')) {
                (el.getBoundingClientRect().top < reasonsTop ? study : reasons).push(el.innerText.trim());
            }
            return {study, reasons};
        }""")
        cards = []
        for card in page.locator('.MuiCard-root[class*="decision-card"]').all():
            classes = card.get_attribute("class") or ""
            indicator = next((i for i in ("critical", "warning", "info") if f"alert-{i}" in classes), "")
            summary = card.locator(":scope > *").first.inner_text().split("\n")[0].strip()
            box = card.bounding_box() or {"height": 0}
            buttons = [b.strip() for b in card.locator(".MuiButton-contained").all_inner_texts()]
            cards.append(Card(indicator, summary, box["height"], buttons))
        rating = page.locator('[class*="rating-box"]').first.inner_text().strip()
        return TabState(rating=rating, study=" ".join(lists["study"]), reasons=lists["reasons"], cards=cards,
                        response=self.last_response)

    def click_suggestion(self, label: str) -> None:
        button = self.page.locator('.MuiCard-root[class*="decision-card"] .MuiButton-contained').filter(
            has_text=label).first
        calls = self.service_calls
        button.click()
        self.settle(calls_before=calls)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)


def switch_suggestions(response: dict | None) -> list[dict]:
    """The answer's suggestions that replace the order by another study (an ``update`` of the order
    carrying a different code), as ``{"label", "codes"}``."""
    found = []
    for card in (response or {}).get("cards", []):
        for suggestion in card.get("suggestions", []):
            for action in suggestion.get("actions", []):
                resource = action.get("resource") or {}
                if action.get("type") == "update" and resource.get("resourceType") == "ServiceRequest":
                    codes = [c.get("code") for c in resource.get("code", {}).get("coding", [])]
                    found.append({"label": suggestion.get("label", ""), "codes": codes, "card": card.get("summary")})
                    break
    return found


@contextlib.contextmanager
def browser_context():
    """One headless Chromium (Debian's, never Playwright's download) with one fresh context, kept on loopback."""
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        # Playwright gives the browser a fresh temporary --user-data-dir of its own.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                             timeout=60_000)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(20_000)
            context.route("**/*", lambda route: route.continue_()
                          if route.request.url.startswith("http://127.0.0.1") else route.abort())
            yield context
        finally:
            browser.close()
