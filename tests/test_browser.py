"""The running app in headless Chromium: every page renders without an exception, 3D views draw.

Runs ``streamlit run app.py`` on a free loopback port and drives Debian's chromium through
Playwright (scripts/screenshots.py holds the shared code); screenshots go to pytest's tmp folder.
"""

import os
import shutil

import pytest

from scripts.screenshots import CHROMIUM, PAGES, check_pages, serve_app

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and shutil.which("npm")),
    reason="needs Debian's chromium and npm (.ci/run and install.sh provide them)",
)


def test_every_page_in_a_real_browser(tmp_path):
    with serve_app() as url:
        results = check_pages(url, tmp_path)
    assert set(results) == {name for _, name, _ in PAGES}
    for name, result in results.items():
        assert not result["exceptions"], f"{name}: {result['exceptions']}"
        assert not result["traceback"], name
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    # The 3Dmol.js canvases (served from static/, no CDN) have drawn a molecule and its isosurfaces.
    assert results["orbitals"]["ink"] > 5_000
    assert results["home"]["ink"] > 1_000
