"""Measures the dashboard on a big sweep, in a real browser: a 50 x 50 grid x 2 seeds = 5,000 trials
run by workers with a trainer that finishes at once (testdata/fast_trainer.sh), then the sweep page
loaded in headless Chromium: navigation timing, the first full render, catching up with the event
stream, and how long sorting, filtering and switching views take (with the long tasks seen).

  /usr/bin/python3 tests/dashboard/measure_big_sweep.py --coordinator build/server/moesweep-coordinator \\
      --worker build/worker/moesweep-worker --dashboard build/dashboard/moesweep-dashboard \\
      --cli build/client/moesweep --source . [--grid 50 --seeds 2 --workers 2 --slots 4]
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def spec(source, grid, seeds):
    return {
        "name": f"big-{grid}x{grid}x{seeds}",
        "objective": {"metric": "val_accuracy", "goal": "maximize"},
        "seeds": list(range(1, seeds + 1)),
        "base": {"x": 0, "y": 0},
        "stages": [{"name": "grid", "grid": {"x": list(range(1, grid + 1)), "y": list(range(1, grid + 1))}}],
        "trainer": {"command": ["/bin/sh", os.path.join(source, "tests/dashboard/testdata/fast_trainer.sh"),
                                "{x}", "{y}", "{seed}"]},
    }


def timed(driver, action_js, done_js, limit=60):
    start = time.perf_counter()
    driver.execute_script(action_js)
    harness.wait_js(driver, done_js, limit)
    return round((time.perf_counter() - start) * 1000)


def main():
    # ctest's timeout sends SIGTERM: unwind, so the cluster and the browser are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser()
    for flag in ("coordinator", "worker", "dashboard", "cli", "source"):
        p.add_argument("--" + flag, required=True)
    p.add_argument("--grid", type=int, default=50)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--screenshot", default="")
    args = p.parse_args()
    workdir = tempfile.mkdtemp(prefix="moesweep-big-")
    cluster = harness.Cluster(args, workdir)
    driver = None
    try:
        cluster.start_coordinator()
        cluster.start_dashboard()
        t0 = time.time()
        sweep = cluster.submit(spec(args.source, args.grid, args.seeds))
        for i in range(args.workers):
            cluster.start_worker(f"w{i}", slots=args.slots)
        cluster.wait_state(sweep, {"SWEEP_SUCCEEDED"}, 1800)
        trials = args.grid * args.grid * args.seeds
        print(f"sweep of {trials} trials ran in {time.time() - t0:.1f} s", flush=True)

        driver, why = harness.start_browser()
        if driver is None:
            print("no browser:", why)
            return harness.SKIP
        d = driver
        d.get(cluster.url + "/")  # Warm the browser (first start, fonts) before measuring.
        d.execute_script("window.__longtasks = []")
        results = {"trials": trials}
        # Twice: a cold page and a second load.
        for run in ("first", "second"):
            d.get(f"{cluster.url}/sweeps/{sweep}")
            d.execute_script("""window.__longtasks = [];
              new PerformanceObserver(l => l.getEntries().forEach(e => window.__longtasks.push(e.duration)))
                .observe({type: 'longtask', buffered: true});""")
            first = harness.wait_js(d, "window.__moesweep.firstRender", 60)
            rows = d.execute_script("return document.querySelectorAll('#trials tbody tr').length")
            caught = harness.wait_js(d, "window.__moesweep.model && window.__moesweep.model.caughtUp && performance.now()", 120)
            nav = d.execute_script("const n = performance.getEntriesByType('navigation')[0]; return "
                                   "{responseEnd: n.responseEnd, domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd}")
            results[run] = {
                "navigation_ms": {k: round(v) for k, v in nav.items()},
                "first_render_ms": round(first),
                "table_rows_rendered": rows,
                "events_caught_up_ms": round(caught),
                "events": d.execute_script("return window.__moesweep.model.lastSeq"),
            }
        time.sleep(1)
        d.execute_script("window.__longtasks = []")
        r = results["interactions_ms"] = {}
        r["sort_by_objective"] = timed(d, "window.__t = document.querySelector('#trials tbody tr'); "
                                          "document.querySelector('#trials th[data-sort=\"objective\"]').click()",
                                       "document.querySelector('#trials tbody tr') !== window.__t")
        r["filter_state_failed"] = timed(d, "const s = document.querySelector('#state-filter'); s.value = 'TRIAL_FAILED'; "
                                            "s.dispatchEvent(new Event('change'))",
                                         "document.querySelectorAll('#trials tbody tr').length === 0")
        r["curves_view"] = timed(d, "[...document.querySelectorAll('.tabs a')].find(a => a.textContent === 'Curves').click()",
                                 "document.querySelector('#loss-chart canvas')")
        r["experts_view"] = timed(d, "[...document.querySelectorAll('.tabs a')].find(a => a.textContent === 'Experts').click()",
                                  "document.querySelector('#heatmap-chart canvas')")
        r["back_to_overview"] = timed(d, "[...document.querySelectorAll('.tabs a')].find(a => a.textContent === 'Overview').click()",
                                      "document.querySelector('#parallel-chart canvas')")
        results["long_tasks_during_interactions_ms"] = [round(x) for x in d.execute_script("return window.__longtasks")]
        errors = [l["message"] for l in d.get_log("browser") if l["level"] == "SEVERE"]
        results["console_errors"] = errors
        if args.screenshot:
            d.save_screenshot(args.screenshot)
        print(json.dumps(results, indent=2))
        return 0
    finally:
        if driver is not None:
            harness.quit_browser(driver)
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
