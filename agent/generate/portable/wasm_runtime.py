"""The canonical portable image runtime, driven from Python: the exported sprite model run by onnxruntime-web's WASM
build in a long-lived Node.js process (``renderer/node_render.mjs`` over ``renderer/sampler.js``).

:class:`WasmSpriteRuntime` starts one Node process and sends it one JSON line per image, so the agent (and
``verify``) pay Node's start-up and the model load once. The JS side is the same code a browser runs: the
``chrysalis-noise/1`` noise of ``renderer/noise.js`` seeded by the request's seed, and a float32 DDIM loop that
is :class:`~agent.generate.portable.onnx_sampler.OnnxSpriteSampler` operation for operation (every arithmetic
result rounded to float32, square roots read from ``scheduler.json``). The WASM build has no hardware-dependent
fused multiply-add and runs on one thread, so the same request gives the same bits in any process, on any CPU,
in Node or in a browser.

:class:`NumpySpriteRuntime` is the numpy twin of the JS scheduler: the same requests through
:class:`~agent.generate.portable.onnx_sampler.OnnxSpriteSampler` on the same portable noise. Over the WASM
runtime's own UNet (``wasm_unet=``) its pixels equal the Node runtime's bit for bit (the two float32 loops are the
same computation); over native ONNX Runtime only the UNet's float bits may differ (other kernels), so pixels agree
up to a few uint8 values off by 1 (``tests/generate/test_wasm_runtime.py`` asserts both).

Finding the pieces: ``node`` from ``$CHRYSALIS_NODE`` or ``PATH``; onnxruntime-web from
``$CHRYSALIS_NODE_MODULES`` or the repository's ``node_modules`` (``make setup`` installs it), pinned to
:data:`ORT_WEB_VERSION`.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from agent.errors import BackendUnavailableError, ConfigError, NotFoundError
from agent.generate.portable.noise import portable_randn, seed_key
from agent.generate.portable.onnx_export import CONSTANTS_NAME, ONNX_NAME
from agent.generate.portable.onnx_sampler import OnnxSpriteSampler
from agent.generate.sprites.dataset import SIZE

F32 = np.float32
ROOT = Path(__file__).resolve().parents[3]
RENDERER = ROOT / "renderer" / "node_render.mjs"
ORT_WEB_VERSION = "1.31.1"
"""The onnxruntime-web release the portable runtime is pinned to (package.json pins the same, exactly)."""
SETUP_HINT = "run `make setup` (it runs npm install, which puts onnxruntime-web in node_modules)"
EXPORT_HINT = (
    "export the model first: agent.generate.portable.onnx_export.export_sprite_model(model_dir, out_dir)"
)


def find_node() -> str:
    """The ``node`` executable: ``$CHRYSALIS_NODE`` if set, else the first on ``PATH``.

    Raises:
        ConfigError: neither names an executable.
    """
    wanted = os.environ.get("CHRYSALIS_NODE")
    found = shutil.which(wanted) if wanted else shutil.which("node")
    if found is None:
        where = f"CHRYSALIS_NODE={wanted!r} is not an executable" if wanted else "node is not on PATH"
        raise ConfigError(
            f"Node.js is needed for the portable image runtime, but {where}",
            hint="install Node.js 20 (e.g. `apt-get install nodejs`) or point CHRYSALIS_NODE at a node binary",
        )
    return found


def find_node_modules() -> Path:
    """The ``node_modules`` holding onnxruntime-web :data:`ORT_WEB_VERSION`: ``$CHRYSALIS_NODE_MODULES`` if set,
    else the repository's.

    Raises:
        ConfigError: onnxruntime-web is missing there, incomplete, or another version.
    """
    env = os.environ.get("CHRYSALIS_NODE_MODULES")
    root = Path(env) if env else ROOT / "node_modules"
    package = root / "onnxruntime-web"
    dist = package / "dist"
    if not (dist / "ort.wasm.min.mjs").is_file() or not (dist / "ort-wasm-simd-threaded.wasm").is_file():
        raise ConfigError(f"onnxruntime-web is not installed in {root}", hint=SETUP_HINT)
    version = json.loads((package / "package.json").read_text()).get("version")
    if version != ORT_WEB_VERSION:
        raise ConfigError(
            f"{package} is onnxruntime-web {version}, not the pinned {ORT_WEB_VERSION}",
            hint=f"{SETUP_HINT}; package.json pins onnxruntime-web {ORT_WEB_VERSION}",
        )
    return root


def _check_export_dir(export_dir: Path | str) -> Path:
    directory = Path(export_dir).resolve()
    for name in (ONNX_NAME, CONSTANTS_NAME):
        if not (directory / name).is_file():
            raise NotFoundError(f"no exported sprite model at {directory} (missing {name})", hint=EXPORT_HINT)
    return directory


def _check_request(
    seed: int, label: int, steps: int, init: NDArray[np.uint8] | None, strength: float | None
) -> NDArray[np.uint8] | None:
    """The checks both runtimes make before any work (the samplers check again, and check the label's range
    against the model's ``null_class``)."""
    seed_key(seed)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise ConfigError(f"class label {label!r} is not an int", hint="use class_label(traits)")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps={steps!r}", hint="use a whole number of at least 1 (50 is the default)")
    if (init is None) != (strength is None):
        raise ConfigError(
            "init and strength go together",
            hint="pass both for an evolution (img2img), neither for a fresh image",
        )
    if init is None:
        return None
    start = np.asarray(init)
    if start.dtype != np.uint8 or start.shape != (SIZE, SIZE, 3):
        raise ConfigError(
            f"init is {start.dtype} {start.shape}, not uint8 ({SIZE}, {SIZE}, 3)",
            hint="pass the previous stage's native pixels (decode_png), palette-transferred as the torch "
            "generator does",
        )
    return np.ascontiguousarray(start)


def request_json(
    seed: int,
    label: int,
    steps: int,
    guidance: float = 1.0,
    init: NDArray[np.uint8] | None = None,
    strength: float | None = None,
) -> dict[str, Any]:
    """A render request as ``node_render.mjs`` and ``bench.js`` take it, after the checks
    :meth:`WasmSpriteRuntime.render` makes (a bad field raises :class:`ConfigError` naming it)."""
    start = _check_request(seed, label, steps, init, strength)
    return {
        "seed": str(seed),
        "label": int(label),
        "steps": int(steps),
        "guidance": float(guidance),
        "init": None if start is None else base64.b64encode(start.tobytes()).decode("ascii"),
        "strength": None if strength is None else float(strength),
    }


class WasmSpriteRuntime:
    """Renders sprites from an ONNX export (``unet.onnx`` + ``scheduler.json``) with onnxruntime-web (WASM, one
    thread) in a Node.js process that lives as long as this object (use it as a context manager, or call
    :meth:`close`). Thread-safe: requests are serialised.

    Guarantee: the output depends only on the request, the two exported files, ``renderer/*.js`` and the
    onnxruntime-web build (:attr:`ort_version`, :attr:`wasm_sha256`): the same request gives the same bytes in
    every call and every process.

    Args:
        export_dir: The directory :func:`~agent.generate.portable.onnx_export.export_sprite_model` wrote.
        timeout: Seconds to wait for Node to start, and for each image.

    Raises:
        NotFoundError: ``export_dir`` lacks ``unet.onnx`` or ``scheduler.json``.
        ConfigError: node or onnxruntime-web is missing (the hint says how to install them).
    """

    def __init__(self, export_dir: Path | str, *, timeout: float = 300.0) -> None:
        self.export_dir = _check_export_dir(export_dir)
        self.node = find_node()
        self.node_modules = find_node_modules()
        self.timeout = timeout
        self.ort_version: str | None = None
        self.node_version: str | None = None
        self.wasm_sha256: str | None = None
        self.noise_scheme: str | None = None
        self.sampler_scheme: str | None = None
        self.last_timing: dict[str, float] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=40)
        self._next_id = 0
        self._start()

    # --- the process --------------------------------------------------------------------------------------------

    def _start(self) -> None:
        env = {**os.environ, "CHRYSALIS_NODE_MODULES": str(self.node_modules)}
        self._lines = queue.Queue()
        self._proc = subprocess.Popen(
            [self.node, str(RENDERER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        threading.Thread(target=self._pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True).start()
        ready = self._reply()
        if not ready.get("ready"):
            self.close()
            raise ConfigError(str(ready.get("error")), hint=str(ready.get("hint") or SETUP_HINT))
        self.ort_version = ready["ort_version"]
        self.node_version = ready["node_version"]
        self.wasm_sha256 = ready["wasm_sha256"]
        self.noise_scheme = ready.get("noise_scheme")
        self.sampler_scheme = ready.get("sampler_scheme")
        if self.ort_version != ORT_WEB_VERSION:
            self.close()
            raise ConfigError(
                f"Node loaded onnxruntime-web {self.ort_version}, not {ORT_WEB_VERSION}", hint=SETUP_HINT
            )

    @staticmethod
    def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)  # EOF: the process is gone

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line.rstrip())

    def _reply(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.close()
            raise BackendUnavailableError(
                f"the Node renderer gave no answer within {self.timeout:.0f} s",
                hint="raise timeout= for slow machines; the process was stopped and restarts on the next render",
            ) from None
        if line is None:
            code = self._proc.wait(timeout=10) if self._proc is not None else None
            tail = "\n".join(self._stderr) or "(nothing on stderr)"
            self._proc = None
            raise BackendUnavailableError(
                f"the Node renderer exited (code {code}): {tail}",
                hint="check that node runs renderer/node_render.mjs by hand; it restarts on the next render",
            )
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        """Stop the Node process (closing its stdin ends it; it is killed if it lingers). Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __enter__(self) -> WasmSpriteRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self.close()

    def _call(self, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """Send one request, return its successful reply and the round trip in seconds."""
        with self._lock:
            if self._proc is None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            self._next_id += 1
            request = {**request, "model_dir": str(self.export_dir), "id": self._next_id}
            t0 = time.perf_counter()
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
            except OSError:
                pass  # the process is gone: _reply reports why
            reply = self._reply()
            elapsed = time.perf_counter() - t0
        if not reply.get("ok"):
            raise ConfigError(str(reply.get("error")), hint=reply.get("hint"))
        if reply.get("id") != request["id"]:
            raise BackendUnavailableError(
                f"the Node renderer answered request {reply.get('id')}, not {request['id']}"
            )
        return reply, elapsed

    # --- rendering ----------------------------------------------------------------------------------------------

    def render(
        self,
        seed: int,
        label: int,
        steps: int,
        guidance: float = 1.0,
        init: NDArray[np.uint8] | None = None,
        strength: float | None = None,
    ) -> NDArray[np.uint8]:
        """One image, (32, 32, 3) uint8: ``chrysalis-noise/1`` noise for ``seed`` (uint64), class ``label``,
        ``steps`` DDIM steps, classifier-free ``guidance`` (1.0: off); ``init`` (the previous stage's native
        pixels, already palette-transferred) with ``strength`` for img2img, neither for a fresh image.
        :attr:`last_timing` then holds ``load_s`` (model load, 0 when cached), ``render_s`` (in Node) and
        ``round_trip_s``.

        Raises:
            ConfigError: a bad request (the message says which field, the hint how to fix it).
            BackendUnavailableError: the Node process died or timed out (the next call starts a new one).
        """
        return self._render(seed, label, steps, guidance, init, strength, trace=False)[0]

    def render_traced(
        self,
        seed: int,
        label: int,
        steps: int,
        guidance: float = 1.0,
        init: NDArray[np.uint8] | None = None,
        strength: float | None = None,
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        """:meth:`render`, plus the JS scheduler's float32 state before each UNet pass, (steps run, 1, 3, 32, 32)."""
        return self._render(seed, label, steps, guidance, init, strength, trace=True)

    def _render(
        self,
        seed: int,
        label: int,
        steps: int,
        guidance: float,
        init: NDArray[np.uint8] | None,
        strength: float | None,
        *,
        trace: bool,
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        request = {**request_json(seed, label, steps, guidance, init, strength), "trace": trace}
        reply, elapsed = self._call(request)
        self.last_timing = {**reply["timing"], "round_trip_s": elapsed}
        pixels = np.frombuffer(base64.b64decode(reply["pixels"]), dtype=np.uint8).reshape(SIZE, SIZE, 3)
        states = np.frombuffer(base64.b64decode(reply.get("trace", "")), dtype="<f4").astype(np.float32)
        return pixels.copy(), states.reshape(-1, 1, 3, SIZE, SIZE)

    def unet(
        self, sample: NDArray[np.float32], timestep: int, class_labels: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """One forward pass of the WASM UNet (the signature of :meth:`OnnxSpriteSampler.unet`): ``sample``
        float32 [B, 3, 32, 32], one timestep, int64 labels [B]; returns float32 [B, 3, 32, 32]."""
        x = np.ascontiguousarray(sample, dtype="<f4")
        labels = [int(v) for v in np.asarray(class_labels).reshape(-1)]
        if x.shape != (len(labels), 3, SIZE, SIZE):
            raise ConfigError(
                f"sample {x.shape} does not match {len(labels)} class labels",
                hint=f"pass float32 [B, 3, {SIZE}, {SIZE}] with B labels",
            )
        request = {
            "op": "unet",
            "sample": base64.b64encode(x.tobytes()).decode("ascii"),
            "timestep": int(timestep),
            "class_labels": labels,
        }
        reply, _ = self._call(request)
        out = np.frombuffer(base64.b64decode(reply["output"]), dtype="<f4").astype(np.float32)
        return out.reshape(x.shape)


class _TracingSampler(OnnxSpriteSampler):
    """:class:`OnnxSpriteSampler` that records the state it sends to each UNet pass, and sends the passes to a
    :class:`WasmSpriteRuntime` when given one (else to native ONNX Runtime)."""

    def __init__(self, export_dir: Path, runtime: WasmSpriteRuntime | None) -> None:
        super().__init__(export_dir)
        self.runtime = runtime
        self.states: list[NDArray[np.float32]] = []

    def unet(
        self, sample: NDArray[np.float32], timestep: int, class_labels: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        self.states.append(np.array(sample[:1], dtype=np.float32))
        if self.runtime is None:
            return super().unet(sample, timestep, class_labels)
        return self.runtime.unet(sample, timestep, class_labels)


class NumpySpriteRuntime:
    """The numpy twin of the JS scheduler: the requests of :class:`WasmSpriteRuntime` through
    :class:`~agent.generate.portable.onnx_sampler.OnnxSpriteSampler`'s float32 DDIM loop on the same
    ``chrysalis-noise/1`` noise (:func:`portable_randn`). Not thread-safe (it records each render's states).

    The UNet is native ONNX Runtime (one thread) by default: a fast comparison, not canonical (native kernels
    differ by CPU). With ``wasm_unet`` every UNet pass goes to that runtime's WASM model instead, so only the
    scheduler is numpy's: the pixels must then equal :meth:`WasmSpriteRuntime.render`'s bit for bit, which checks
    that the JS and numpy loops compute the same float32 values.
    """

    def __init__(self, export_dir: Path | str, *, wasm_unet: WasmSpriteRuntime | None = None) -> None:
        directory = _check_export_dir(export_dir)
        self.sampler = _TracingSampler(directory, wasm_unet)

    def render(
        self,
        seed: int,
        label: int,
        steps: int,
        guidance: float = 1.0,
        init: NDArray[np.uint8] | None = None,
        strength: float | None = None,
    ) -> NDArray[np.uint8]:
        """As :meth:`WasmSpriteRuntime.render`, with the scheduler in this process."""
        return self.render_traced(seed, label, steps, guidance, init, strength)[0]

    def render_traced(
        self,
        seed: int,
        label: int,
        steps: int,
        guidance: float = 1.0,
        init: NDArray[np.uint8] | None = None,
        strength: float | None = None,
    ) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        """As :meth:`WasmSpriteRuntime.render_traced`: the pixels and the numpy scheduler's state before each pass."""
        start = _check_request(seed, label, steps, init, strength)
        noise = portable_randn(seed, (1, 3, SIZE, SIZE))
        self.sampler.states = []
        pixels = self.sampler.sample(
            noise, label, num_inference_steps=steps, guidance_scale=guidance, init=start, strength=strength
        )
        states = (
            np.stack(self.sampler.states) if self.sampler.states else np.empty((0, 1, 3, SIZE, SIZE), F32)
        )
        return pixels, states


__all__ = [
    "ORT_WEB_VERSION",
    "NumpySpriteRuntime",
    "WasmSpriteRuntime",
    "find_node",
    "find_node_modules",
]
