"""Start the app, open every page in headless Chromium, check it and save screenshots.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Uses Debian's /usr/bin/chromium through Playwright (never ``playwright install``: no
browser download). For each page: waits until Streamlit has finished running it, fails
on any exception box, and on the Orbitals page counts the drawn pixels of the 3Dmol.js
canvas. The browser test (tests/test_browser.py) runs the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
#: (URL path, file name, text that shows the page has its content).
PAGES = [
    ("", "home", "Prediction time"),
    ("Hamiltonian", "hamiltonian", "The paper's metrics"),
    ("Orbitals", "orbitals", "Blue: positive"),
    ("Equivariance", "equivariance", "Largest relative error"),
    ("SCF_guess", "scf_guess", "Predicted guess:"),
    ("Train", "train", "Training steps"),
    ("Models", "models", "Training structures: the training split"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(port: int | None = None, timeout: float = 120) -> Iterator[str]:
    """Run ``streamlit run app.py`` headless on a free loopback port; yield its URL."""
    port = port or free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    log = open(ROOT / "runs" / "screenshots-server.log", "w") if (ROOT / "runs").is_dir() else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start on port {port}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def wait_until_done(page, text: str, timeout: float = 240) -> None:
    """Wait for ``text`` and for Streamlit's running indicator to stay away for a moment."""
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout * 1000)
    quiet_since = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 2.0:
            return
        time.sleep(0.25)
    raise TimeoutError(f"the page was still running after {timeout} s")


def canvas_ink(page) -> int:
    """Non-white pixels of the first 3Dmol.js canvas in any iframe of the page."""
    from PIL import Image

    for frame in page.frames:
        canvas = frame.locator("canvas")
        if canvas.count():
            shot = canvas.first.screenshot()
            image = Image.open(io.BytesIO(shot)).convert("L")
            return int((np.asarray(image) < 240).sum())
    return 0


def check_pages(url: str, out: Path | None, timeout: float = 240) -> dict[str, dict]:
    """Visit every page; return per page its exception texts and (Orbitals, home) canvas ink."""
    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        for path, name, text in PAGES:
            page.goto(f"{url}/{path}")
            wait_until_done(page, text, timeout)
            page.wait_for_timeout(1500)  # let the 3D views draw
            exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
            results[name] = {
                "exceptions": exceptions,
                "traceback": "Traceback" in page.content(),
                "ink": canvas_ink(page) if name in ("orbitals", "home") else None,
            }
            if out is not None:
                page.mouse.move(700, 500)  # measuring the canvas scrolled it into view: back to the top
                page.mouse.wheel(0, -20000)
                page.wait_for_timeout(300)
                out.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
        browser.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNG files")
    args = parser.parse_args()
    with serve_app() as url:
        results = check_pages(url, Path(args.out))
    bad = False
    for name, r in results.items():
        problems = r["exceptions"] or (["traceback"] if r["traceback"] else [])
        if r["ink"] is not None and r["ink"] < 1000:
            problems.append(f"3D view is blank ({r['ink']} drawn pixels)")
        print(f"{name:<14} {'OK' if not problems else '; '.join(problems)}" + (f"  ink {r['ink']}" if r["ink"] else ""))
        bad |= bool(problems)
    print(f"screenshots in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
