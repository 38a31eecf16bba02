"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`).

Only the standard library: no websocket client, no playwright download. Chromium reads commands on fd 3 and
writes replies on fd 4, one JSON message per NUL-terminated chunk. Used by tests/test_app.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

#: Names of the Chromium binary, in the order they are looked for ($CHROMIUM first).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else the first of `CHROMIUM_NAMES` on PATH (Debian's package: chromium)."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((found for found in map(shutil.which, CHROMIUM_NAMES) if found), None)


def _move_to_fds_3_and_4(commands: int, replies: int) -> None:  # runs in the child, before exec
    os.dup2(commands, 100)
    os.dup2(replies, 101)
    os.dup2(100, 3)
    os.dup2(101, 4)


class HeadlessChromium:
    """One headless Chromium with one page; `page(method, **params)` sends a DevTools command to that page."""

    def __init__(self, binary: str, profile_dir: str | os.PathLike, width: int = 1280, height: int = 1400,
                 log_path: str | os.PathLike | None = None):
        child_reads, self._commands = os.pipe()
        self._replies, child_writes = os.pipe()
        self._log = open(log_path or os.devnull, "wb")
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--remote-debugging-pipe",
             f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4, child_reads, child_writes), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=self._log, preexec_fn=lambda: _move_to_fds_3_and_4(child_reads, child_writes),
            start_new_session=True,  # its zygote and renderers share our child's process group
        )
        os.close(child_reads)
        os.close(child_writes)
        self._buffer = b""
        self._last_id = 0
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _next_message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit status {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:  # events of the page arrive in between; only our reply matters
            reply = self._next_message()
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def page(self, method: str, **params) -> dict:
        return self.send(method, session=self.session, **params)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        """Poll until `expression` is truthy; returns its value (TimeoutError with the expression otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout:.0f} s the page still has no {expression}")
            time.sleep(0.2)

    def set_files(self, selector: str, paths: list[str]) -> None:
        """Choose files in the `<input type=file>` matching `selector` (as a user picking them would)."""
        root = self.page("DOM.getDocument")["root"]["nodeId"]
        node = self.page("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise RuntimeError(f"no element matches {selector!r}")
        self.page("DOM.setFileInputFiles", nodeId=node, files=[os.fspath(p) for p in paths])

    def screenshot(self, path: str | os.PathLike) -> None:
        """Save the whole page (not only the window) as a PNG."""
        data = self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(timeout=15)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group this class started, nothing else
            except ProcessLookupError:
                pass
            self.process.wait()
        finally:
            os.close(self._commands)
            os.close(self._replies)
            self._log.close()
