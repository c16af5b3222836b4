"""The pictures of the documentation (docs/img/), made from a real demo run.

    .venv/bin/python -m tools.docs.pictures               # a fresh demo run, then every picture
    .venv/bin/python -m tools.docs.pictures --from DIR    # reuse an `audioflow run` folder instead

A fresh run is the ZenML pipeline (what ``make demo`` runs) on the built-in demo dataset, in a
temporary project with its own ZENML_CONFIG_PATH, trained for ``RUN_SETTINGS`` to keep it
affordable (about 8 minutes on two CPU cores). Its published files give the evaluation pictures; a
local ZenML server (``zenml login --local --blocking``, no authentication, on 127.0.0.1) then
serves the dashboard, whose view of that run becomes ``zenml-run.png``. The HTML pages (the
validation report, the dashboard) are photographed by headless Chromium (Debian's ``chromium``),
driven over the DevTools protocol on a pipe so that a single-page app can be waited for in real
time. Every temporary folder and process this script starts is removed or stopped, on errors too.

``--from DIR`` takes DIR/outputs/ and DIR/artifacts/train/ of an earlier ``audioflow run`` (the
repository itself after ``audioflow run``) and makes every picture but the dashboard's.

``PICTURES`` lists the pictures with their captions, ``PAGES`` the page of docs/ each belongs on.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"
BIN = Path(sys.executable).parent
# `zenml` as the running interpreter's module (its console script may be in another environment:
# `uv run --with 'zenml[server]==...'` adds the server's packages in an overlay of this one)
ZENML_CLI = "import sys; from zenml.cli.cli import cli; sys.exit(cli())"
# What the local ZenML server needs beyond zenml itself (zenml[server]); not in uv.lock, so that
# the deployment's FastAPI is not held back by ZenML's pins: `make docs-pictures` adds them.
SERVER_EXTRA = "zenml[server]==0.98.0"
MAX_WIDTH = 1200  # px; pictures wider than this (by more than a few per cent) are scaled down
MAX_BYTES = 300_000  # a larger PNG is reduced to a 256-colour palette

# How the demo run is trained: fewer epochs than params.yaml's auto (30, up to 60) keep the
# script affordable; every caption says so.
RUN_SETTINGS = ("train.epochs=20",)
MADE_WITH = (f"From the built-in demo dataset (300 synthetic heart-sound recordings, 3 classes), "
             f"trained with {', '.join(RUN_SETTINGS)} instead of params.yaml's default.")

DAMAGED = ("`audioflow validate` on the built-in demo dataset with five recordings damaged on purpose "
           "(an empty file, digital silence, a clipped one, a stereo one, a manifest line whose file is missing).")

# Each picture of docs/img/ and its caption.
PICTURES: dict[str, str] = {
    "validation-report.png": "The top of outputs/validation_report.html: the verdict, the problems found "
                             f"and the per-class table. {DAMAGED}",
    "validation-distributions.png": "Further down the validation report: each class's durations, levels, "
                                    f"peaks and clipping, and the sample rates and channel counts. {DAMAGED}",
    **{name: f"{caption} {MADE_WITH}" for name, caption in {
        "confusion-matrix.png": "outputs/confusion_matrix.png: counts and row-normalised rates on the test split.",
        "curves.png": "outputs/curves.png: ROC and precision-recall curves, each class against the rest.",
        "reliability.png": "outputs/reliability.png: the reliability diagram before and after temperature scaling.",
        "training-curves.png": "artifacts/train/training_curves.png: loss and validation metrics per epoch, and "
                               "the refit on train + val.",
        "zenml-run.png": "The ZenML dashboard's page of the demo pipeline's run (`zenml login --local`): "
                         "each step and the artifacts it made.",
    }.items()},
}
# Where each belongs in docs/ (the guides embed them).
PAGES: dict[str, str] = {
    "validation-report.png": "guides/validation.md",
    "validation-distributions.png": "guides/validation.md",
    "confusion-matrix.png": "guides/evaluation.md",
    "curves.png": "guides/evaluation.md",
    "reliability.png": "guides/evaluation.md",
    "training-curves.png": "guides/training.md",
    "zenml-run.png": "guides/zenml.md",
}
# Picture <- file of a run folder (an `audioflow run`'s, or the ZenML project's).
COPIED = {
    "confusion-matrix.png": "outputs/confusion_matrix.png",
    "curves.png": "outputs/curves.png",
    "reliability.png": "outputs/reliability.png",
    "training-curves.png": "artifacts/train/training_curves.png",
}


def say(msg: str) -> None:
    print(f"pictures: {msg}", flush=True)


# --------------------------------------------------------------------------- headless Chromium


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium-based browser on PATH), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def _stop(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """Terminate a process this script started (and its process group), wait, then kill."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of its group (renderers, zygotes)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(grace_s)


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    commands in on fd 3, answers out on fd 4, NUL-terminated JSON), so that a page can be waited
    for in real time, which ``--screenshot`` with ``--virtual-time-budget`` cannot do for a
    single-page app that lays out in a worker (the ZenML dashboard's DAG)."""

    def __init__(self, binary: str | None = None, timeout_s: float = 60):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise RuntimeError("chromium not found: apt-get install chromium")
        self.timeout_s = timeout_s
        self._id = 0
        self._buf = b""

    def __enter__(self) -> Browser:
        self._tmp = tempfile.mkdtemp(prefix="audioflow-chromium-")
        # Both pipes' ends well above 4, so that placing them on 3 and 4 in the child cannot clash.
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def fds_3_and_4() -> None:  # in the child, before exec: dup2 leaves them inheritable
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        cmd = [self.binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
               "--hide-scrollbars", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
               "--mute-audio", "--no-proxy-server", f"--user-data-dir={self._tmp}/profile", "about:blank"]
        # Its crash-report database and caches go to the temporary folder too, not ~/.config, ~/.cache.
        env = os.environ | {"XDG_CONFIG_HOME": f"{self._tmp}/config", "XDG_CACHE_HOME": f"{self._tmp}/cache"}
        try:
            # close_fds=False: closing runs after preexec_fn and would close 3 and 4 again (the
            # other descriptors of this process are not inheritable: PEP 446).
            self.proc = subprocess.Popen(cmd, preexec_fn=fds_3_and_4, close_fds=False, start_new_session=True, env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        except BaseException:
            for fd in (to_chrome_w, from_chrome_r):
                os.close(fd)
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        finally:
            for fd in high:
                os.close(fd)
        self._w, self._r = to_chrome_w, from_chrome_r
        try:
            page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            self.call("Page.enable", session=True)
            self.call("Runtime.enable", session=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close")
                    self.proc.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            _stop(self.proc)
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- the protocol

    def _send(self, method: str, session: bool = False, **params) -> int:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self.proc.poll()})")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Send one command, wait for its answer (events on the way are dropped)."""
        mid = self._send(method, session, **params)
        deadline = time.monotonic() + self.timeout_s
        while True:
            msg = self._read(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> bool:
        """Poll a JavaScript condition until it holds (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(f"Boolean({expression})"):
                return True
            time.sleep(0.25)
        return False

    # -- what the script uses

    def shoot(self, url: str, out: Path, *, width: int = MAX_WIDTH, height: int = 900,
              wait_for: str | None = None, wait_s: float = 60, settle_s: float = 0.5,
              prepare: str | None = None, region: str | None = None) -> Path:
        """Load ``url`` in a ``width`` x ``height`` viewport, wait until the page has loaded (and
        ``wait_for``, a JavaScript condition, holds), run ``prepare`` (JavaScript: clicks, styles)
        if given, then write a PNG of the viewport, or of ``region`` (a JavaScript expression
        giving ``{x, y, width, height}`` in page pixels)."""
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", session=True, url=url)
        if not self.wait_for("document.readyState === 'complete'", wait_s):
            raise TimeoutError(f"{url} did not finish loading in {wait_s}s")
        if wait_for and not self.wait_for(wait_for, wait_s):
            raise TimeoutError(f"{url}: {wait_for} did not hold within {wait_s}s")
        time.sleep(settle_s)  # fonts, the last animation frame
        if prepare:
            self.evaluate(prepare)
            time.sleep(settle_s)
        params: dict = {"format": "png"}
        if region:
            r = self.evaluate(region)
            params |= {"clip": {**r, "scale": 1}, "captureBeyondViewport": True}
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, **params)["data"])
        out.write_bytes(data)
        return out


def screenshot(url: str | Path, out: Path, **kwargs) -> Path:
    """One page (a URL, or an HTML file) as a PNG: ``Browser.shoot`` in a browser of its own."""
    if isinstance(url, Path):
        url = url.resolve().as_uri()
    with Browser() as browser:
        return browser.shoot(url, out, **kwargs)


def between(first: str, then: str | None, width: int = MAX_WIDTH, margin: int = 16) -> str:
    """A ``region`` from element ``first`` down to element ``then`` (CSS selectors; None: the
    end of the page), across the page."""
    end = f"document.querySelector({json.dumps(then)}).getBoundingClientRect().top" if then else \
        "document.documentElement.scrollHeight - window.scrollY"
    return (f"(() => {{ const a = document.querySelector({json.dumps(first)}).getBoundingClientRect();"
            f" const y = a.top + window.scrollY - {margin};"
            f" return {{x: 0, y: y, width: {width}, height: {end} + window.scrollY - {margin} - y}}; }})()")


# --------------------------------------------------------------------------- pictures


def shrink(png: Path, max_width: int = MAX_WIDTH, max_bytes: int = MAX_BYTES) -> tuple[int, int]:
    """Scale ``png`` down to ``max_width`` and, if it is still over ``max_bytes``, reduce it to a
    256-colour palette; its size in pixels."""
    from PIL import Image

    with Image.open(png) as im:
        im.load()
    im = im.convert("RGB")
    if im.width > max_width * 1.05:  # not 1210 px to 1200: resampling only blurs and grows the file
        im = im.resize((max_width, round(im.height * max_width / im.width)), Image.LANCZOS)
    im.save(png, optimize=True)
    if png.stat().st_size > max_bytes:
        im.quantize(256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    return im.size


def copy_pictures(run: Path, img: Path) -> list[str]:
    """The run's own figures, copied (and scaled down where wider than MAX_WIDTH)."""
    made = []
    for name, src in COPIED.items():
        if not (run / src).exists():
            raise FileNotFoundError(f"{run / src} is missing: is {run} the folder of a finished run?")
        shutil.copyfile(run / src, img / name)
        shrink(img / name)
        made.append(name)
    return made


def damaged_report(tmp: Path) -> Path:
    """The validation report of the demo recordings with a few damaged on purpose (what the report
    is for): `audioflow validate` on a fresh demo-data folder in ``tmp``; returns the report."""
    import numpy as np
    import pandas as pd
    import soundfile as sf

    data = tmp / "damaged"
    subprocess.run([str(BIN / "audioflow"), "demo-data", str(data)], check=True, capture_output=True)
    manifest = pd.read_csv(data / "manifest.csv")
    first = manifest.groupby("label").head(2)["path"].tolist()  # two of each class
    (data / first[0]).write_bytes(b"")  # empty
    audio, rate = sf.read(data / first[1])
    sf.write(data / first[2], np.zeros_like(audio), rate)  # digital silence
    sf.write(data / first[3], np.clip(audio * 40, -1, 1), rate)  # clipped
    sf.write(data / first[4], np.stack([audio, audio], axis=1), rate)  # stereo
    missing = {**manifest.iloc[0].to_dict(), "path": "recordings/normal/p999_1.wav", "label": "normal"}
    pd.concat([manifest, pd.DataFrame([missing])]).to_csv(data / "manifest.csv", index=False)
    out = tmp / "damaged-outputs"
    # exit 1: the damage fails validation; the report is what this wants
    subprocess.run([str(BIN / "audioflow"), "validate", str(data), "--params", str(ROOT / "params.yaml"),
                    "--outputs", str(out), "-q"], capture_output=True)
    if not (out / "validation_report.html").exists():
        raise RuntimeError(f"audioflow validate {data} wrote no report")
    return out / "validation_report.html"


def report_pictures(report: Path, img: Path, browser: Browser) -> list[str]:
    """The validation report: its top, and its distributions section."""
    url = report.resolve().as_uri()
    browser.shoot(url, img / "validation-report.png", height=900)
    browser.shoot(url, img / "validation-distributions.png", region=between("#pictures", "#expectations"))
    for name in ("validation-report.png", "validation-distributions.png"):
        shrink(img / name)
    return ["validation-report.png", "validation-distributions.png"]


# --------------------------------------------------------------------------- the ZenML run


class Project:
    """A temporary copy of the pipeline's code with its own ZenML store (tests/test_zenml.py's)."""

    def __init__(self, root: Path, settings: list[str]):
        import yaml

        from audioflow.config import set_key

        self.root = root
        for d in ("steps", "pipelines", "configs"):
            shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        set_key(params, "data.root", "data", existing=True)  # in the project; the report names it so
        for item in settings:
            key, _, value = item.partition("=")
            set_key(params, key, yaml.safe_load(value), existing=True)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (root / "tmp").mkdir()
        self.env = os.environ | {
            "ZENML_CONFIG_PATH": str(root / ".zenml-config"),
            "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "ZENML_AUTO_OPEN_DASHBOARD": "false",
            "AUDIOFLOW_PARAMS": str(root / "params.yaml"),
            "PYTHONPATH": str(root),
            "TMPDIR": str(root / "tmp"),  # what the run leaves in temporary files goes with the project
        }

    def sh(self, *cmd: str, timeout: float = 3600) -> str:
        p = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p.stdout

    def python(self, code: str) -> str:
        return self.sh(sys.executable, "-c", code).strip().splitlines()[-1]


# Run in the project: the last run's id, its training curves (from the train step's model folder,
# loaded into the project), and the default user marked as past the dashboard's welcome survey.
LAST_RUN = """
import shutil
from pathlib import Path
from zenml.client import Client
c = Client()
run = c.get_pipeline_run(c.list_pipeline_runs(sort_by="desc:created", size=1).items[0].id)
model = Path(run.steps["train"].outputs["trained_model"][0].load())
Path("artifacts/train").mkdir(parents=True, exist_ok=True)
shutil.copyfile(model / "training_curves.png", "artifacts/train/training_curves.png")
shutil.rmtree(model, ignore_errors=True)
user = c.active_user
c.update_user(user.id, updated_email_opt_in=False, updated_metadata={"finished_onboarding_survey": True})
print(run.id, run.project.name, run.status.value)
"""


# The pipeline's progress lines shown while it runs (all of them with --verbose).
STEP_LINE = re.compile(r"Step .* has (started|finished|failed)|^(test|took|zenml run) ")


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 directly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def zenml_server(project: Project, startup_s: float = 180) -> Iterator[str]:
    """The local ZenML server (``zenml login --local --blocking``: the server in this process,
    no authentication) on a free port of 127.0.0.1; its URL. Stopped by its process id after."""
    port = free_port()
    log = open(project.root / "zenml-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", ZENML_CLI, "login", "--local", "--blocking",
                             "--ip-address", "127.0.0.1", "--port", str(port)],
                            cwd=project.root, stdout=log, stderr=subprocess.STDOUT,
                            env=project.env | {"ZENML_SERVER_AUTO_ACTIVATE": "true"}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the ZenML server exited ({proc.returncode}):\n"
                                   f"{(project.root / 'zenml-server.log').read_text()[-3000:]}")
            try:
                with NO_PROXY.open(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ZenML server did not answer on {url} within {startup_s}s")
            time.sleep(1)
        say(f"ZenML server on {url} (process {proc.pid})")
        yield url
    finally:
        _stop(proc, grace_s=15)
        log.close()
        say(f"ZenML server stopped (process {proc.pid})")


# The dashboard's run page, ready: the DAG laid out (its step nodes drawn), no spinner left.
DAG_READY = ("document.querySelectorAll('.react-flow__node').length >= 8"
             " && !document.body.innerText.includes('Calculating DAG')")
# Then the run insights panel folded away and the DAG fitted to the whole width; images that
# did not load (the project's avatar, from the internet) hidden rather than drawn broken.
DAG_WIDE = """(() => {
  for (const img of document.images) if (!img.naturalWidth) img.style.visibility = 'hidden';
  const title = [...document.querySelectorAll('*')].find(
    e => e.childElementCount === 0 && e.textContent.trim() === 'Run Insights');
  const fold = title && title.parentElement.querySelector('button');
  if (!fold) return false;
  fold.click();
  setTimeout(() => document.querySelector('button[aria-label="Fit view"]')?.click(), 500);
  return true;
})()"""


def zenml_run(project: Project, verbose: bool) -> tuple[str, str]:
    """The demo pipeline run by ZenML in ``project`` (the demo dataset written first), its
    training curves fetched; the run's id and its ZenML project's name."""
    t0 = time.perf_counter()
    say("ZenML pipeline run on the demo dataset: python -m pipelines.run --demo-data")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.run", "--demo-data"], cwd=project.root, env=project.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            plain = re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip()
            if verbose or STEP_LINE.search(plain):
                print(f"  {plain}", flush=True)
        proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: the run goes too
            _stop(proc)
        proc.stdout.close()
    if proc.returncode:
        raise RuntimeError(f"the pipeline run failed ({proc.returncode}):\n{''.join(lines[-60:])}")
    say(f"pipeline run done in {time.perf_counter() - t0:.0f}s")
    run_id, project_name, status = project.python(LAST_RUN).split()
    if status != "completed":
        raise RuntimeError(f"the ZenML run {run_id} is {status}")
    return run_id, project_name


def dashboard_picture(project: Project, run_id: str, project_name: str, img: Path, browser: Browser) -> list[str]:
    """The dashboard's page of the run, served by a local ZenML server for the while."""
    with zenml_server(project) as url:
        page = f"{url}/projects/{project_name}/runs/{run_id}"
        say(f"photographing {page}")
        browser.shoot(page, img / "zenml-run.png", width=MAX_WIDTH, height=1350, wait_for=DAG_READY,
                      wait_s=120, settle_s=2, prepare=DAG_WIDE)
    shrink(img / "zenml-run.png")
    return ["zenml-run.png"]


# --------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.docs.pictures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", metavar="DIR", type=Path,
                        help="reuse the folder of a finished `audioflow run` (DIR/outputs, DIR/artifacts/train) "
                             "instead of a fresh run; the dashboard picture is then left as it is")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help=f"parameters of the fresh run (repeatable; default: {' '.join(RUN_SETTINGS)}); "
                             "the captions in PICTURES name the default")
    parser.add_argument("--no-dashboard", action="store_true",
                        help="a fresh run without the ZenML server and the dashboard picture")
    parser.add_argument("--img", type=Path, default=IMG, help="where the pictures go (default: docs/img)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the pipeline run's own output")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    if not find_chromium():
        parser.error("chromium is not installed (Debian: apt-get install chromium)")
    if not (args.source or args.no_dashboard) and importlib.util.find_spec("secure") is None:
        parser.error(f"the dashboard picture needs the local ZenML server ({SERVER_EXTRA}, not in uv.lock): "
                     f"make docs-pictures runs this with `uv run --with '{SERVER_EXTRA}'`; or pass --no-dashboard")
    args.img.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.source:
        run = args.source.resolve()
        say(f"pictures of the run in {run}")
        made = copy_pictures(run, args.img)
        with Browser() as browser:
            tmp = Path(tempfile.mkdtemp(prefix="audioflow-pictures-"))
            try:
                made += report_pictures(damaged_report(tmp), args.img, browser)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="audioflow-pictures-"))
        settings = args.set or list(RUN_SETTINGS)
        say(f"fresh demo run in {tmp} ({', '.join(settings)})")
        try:
            project = Project(tmp, settings)
            run_id, project_name = zenml_run(project, args.verbose)
            made = copy_pictures(project.root, args.img)
            with Browser() as browser:
                made += report_pictures(damaged_report(tmp), args.img, browser)
                if not args.no_dashboard:
                    made += dashboard_picture(project, run_id, project_name, args.img, browser)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            say(f"removed {tmp}")
    from PIL import Image

    for name in made:
        with Image.open(args.img / name) as im:
            w, h = im.size
        say(f"wrote {args.img / name}: {w}x{h} px, {(args.img / name).stat().st_size / 1000:.0f} KB")
    say(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
