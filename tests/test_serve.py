"""`melanoma serve`: a real server process, driven by gradio_client and by a headless browser.

The tests in this module share one server, in file order: the last one stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import lesion_image
from typer.testing import CliRunner

from melanoma_cli.cli import app

pytestmark = pytest.mark.slow  # every test here trains, serves or spawns processes

runner = CliRunner()
START_TIMEOUT = 180  # seconds: TensorFlow, Gradio and the model load on a busy 2-core machine


def test_serve_without_gradio_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--port", str(port)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert "Warning: listening on 0.0.0.0" in lines[0]
    assert lines[-1] == 'Error: the web page needs Gradio: pip install ".[web]" in a checkout of melanoma-cli'


def test_a_busy_port_is_refused_before_anything_loads():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: cannot serve on 127.0.0.1:{port}: it is in use (choose "
                                     "another port with --port)")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    tmp: Path  # the server's TMPDIR: Gradio's private upload folder is made inside it

    def private_folders(self) -> list[Path]:
        return sorted(self.tmp.glob("melanoma-serve-*"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("gradio", reason='the web page needs the web extra: pip install ".[web]"')
    pytest.importorskip("gradio_client", reason="gradio_client drives the page")
    tmp = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"}
    env["TMPDIR"] = str(tmp)
    log = (tmp / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "melanoma_cli", "serve", "--model", str(trained_run),
                                "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as page:
                assert page.status == 200
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the server did not start:\n{(tmp / 'server.log').read_text()}")
            time.sleep(0.5)
    yield Server(url, process, tmp)
    if process.poll() is None:
        process.kill()
        process.wait()
    log.close()


def _expected(trained_run: Path, image: Path) -> dict:
    result = runner.invoke(app, ["predict", str(image), "--model", str(trained_run), "--engine", "keras",
                                 "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)[0]


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    good = folder / "lesion.jpg"
    lesion_image("melanoma", 3, size=64).save(good, quality=95)
    not_image = folder / "notes.jpg"
    not_image.write_bytes(b"these are notes, not a picture")
    truncated = folder / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    return {"good": good, "not_image": not_image, "truncated": truncated}


def _leftovers(server: Server) -> list[Path]:
    """Files with content left in the server's upload folder."""
    (folder,) = server.private_folders()
    return [path for path in folder.rglob("*") if path.is_file() and path.stat().st_size > 0]


def test_client_gets_an_answer_for_good_and_bad_uploads(server, uploads, trained_run):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    expected = _expected(trained_run, uploads["good"])

    def classify(*names: str) -> str:
        html, cleared = client.predict([handle_file(str(uploads[name])) for name in names],
                                       api_name="/classify")
        assert cleared is None  # the upload box empties: its files are gone
        return html

    started = time.perf_counter()
    good = classify("good")
    seconds = time.perf_counter() - started
    flag = "MELANOMA FLAG" if expected["melanoma_flag"] else "no melanoma flag"
    assert f'data-flag="{str(expected["melanoma_flag"]).lower()}"' in good and flag in good
    assert f"<td>{expected['prediction']}</td><td>{expected['probability']:.3f}</td>" in good
    assert "data:image/png;base64," in good and "Decision aid only" in good
    assert "Not classified: not an image (unrecognised format)." in classify("not_image")
    assert "Not classified: truncated or corrupt image data." in classify("truncated")
    assert server.process.poll() is None
    assert classify("good") == good  # still up, and answers the same
    both = classify("not_image", "good")  # one section per file, in the order given
    assert both.index("notes.jpg") < both.index("lesion.jpg") and both.count('class="lesion') == 2
    assert _leftovers(server) == []
    print(f"one image answered in {seconds:.2f} s")


def _browser():
    """A headless Chromium under Selenium, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium")
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("the browser test needs Chromium and chromedriver (apt-get install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1200"):
        options.add_argument(argument)
    try:
        return webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)
    except Exception as exc:  # selenium raises its own WebDriverException and friends
        pytest.skip(f"Chromium did not start: {str(exc).splitlines()[0]}")


def test_browser_upload_shows_the_flag(server, uploads, trained_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(server.url)
        upload = WebDriverWait(browser, 60).until(
            lambda page: page.find_element(By.CSS_SELECTOR, "input[type=file]"))
        upload.send_keys(str(uploads["good"]))
        flag = WebDriverWait(browser, 60).until(
            lambda page: page.find_element(By.CSS_SELECTOR, "#result .flag"))
        expected = _expected(trained_run, uploads["good"])
        assert flag.text.startswith("MELANOMA FLAG" if expected["melanoma_flag"] else "no melanoma flag")
        assert f"p(melanoma) {expected['melanoma_probability']:.3f}" in flag.text
        assert "Decision aid only" in browser.find_element(By.ID, "result").text
    finally:
        browser.quit()
    assert _leftovers(server) == []


def test_upload_over_the_size_cap_is_refused_and_kept_nowhere(server, tmp_path):
    import httpx

    from melanoma_cli.web.app import MAX_FILE_SIZE

    cap = int(MAX_FILE_SIZE.removesuffix("mb")) * 1024 * 1024  # Gradio reads "mb" as MiB
    big = tmp_path / "huge.jpg"
    with big.open("wb") as out:
        out.truncate(cap + 1)
    with big.open("rb") as body:
        answer = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("huge.jpg", body)},
                            timeout=120)
    assert answer.status_code == 413, answer.text
    assert "maximum allowed size" in answer.text
    assert server.process.poll() is None
    assert _leftovers(server) == []


def test_sigterm_stops_the_server_and_removes_its_upload_folder(server):
    assert len(server.private_folders()) == 1
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    assert server.private_folders() == []
