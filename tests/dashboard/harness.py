"""Processes for the dashboard's browser test and measurements: a coordinator, workers, the
dashboard, and a headless Chromium driven by Selenium. Standard library + python3-selenium."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

SKIP = 77  # ctest's SKIP_RETURN_CODE for this test.

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A coordinator, workers and the dashboard on loopback, in `workdir`; stop() ends them all."""

    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.address = f"127.0.0.1:{free_port()}"
        self.dash_port = free_port()
        self.url = f"http://127.0.0.1:{self.dash_port}"
        self.coordinator = None
        self.dashboard = None
        self.workers = []
        self.starts = 0

    def _spawn(self, argv, log):
        return subprocess.Popen(argv, stdout=open(os.path.join(self.workdir, log), "wb"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)

    def cli(self, *argv, check=True):
        r = subprocess.run([self.args.cli, *argv, "--coordinator", self.address], capture_output=True, text=True,
                           timeout=120)
        if check and r.returncode != 0:
            raise RuntimeError(f"moesweep {' '.join(argv)}: {r.stderr}")
        return r

    def start_coordinator(self):
        self.coordinator = self._spawn([self.args.coordinator, "--listen", self.address, "--db",
                                        os.path.join(self.workdir, "sweeps.db")], f"coordinator{self.starts}.log")
        self.starts += 1
        for _ in range(200):
            if self.cli("health", "--timeout", "1", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("the coordinator did not become healthy")

    def kill_coordinator(self):
        self.coordinator.send_signal(signal.SIGKILL)
        self.coordinator.wait(10)

    def start_dashboard(self):
        self.dashboard = self._spawn([self.args.dashboard, "--coordinator", self.address, "--listen",
                                      f"127.0.0.1:{self.dash_port}"], "dashboard.log")
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).read()
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError("the dashboard did not answer")

    def start_worker(self, name, slots=1):
        self.workers.append(self._spawn([self.args.worker, "--coordinator", self.address, "--slots", str(slots),
                                         "--threads-per-trial", "1", "--name", name,
                                         "--log-dir", os.path.join(self.workdir, "logs"),
                                         "--runs-dir", os.path.join(self.workdir, "runs")], f"{name}.log"))

    def submit(self, spec):
        path = os.path.join(self.workdir, f"spec-{time.monotonic_ns()}.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        return json.loads(self.cli("submit", path, "--json").stdout)["sweep_id"]

    def api(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def wait_state(self, sweep_id, states, limit=300):
        end = time.time() + limit
        while time.time() < end:
            state = self.api(f"/api/sweeps/{sweep_id}")["sweep"]["state"]
            if state in states:
                return state
            time.sleep(0.3)
        raise RuntimeError(f"sweep {sweep_id} did not reach {states}")

    def stop(self):
        for p in self.workers:
            p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in (self.dashboard, self.coordinator):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def start_browser(width=1280, height=800):
    """A headless Chromium with a fresh profile, or (None, why) when none can start."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        return None, f"python3-selenium is not installed ({e})"
    chrome = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not os.path.exists(chrome) or not os.path.exists(driver_path):
        return None, "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    profile = tempfile.mkdtemp(prefix="moesweep-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in CHROME_FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as e:  # noqa: BLE001 - any failure to start means "no browser here"
        shutil.rmtree(profile, ignore_errors=True)
        return None, f"chromium did not start: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    driver._moesweep_profile = profile
    driver.set_page_load_timeout(30)
    return driver, None


def quit_browser(driver):
    profile = getattr(driver, "_moesweep_profile", None)
    driver.quit()
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


def wait_js(driver, expression, limit=30, what=None):
    """Polls `expression` (JavaScript returning a value) until truthy; returns it."""
    end = time.time() + limit
    value = None
    while time.time() < end:
        value = driver.execute_script("return " + expression)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or expression} (last value {value!r})")


# For every .chart on the page: its id, whether it holds a canvas, and whether that canvas has any
# painted pixel.
CHART_CHECK = """
return [...document.querySelectorAll('.chart')].map(el => {
  const canvases = [...el.querySelectorAll('canvas')];
  let painted = 0;
  for (const c of canvases) {
    if (!c.width || !c.height) continue;
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < data.length; i += 16) if (data[i] !== 0) { painted++; if (painted > 50) break; }
  }
  return {id: el.id, canvases: canvases.length, painted: painted, width: el.clientWidth, height: el.clientHeight};
});
"""
