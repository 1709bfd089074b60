"""The rendered report in a real headless browser: screenshot, images decode, no console errors,
wide tables scroll inside their wrappers (first column kept in view), dark mode follows the colour scheme.

Needs ``chromium`` on PATH (``apt-get install -y chromium``, which .ci/run does as root); skipped
otherwise, except in CI as root with apt-get, where a missing chromium fails.
"""

import html as htmlmod
import json
import re
import shutil
import subprocess

import pytest
from ci import required_here, skip_unless_required  # tests/ci.py

from reglab.report import render_report

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
# Injected into a COPY of the page: records errors, CSP violations, undecoded images, page overflow, the
# jobs table's scroll (scrolled to its right end: where its first column and second column then sit) and
# the computed colours of the page and of a figure.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => __errors.push('error: ' + (e.message || (e.target && e.target.tagName))), true);
document.addEventListener('securitypolicyviolation', e => __errors.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI));
const __ce = console.error; console.error = (...a) => { __errors.push('console: ' + a.join(' ')); __ce(...a); };
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const out = {images: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
               errors: __errors, scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
               tables: document.querySelectorAll('table').length,
               wrapped: document.querySelectorAll('.table-wrap > table').length,
               dark: matchMedia('(prefers-color-scheme: dark)').matches,
               background: getComputedStyle(document.body).backgroundColor,
               color: getComputedStyle(document.body).color,
               figureBackground: imgs.length ? getComputedStyle(imgs[0]).backgroundColor : null};
  const jobs = document.querySelector('table.jobs');
  if (jobs) {
    const wrap = jobs.parentElement;
    wrap.scrollLeft = wrap.scrollWidth;
    const row = jobs.querySelector('tbody tr'), left = wrap.getBoundingClientRect().left + wrap.clientLeft;
    out.jobs = {wrapClass: wrap.className, scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth,
                scrollLeft: wrap.scrollLeft, firstLeft: row.cells[0].getBoundingClientRect().left - left,
                secondLeft: row.cells[1].getBoundingClientRect().left - left};
  }
  const pre = document.createElement('pre'); pre.id = 'reglab-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

if CHROMIUM is None:
    try:
        skip_unless_required("chromium is not on PATH (install it with: apt-get install -y chromium)",
                             required_here())
    except pytest.skip.Exception as exc:
        raise pytest.skip.Exception(str(exc), allow_module_level=True) from None


def chromium(tmp_path, *args, timeout=120):
    """Run headless chromium with a throwaway profile; returns the CompletedProcess."""
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def report_html(make_synthetic_results, tmp_path_factory):
    """The synthetic report rendered to a file."""
    root = tmp_path_factory.mktemp("browser")
    syn = make_synthetic_results(root)
    syn.aggregate()
    out = root / "index.html"
    render_report(syn.config, syn.results_dir, out, provenance={"command": "pytest"})
    return out


def test_screenshot_is_a_png(report_html, tmp_path):
    shot = tmp_path / "report.png"
    proc = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report_html.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (1280, 2000) and shot.stat().st_size > 10_000


#: chromium's preferred colour scheme (blink's PreferredColorScheme: 0 dark, 1 light)
SCHEMES = {"dark": "--blink-settings=preferredColorScheme=0", "light": "--blink-settings=preferredColorScheme=1"}


def luminance(css: str) -> float:
    """Relative luminance (0 black .. 1 white) of a computed 'rgb(r, g, b)' colour."""
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def probe_page(report_html, tmp_path, window: str, scheme: str = "light") -> dict:
    """Load a probed copy of the report at ``window`` size, in the ``scheme`` colour scheme, and return
    the probe's findings."""
    page = report_html.read_text()
    # the report forbids scripts by CSP; the copy allows only the inline probe
    page = page.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'", 1)
    page = page.replace("<head>", "<head>\n" + PROBE, 1)
    copy = tmp_path / "probed.html"
    copy.write_text(page)
    proc = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=10000", f"--window-size={window}",
                    SCHEMES[scheme], "--enable-logging=stderr", "--v=0", copy.as_uri())
    found = re.search(r'<pre id="reglab-check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"probe result missing; stderr:\n{proc.stderr[-2000:]}"
    result = json.loads(htmlmod.unescape(found.group(1)))
    result["console"] = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    return result


@pytest.mark.parametrize("window", ["1280,2000", "390,844"])
def test_images_decode_without_errors_and_page_fits(report_html, tmp_path, window):
    result = probe_page(report_html, tmp_path, window)
    assert result["images"] == 10 and result["broken"] == 0, result
    assert result["errors"] == [] and result["console"] == [], result
    # tables scroll inside their wrappers; the page itself never scrolls sideways
    assert result["scrollWidth"] <= result["innerWidth"] + 1, result
    assert result["tables"] == result["wrapped"] > 0, result


def test_wide_table_scrolls_in_its_wrapper_with_its_first_column_in_view(report_html, tmp_path):
    result = probe_page(report_html, tmp_path, "390,844")
    jobs = result["jobs"]
    assert "table-wrap" in jobs["wrapClass"].split(), jobs
    # the jobs table is wider than a phone: its wrapper scrolls (to its right end), the page does not
    assert jobs["scrollWidth"] > jobs["clientWidth"] + 200 and jobs["scrollLeft"] > 200, jobs
    assert result["scrollWidth"] <= result["innerWidth"] + 1, result
    # the first column stays at the wrapper's left edge; the second has scrolled out to the left
    assert abs(jobs["firstLeft"]) <= 1 and jobs["secondLeft"] < 0, jobs


def test_dark_mode_follows_the_colour_scheme(report_html, tmp_path):
    light = probe_page(report_html, tmp_path, "1280,2000", "light")
    dark = probe_page(report_html, tmp_path, "1280,2000", "dark")
    assert not light["dark"] and dark["dark"]
    assert light["background"] == "rgb(255, 255, 255)" and luminance(light["color"]) < 0.2, light
    assert luminance(dark["background"]) < 0.1 and luminance(dark["color"]) > 0.7, dark
    # figures are drawn on white and keep a white ground on the dark page
    assert light["figureBackground"] == dark["figureBackground"] == "rgb(255, 255, 255)", dark
    assert dark["errors"] == [] and dark["broken"] == 0, dark


def test_probe_detects_broken_images_and_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                   'img-src data:; style-src \'unsafe-inline\'"></head><body><img src="data:image/png;base64,AAAA" alt="x">'
                   '<img src="data:image/png;base64,AAAA" alt="y" onerror="undefined_function()"></body></html>')
    result = probe_page(bad, tmp_path, "800,600")
    assert result["images"] == 2 and result["broken"] == 2
    assert result["errors"], result
