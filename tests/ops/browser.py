"""Headless Chromium over its DevTools protocol, for pages served by a live node.

One browser per ``async with``; :meth:`Page.goto` navigates with a device size,
:meth:`Page.until` waits for a condition inside the page (a polling promise with a
deadline, never a sleep here), :meth:`Page.shot` saves a PNG.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

#: Resolves with the value of ``CONDITION`` once it is truthy, polling every 50 ms.
_UNTIL = """new Promise((resolve, reject) => {
  const deadline = Date.now() + %d;
  const poll = () => {
    let value;
    try { value = (CONDITION); } catch (error) { value = undefined; }
    if (value) { resolve(JSON.stringify(value)); return; }
    if (Date.now() > deadline) { reject(new Error("timed out: " + %s)); return; }
    setTimeout(poll, 50);
  };
  poll();
})"""


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        await self.ws.send_json({"id": self.ids, "method": method, "params": params})
        async for message in self.ws:
            reply = json.loads(message.data)
            if reply.get("id") == self.ids:
                assert "error" not in reply, reply
                result = dict(reply.get("result", {}))
                assert "exceptionDetails" not in result, result["exceptionDetails"]
                return result
        raise AssertionError(f"Chromium closed the connection during {method}")

    async def _event(self, method: str) -> None:
        async for message in self.ws:
            if json.loads(message.data).get("method") == method:
                return
        raise AssertionError(f"Chromium closed the connection before {method}")

    async def goto(self, url: str, width: int, height: int) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)
        await self.call("Page.navigate", url=url)
        await self._event("Page.loadEventFired")

    async def resize(self, width: int, height: int) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)

    async def evaluate(self, expression: str) -> Any:
        done = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                               returnByValue=True)
        return done["result"].get("value")

    async def until(self, condition: str, timeout_ms: int = 30_000) -> Any:
        """The (JSON) value of ``condition`` once truthy inside the page."""
        script = _UNTIL.replace("CONDITION", condition) % (timeout_ms, json.dumps(condition))
        return json.loads(await self.evaluate(script))

    async def shot(self, path: Path) -> None:
        image = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(image["data"]))


@asynccontextmanager
async def browser(binary: str, profile: Path) -> AsyncIterator[Page]:
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "Chromium exited before it listened"
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = found and int(found.group(1))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
    finally:
        proc.terminate()
        await proc.wait()
