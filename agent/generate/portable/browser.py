"""The portable image runtime in a real browser: ``renderer/bench.html`` (``renderer/bench.js`` over
``renderer/sampler.js`` and onnxruntime-web's WASM build, one thread) served from a local static site and driven
in headless Chromium through playwright. Tests and ``bench/renderer_agreement.py`` use it to hold the browser to
the Node runtime (:class:`~agent.generate.portable.wasm_runtime.WasmSpriteRuntime`) byte for byte.

- :func:`assemble_site` writes the static site: the page and ``renderer/*.js``, onnxruntime-web's ESM build and its
  ``.wasm`` under ``ort/``, the exported model under ``model/``. The page fetches everything by relative URL.
- :class:`StaticSite` serves a directory on ``127.0.0.1`` (a free port; a secure context, so the page can check
  the model's sha256 with ``crypto.subtle``) through :class:`agent.http.ServerThread`.
- :class:`ChromiumSpriteRuntime` assembles and serves a site for one export, opens the page in Chromium and
  renders requests with the request fields and pixel format of :class:`WasmSpriteRuntime`.

Chromium is Debian's ``/usr/bin/chromium`` (or ``$CHRYSALIS_CHROMIUM``), launched by playwright without any
browser download, as the studio's browser tests do.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from agent.errors import BackendUnavailableError, ConfigError
from agent.generate.portable.onnx_export import CONSTANTS_NAME, ONNX_NAME
from agent.generate.portable.wasm_runtime import (
    ORT_WEB_VERSION,
    _check_export_dir,
    find_node_modules,
    request_json,
)
from agent.generate.sprites.dataset import SIZE
from agent.http import ServerThread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

RENDERER_DIR = Path(__file__).resolve().parents[3] / "renderer"
PAGE = "bench.html"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
"""What the page needs of ``onnxruntime-web/dist``: the WASM-only ESM build, its Emscripten glue and the .wasm."""
CHROMIUM_HINT = (
    "install Debian's package (`apt-get install -y chromium`, which `make setup` does when run as root), "
    "or point CHRYSALIS_CHROMIUM at a Chromium binary"
)


def assemble_site(export_dir: Path | str, dest: Path | str) -> Path:
    """Write the renderer's static site for the model in ``export_dir`` into ``dest`` (created if missing) and
    return ``dest``: ``bench.html`` and ``renderer/*.js`` at the top, :data:`ORT_FILES` under ``ort/``,
    ``unet.onnx`` and ``scheduler.json`` under ``model/``. Files are copied as they are (the page checks the
    model's digests itself).

    Raises:
        NotFoundError: ``export_dir`` lacks ``unet.onnx`` or ``scheduler.json``.
        ConfigError: onnxruntime-web is missing or not the pinned version (the hint says how to install it).
    """
    model = _check_export_dir(export_dir)
    site = copy_renderer(dest, PAGE)
    (site / "model").mkdir(exist_ok=True)
    for name in (ONNX_NAME, CONSTANTS_NAME):
        shutil.copyfile(model / name, site / "model" / name)
    return site


def copy_renderer(dest: Path | str, page: str) -> Path:
    """Copy the renderer's browser files into ``dest`` (created if missing) and return it: ``page`` (a file of
    ``renderer/``) and ``renderer/*.js`` at the top, :data:`ORT_FILES` under ``ort/``. What every renderer page
    needs besides a model (:func:`assemble_site` adds one under ``model/``; the token viewer fetches its own).

    Raises:
        ConfigError: onnxruntime-web is missing or not the pinned version (the hint says how to install it).
    """
    dist = find_node_modules() / "onnxruntime-web" / "dist"
    site = Path(dest)
    (site / "ort").mkdir(parents=True, exist_ok=True)
    for src in [RENDERER_DIR / page, *sorted(RENDERER_DIR.glob("*.js"))]:
        shutil.copyfile(src, site / src.name)
    for name in ORT_FILES:
        shutil.copyfile(dist / name, site / "ort" / name)
    return site


class StaticSite(ServerThread):
    """Serves the files under ``directory`` (GET and HEAD) on ``http://127.0.0.1:<free port>``; ``.mjs`` and
    ``.js`` as ``text/javascript``, ``.wasm`` as ``application/wasm``. A context manager (:class:`ServerThread`):
    :attr:`url` is valid once started."""

    def __init__(self, directory: Path | str, *, name: str = "renderer-site") -> None:
        import mimetypes

        from starlette.applications import Starlette
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles

        # Module scripts need a JavaScript MIME type, and WebAssembly.instantiateStreaming application/wasm.
        mimetypes.add_type("text/javascript", ".mjs")
        mimetypes.add_type("application/wasm", ".wasm")
        # Mounted in an app, so a missing file (the browser's /favicon.ico) is a plain 404, not a logged exception
        app = Starlette(routes=[Mount("/", app=StaticFiles(directory=str(directory)))])
        super().__init__(app, host="127.0.0.1", port=0, name=name)


def find_chromium() -> str:
    """The Chromium binary: ``$CHRYSALIS_CHROMIUM`` if set, else Debian's ``/usr/bin/chromium``.

    Raises:
        ConfigError: there is no such executable.
    """
    wanted = os.environ.get("CHRYSALIS_CHROMIUM", "/usr/bin/chromium")
    found = wanted if Path(wanted).is_file() else shutil.which(wanted)
    if found is None:
        raise ConfigError(f"no Chromium at {wanted}", hint=CHROMIUM_HINT)
    return found


@dataclass(frozen=True)
class BrowserRender:
    """One image the page rendered: (32, 32, 3) uint8 pixels, and seconds the page spent on it."""

    pixels: NDArray[np.uint8]
    render_s: float


class ChromiumSpriteRuntime:
    """Renders sprites from an ONNX export in headless Chromium: assembles the site (:func:`assemble_site`) in a
    temporary directory, serves it (:class:`StaticSite`), opens ``bench.html`` and waits until the page has
    loaded onnxruntime-web and the model and checked the model's digests. A context manager; :meth:`close`
    stops the browser and the server and removes the site. Not thread-safe (playwright's sync API).

    Guarantee: the pixels are what ``renderer/sampler.js`` computes in this browser with onnxruntime-web
    :data:`ORT_WEB_VERSION`'s WASM build on one thread, for the same request fields as
    :meth:`WasmSpriteRuntime.render`.

    Args:
        export_dir: The directory :func:`~agent.generate.portable.onnx_export.export_sprite_model` wrote.
        timeout: Seconds to wait for the page to load the model, and for each :meth:`render_all` call.

    Raises:
        NotFoundError: ``export_dir`` lacks ``unet.onnx`` or ``scheduler.json``.
        ConfigError: playwright, Chromium or onnxruntime-web is missing; or the page refused the model (a digest
            that does not match ``scheduler.json``, a file onnxruntime-web cannot load): the message is the
            page's, which it also shows in ``#status``.
        BackendUnavailableError: the page did not get ready within ``timeout``.
    """

    def __init__(self, export_dir: Path | str, *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.info: dict[str, Any] = {}
        self.status_text = ""
        self._tmp = tempfile.TemporaryDirectory(prefix="chrysalis-renderer-site-")
        self._site: StaticSite | None = None
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self.page: Page | None = None
        try:
            self._open(export_dir)
        except BaseException:
            self.close()
            raise

    def _open(self, export_dir: Path | str) -> None:
        site_dir = assemble_site(export_dir, self._tmp.name)
        chromium = find_chromium()
        try:
            from playwright.sync_api import Error as PlaywrightError
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise ConfigError(
                "playwright is not installed", hint="run `make setup` (it is pinned in requirements.lock)"
            ) from None
        self._site = StaticSite(site_dir).start()
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        except PlaywrightError as exc:
            raise ConfigError(
                f"Chromium at {chromium} did not start: {exc.message}", hint=CHROMIUM_HINT
            ) from None
        # its own context, so callers may open more tabs on the same site (page.context.new_page())
        self.page = self._browser.new_context().new_page()
        self.page.set_default_timeout(self.timeout * 1000)
        self.page.goto(f"{self._site.url}/{PAGE}")
        try:
            self.page.wait_for_function(
                "document.body.dataset.state !== 'loading'", timeout=self.timeout * 1000
            )
        except PlaywrightError:
            raise BackendUnavailableError(
                f"the renderer page did not load onnxruntime-web and the model within {self.timeout:.0f} s",
                hint="raise timeout= for slow machines",
            ) from None
        self.status_text = self.page.inner_text("#status")
        failure = self.page.evaluate("window.benchError || null")
        if failure is not None:
            raise ConfigError(
                f"the renderer page refused the model: {failure['error']}", hint=failure["hint"]
            )
        self.info = self.page.evaluate("window.benchReady")
        if self.info.get("ort_version") != ORT_WEB_VERSION:
            raise ConfigError(
                f"the page loaded onnxruntime-web {self.info.get('ort_version')}, not {ORT_WEB_VERSION}",
                hint="run `make setup` (package.json pins onnxruntime-web)",
            )

    @property
    def url(self) -> str:
        """The page's URL (valid while open)."""
        if self._site is None:
            raise BackendUnavailableError("the renderer site is closed")
        return f"{self._site.url}/{PAGE}"

    def render_all(self, requests: Sequence[dict[str, Any]]) -> list[BrowserRender]:
        """Render ``requests`` (each from :func:`request_json`) in order in the page.

        Raises:
            ConfigError: the page refused a request (the message names the request and the page's reason).
            BackendUnavailableError: the runtime is closed.
        """
        if self.page is None:
            raise BackendUnavailableError(
                "the Chromium renderer is closed", hint="open a new ChromiumSpriteRuntime"
            )
        replies: list[dict[str, Any]] = self.page.evaluate("(reqs) => window.renderAll(reqs)", list(requests))
        out = []
        for i, reply in enumerate(replies):
            if not reply.get("ok"):
                raise ConfigError(f"request {i}: {reply.get('error')}", hint=reply.get("hint"))
            pixels = np.frombuffer(base64.b64decode(reply["pixels"]), dtype=np.uint8).reshape(SIZE, SIZE, 3)
            out.append(BrowserRender(pixels.copy(), float(reply["timing"]["render_s"])))
        return out

    def render(
        self,
        seed: int,
        label: int,
        steps: int,
        guidance: float = 1.0,
        init: NDArray[np.uint8] | None = None,
        strength: float | None = None,
    ) -> NDArray[np.uint8]:
        """One image, as :meth:`WasmSpriteRuntime.render` (same arguments, same checks, (32, 32, 3) uint8)."""
        return self.render_all([request_json(seed, label, steps, guidance, init, strength)])[0].pixels

    def close(self) -> None:
        """Close the page and the browser, stop the server and remove the site. Idempotent."""
        page, browser, pw, site = self.page, self._browser, self._pw, self._site
        self.page = self._browser = self._pw = self._site = None
        if page is not None:
            page.close()
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        if site is not None:
            site.stop()
        self._tmp.cleanup()

    def __enter__(self) -> ChromiumSpriteRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = [
    "ORT_FILES",
    "BrowserRender",
    "ChromiumSpriteRuntime",
    "StaticSite",
    "assemble_site",
    "copy_renderer",
    "find_chromium",
    "request_json",
]
