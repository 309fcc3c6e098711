"""A local aiohttp server for tests and benches (the executor stub, the vLLM stand-in): started in a
running event loop on host:port (port 0: a free one, read back after start), stopped cleanly."""

from __future__ import annotations

from typing import Any, Self


class LocalServer:
    """Mixin: the class gives ``host``, ``port`` and ``_runner`` (None) and defines `_routes`;
    `_started` and `_stopping` are hooks for its own set-up and clean-up."""

    host: str
    port: int
    _runner: Any

    def _routes(self, app: Any) -> None:
        raise NotImplementedError

    def _started(self) -> None:
        """Called in the event loop before the app is built (queues, tasks, random state)."""

    def _stopping(self) -> None:
        """Called in the event loop before the app is cleaned up."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> Self:
        from aiohttp import web

        self._started()
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._stopping()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
