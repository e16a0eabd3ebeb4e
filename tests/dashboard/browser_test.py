"""The dashboard in a real browser: headless Chromium (Selenium) against a real coordinator, two
workers running the fake command trainer, and moesweep-dashboard, all as processes.

It opens a sweep's page before any worker runs, sees trials finish without a reload, opens the
Curves and Experts views and a trial, checks that every chart drew something on its canvas and that
the console stayed clean, checks the 404 page, the phone-width layout, and the banner while the
coordinator is gone (and that the page recovers by itself). Screenshots go to --artifacts.
Exit 77 (ctest: skipped) when no browser can start, saying why.
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def experts_spec(source, epoch_sleep, epochs=3, name="browser-test", seeds=(1, 2)):
    trainer = os.path.join(source, "tests/e2e/testdata/fake_trainer.py")
    return {
        "name": name,
        "objective": {"metric": "val_accuracy", "goal": "maximize"},
        "seeds": list(seeds),
        "base": {"behaviour": "experts", "width": 16, "temp": 1.5, "epochs": epochs, "experts": 6,
                 "epoch_sleep": epoch_sleep},
        "baseline": {"width": 4},
        "stages": [{"name": "width", "grid": {"width": [16, 64]}},
                   {"name": "temp", "grid": {"temp": [0.3, 0.7, 1.5]}}],
        "max_attempts": 2,
        "lease_seconds": 10,
        "trainer": {"command": ["/usr/bin/python3", trainer, "{trial_name}", "{overrides}"],
                    "env": {"PYTHONUNBUFFERED": "1"}},
    }


class Check:
    def __init__(self, driver, artifacts):
        self.driver = driver
        self.artifacts = artifacts
        self.failures = []
        self.allowed_console = []  # Substrings of console lines expected in this phase.

    def expect(self, ok, what):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.failures.append(what)

    def shot(self, name):
        path = os.path.join(self.artifacts, name + ".png")
        self.driver.save_screenshot(path)
        print(f"     screenshot {path}", flush=True)
        return path

    def console(self, phase):
        """Every console line since the last call; fails on errors not allowed in this phase."""
        lines = self.driver.get_log("browser")
        bad = [l for l in lines if l["level"] in ("SEVERE", "ERROR")
               and not any(a in l["message"] for a in self.allowed_console)]
        self.expect(not bad, f"{phase}: no console errors" + (f" (got {[l['message'] for l in bad]})" if bad else ""))
        return lines

    def charts(self, view, minimum):
        charts = self.driver.execute_script(harness.CHART_CHECK)
        self.expect(len(charts) >= minimum, f"{view}: at least {minimum} charts (found {len(charts)})")
        for c in charts:
            self.expect(c["canvases"] > 0 and c["painted"] > 0 and c["width"] > 0 and c["height"] > 0,
                        f"{view}: chart {c['id']} rendered ({c})")
        return charts


def run(args, driver, cluster, check):
    d = driver
    cluster.start_coordinator()
    cluster.start_dashboard()
    sweep = cluster.submit(experts_spec(args.source, epoch_sleep=0.25))

    # The sweep page before any worker: everything pending.
    d.get(f"{cluster.url}/sweeps/{sweep}")
    harness.wait_js(d, "window.__moesweep && window.__moesweep.firstRender", what="the sweep page")
    d.execute_script("window.__noReload = 'still the same page'")
    pending = d.execute_script("return document.querySelectorAll('#trials .badge.PENDING').length")
    check.expect(pending >= 2, f"sweep page lists pending trials before any worker ({pending})")

    cluster.start_worker("w1")
    cluster.start_worker("w2")
    harness.wait_js(d, "document.querySelectorAll('#trials .badge.SUCCEEDED').length > 0", 60,
                    "a finished trial to appear")
    check.expect(d.execute_script("return window.__noReload") == "still the same page",
                 "a trial finished and appeared without a reload")
    cluster.wait_state(sweep, {"SWEEP_SUCCEEDED"}, 180)
    harness.wait_js(d, "document.querySelectorAll('#trials .badge.SUCCEEDED').length === 2 + 4 + 6", 30,
                    "every trial shown as succeeded")
    harness.wait_js(d, "document.querySelector('.row .badge.SUCCEEDED') !== null", 30, "the sweep shown as succeeded")
    check.expect(d.execute_script("return window.__noReload") == "still the same page", "the whole sweep ran live on one page")
    time.sleep(0.5)
    check.charts("sweep page", 1 + 2 + 1)  # baseline + 2 stages + parallel coordinates
    lines = d.execute_script("return window.__moesweep.model && [...window.__moesweep.model.trials.values()]"
                             ".filter(t => t.config_json && t.config_json.width).length")
    check.expect(lines == 12, f"every trial has its config, for the parallel coordinates ({lines})")
    winners = d.execute_script("return [...document.querySelectorAll('.card[data-stage] dd')].map(e => e.textContent).join('|')")
    check.expect("width=64" in winners and "temp=0.7" in winners, f"stage cards show the winners ({winners[:200]})")
    # The whole page (the README's screenshot): a window as tall as the page, then back.
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1280, min(2200, height + 140))
    time.sleep(0.5)
    sweep_png = check.shot("sweep")
    d.set_window_size(1280, 800)
    check.console("sweep page")

    # Sorting and filtering the trial table.
    d.execute_script("document.querySelector('#trials th[data-sort=\"objective\"]').click()")
    time.sleep(0.2)
    d.execute_script("document.querySelector('#trials th[data-sort=\"objective\"]').click()")  # descending
    first = harness.wait_js(d, "document.querySelector('#trials tbody tr td:nth-child(3)') && "
                               "document.querySelector('#trials tbody tr td:nth-child(3)').textContent")
    check.expect(first == "temp=0.7", f"sorting by the objective puts the best point first ({first})")
    filt = d.find_element("id", "filter")
    filt.send_keys("temp=1.5")
    harness.wait_js(d, "document.querySelectorAll('#trials tbody tr').length === 2", 5, "the filter")
    check.expect(True, "the filter leaves the two seeds of temp=1.5")

    # Curves and Experts.
    d.execute_script("[...document.querySelectorAll('.tabs a')].find(a => a.textContent === 'Curves').click()")
    harness.wait_js(d, "location.pathname.endsWith('/curves') && document.querySelector('#loss-chart canvas')")
    time.sleep(0.5)
    check.charts("curves", 2)
    check.shot("curves")
    d.execute_script("[...document.querySelectorAll('.tabs a')].find(a => a.textContent === 'Experts').click()")
    harness.wait_js(d, "location.pathname.endsWith('/experts') && document.querySelector('#heatmap-chart canvas')")
    time.sleep(0.5)
    check.charts("experts", 2)
    check.shot("experts")

    # A trial, from the table.
    d.execute_script("[...document.querySelectorAll('.tabs a')].find(a => a.textContent === 'Overview').click()")
    harness.wait_js(d, "document.querySelector('#trials tbody a')")
    d.execute_script("document.querySelector('#trials tbody a').click()")
    harness.wait_js(d, "/\\/trials\\/\\d+$/.test(location.pathname) && document.querySelector('#trial-loss-chart canvas')")
    time.sleep(0.5)
    # loss, accuracy, one usage chart per layer, layer 0's classes x experts heatmap
    charts = check.charts("trial page", 2 + 2 + 1)
    check.expect(any(c["id"] == "trial-class-chart-0" for c in charts), "trial page: the classes x experts heatmap")
    text = d.find_element("id", "view").text
    check.expect("Final metrics" in text and "val_loss" in text and "load_cv" in text, "trial page: metrics and expert stats")
    # A trial of a stage that started after the page loaded: its config comes from ListTrials.
    config = d.execute_script("return document.querySelector('.card dl.kv').textContent")
    check.expect("behaviour" in config and "temp" in config and "width" in config, f"trial page: its config ({config[:80]})")
    run_time = d.execute_script("const dt = [...document.querySelectorAll('dt')].find(e => e.textContent === 'run time');"
                                "return dt && dt.nextElementSibling.textContent")
    check.expect(run_time not in (None, "–"), f"trial page: its run time ({run_time})")
    check.shot("trial")
    check.console("curves, experts and trial pages")

    # Phone width: no sideways scrolling of the page.
    d.set_window_size(390, 844)
    d.get(f"{cluster.url}/sweeps/{sweep}")
    harness.wait_js(d, "window.__moesweep.firstRender && document.querySelector('#parallel-chart canvas')")
    time.sleep(0.5)
    overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check.expect(overflow <= 1, f"phone width: the page does not scroll sideways (overflow {overflow}px)")
    check.charts("sweep page at phone width", 4)
    check.shot("sweep-phone")
    d.set_window_size(1280, 800)
    check.console("phone width")

    # The list of sweeps.
    d.get(cluster.url + "/")
    harness.wait_js(d, "document.querySelector('#sweeps .best') && document.querySelector('#sweeps .best').textContent !== '…'")
    check.expect("browser-test" in d.find_element("id", "sweeps").text, "the sweeps list shows the sweep")
    check.shot("sweeps")
    check.console("sweeps list")

    # Unknown sweep: a 404 page (the document's own 404 is the one console line allowed).
    check.allowed_console = ["status of 404"]
    d.get(f"{cluster.url}/sweeps/{sweep + 100}")
    harness.wait_js(d, "document.querySelector('.notfound')", what="the 404 page")
    check.expect("does not exist" in d.find_element("id", "view").text, "unknown sweep: a clear 404 page")
    check.shot("not-found")
    check.console("404 page")

    # The coordinator goes away mid-sweep: a banner, then the page picks up by itself.
    check.allowed_console = ["status of 503", "ERR_INCOMPLETE_CHUNKED_ENCODING"]
    slow = cluster.submit(experts_spec(args.source, epoch_sleep=0.4, epochs=4, name="outage", seeds=(1,)))
    d.get(f"{cluster.url}/sweeps/{slow}")
    harness.wait_js(d, "window.__moesweep.firstRender && document.querySelector('#live.on')", what="live updates")
    d.execute_script("window.__noReload = 'outage page'")
    harness.wait_js(d, "window.__moesweep.model.lastSeq > 3", 60, "some events")
    cluster.kill_coordinator()
    banner = harness.wait_js(d, "!document.querySelector('#banner').hidden && document.querySelector('#banner').textContent",
                             30, "the banner")
    check.expect("Coordinator unreachable" in banner, f"coordinator gone: banner ({banner})")
    check.shot("coordinator-gone")
    seq_before = d.execute_script("return window.__moesweep.model.lastSeq")
    cluster.start_coordinator()
    harness.wait_js(d, "document.querySelector('#banner').hidden", 30, "the banner to go")
    check.expect(True, "coordinator back: the banner went by itself")
    cluster.wait_state(slow, {"SWEEP_SUCCEEDED", "SWEEP_FAILED"}, 180)
    harness.wait_js(d, "window.__moesweep.model.sweep.state === 'SWEEP_SUCCEEDED'", 30, "the page to follow to the end")
    seqs_ok = d.execute_script("return window.__moesweep.model.lastSeq")
    check.expect(seqs_ok > seq_before and d.execute_script("return window.__noReload") == "outage page",
                 f"the page resumed after event {seq_before} without a reload (now at {seqs_ok})")
    check.console("coordinator outage")
    return sweep_png


def main():
    # ctest's timeout sends SIGTERM: unwind, so the cluster and the browser are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser()
    for flag in ("coordinator", "worker", "dashboard", "cli", "source", "artifacts"):
        p.add_argument("--" + flag, required=True)
    p.add_argument("--update-docs", action="store_true", help="copy the sweep page's screenshot to docs/")
    args = p.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)
    driver, why = harness.start_browser()
    if driver is None:
        print(f"SKIPPED: no browser: {why}", flush=True)
        return harness.SKIP
    workdir = tempfile.mkdtemp(prefix="moesweep-browser-")
    cluster = harness.Cluster(args, workdir)
    check = Check(driver, args.artifacts)
    ok = False
    try:
        sweep_png = run(args, driver, cluster, check)
        ok = not check.failures
        if ok and args.update_docs:
            shutil.copy(sweep_png, os.path.join(args.source, "docs", "dashboard-sweep.png"))
    except Exception as e:  # noqa: BLE001 - report with the page's state
        check.failures.append(f"{type(e).__name__}: {e}")
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        try:
            check.shot("failure")
            print(driver.get_log("browser"))
        except Exception:  # noqa: BLE001
            pass
    finally:
        harness.quit_browser(driver)
        cluster.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", flush=True)
    print(("PASSED" if ok else f"FAILED: {len(check.failures)} checks: {check.failures}"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
