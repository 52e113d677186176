"""How long each console page takes to become usable, in Debian's
headless Chromium driven by Playwright (the harness's `console`
scenario prepares the server and runs this).

    console_pages.py HTTP_ADDR BIG_STREAM VIEW RUNS

Each page is shown RUNS times by setting the location's hash (how the
console moves between pages), each time from another page; the time runs
from the navigation to the page's mark of being usable (its table filled,
its editor there). The first load of the console (from a blank tab to the
overview's agents) is timed too. Prints one line
`result {"page": [milliseconds, ...], ...}`.
"""

import json
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    http, big, view, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    # Page: (hash, what must be on it before it is usable).
    pages = {
        "overview": ("#/overview", "main table >> text=live"),
        "streams": ("#/streams", "main table tbody tr:nth-child(100)"),
        "stream + message browser (10 M rows)": (f"#/streams/{big}", "#messages table tbody tr"),
        "sql": ("#/sql", "#sql-text"),
        "views": ("#/views", "main table tbody tr:nth-child(10)"),
        "view": (f"#/views/{view}", "#view-definition >> text=SELECT"),
        "groups": ("#/groups", "main table"),
        "simulator": ("#/simulator", "#sim-clients > *"),
    }
    out = {name: [] for name in pages}
    out["first load"] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            for _ in range(runs):
                page.goto("about:blank")
                t = time.perf_counter()
                page.goto(f"http://{http}/#/overview")
                page.wait_for_selector(pages["overview"][1], timeout=30_000)
                out["first load"].append((time.perf_counter() - t) * 1000)
                for name, (hash_, mark) in pages.items():
                    # From a page with nothing of this one on it.
                    page.evaluate("h => { location.hash = h; }", "#/sql" if name != "sql" else "#/groups")
                    page.wait_for_selector("#sql-text" if name != "sql" else "main table", timeout=30_000)
                    t = time.perf_counter()
                    page.evaluate("h => { location.hash = h; }", hash_)
                    page.wait_for_selector(mark, timeout=30_000)
                    out[name].append((time.perf_counter() - t) * 1000)
        finally:
            browser.close()
    print("result " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
