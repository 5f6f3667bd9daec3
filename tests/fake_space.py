"""A local stand-in for the Depth-Anything-V2 demo Space, for tests. Loopback only.

    python tests/fake_space.py [--port 0] [--host 127.0.0.1]

Prints `FAKE_SPACE_READY <url>` once it serves. It reproduces the Space's `/on_submit`
contract as its app.py builds it: input `gr.Image(type="numpy")`; outputs an image slider
(original, coloured depth), a gr.File with an 8-bit gray PNG (disparity min-max normalised to
0..255 and truncated to uint8) and a gr.File with a 16-bit PNG (the float disparity truncated
to uint16, no rescaling). The Space uses the `gradio_imageslider` package; here it is the core
`gr.ImageSlider` of Gradio 5+, which a client sees the same way: a pair of image files.

The "model" is a known function of the image (`known_disparity`): near (large) at the bottom
and for bright pixels, scaled by `scale`, so tests can check values, orientation and precision.

Faults, like the shared ZeroGPU Space produces them, are set at run time through
`POST /_fake/config` (JSON, fields of `Behaviour`); `GET /_fake/log` returns one record per
request, `GET /_fake/credentials` how many requests carried Hugging Face credentials. A second app without `/on_submit` is mounted at `/other/` (a wrong-endpoint server).

Hostile answers: `stall` (a path prefix, e.g. "/config" or "/gradio_api/file=") leaves those
requests unanswered for `hold` seconds, `drip` answers them one byte every `drip_every` seconds
for `hold` seconds, `pad_bytes` appends junk after the raw file's PNG end (a huge reply).
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations at run time
import argparse
import asyncio
import dataclasses
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np

QUOTA_MESSAGE = ("You have exceeded your GPU quota (60s requested vs. 43s left). "
                 "Try again in {wait}")


def known_disparity(rgb: np.ndarray, scale: float) -> np.ndarray:
    """The fake model: float32 disparity >= 0, larger at the bottom and on bright pixels."""
    height = rgb.shape[0]
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    gray = rgb.astype(np.float32).mean(axis=2) / 255.0
    return (scale * (0.2 + 0.6 * rows + 0.2 * gray)).astype(np.float32)


@dataclass
class Behaviour:
    scale: float = 4000.0  # disparity scale: 10 -> the raw file holds ~10 levels
    slow: float = 0.0  # seconds each request takes
    fail_every: int = 0  # every k-th request fails (0: never) ...
    fail_kind: str = "gpu"  # ... with: gpu (gr.Error), crash (hidden exception), quota
    quota_times: int = 0  # the next n requests raise the ZeroGPU quota error
    quota_wait: str = "0:00:02"
    blank_times: int = 0  # the next n requests return blank (all zero) maps
    resize: float = 1.0  # maps returned at this fraction of the image size
    http429_every: int = 0  # every k-th queue join answers HTTP 429
    http503_every: int = 0  # every k-th queue join answers HTTP 503 (queue full)
    stall: str = ""  # requests whose path starts with this get no answer for `hold` seconds
    drip: str = ""  # ... get one byte every `drip_every` seconds for `hold` seconds
    drip_every: float = 0.5
    hold: float = 40.0
    pad_bytes: int = 0  # junk after the raw file's PNG end (decoders ignore it)


@dataclass
class State:
    behaviour: Behaviour = field(default_factory=Behaviour)
    count: int = 0  # requests that reached on_submit since the last config
    joins: int = 0  # queue joins since the last config
    credentials: int = 0  # requests that carried Hugging Face credentials
    generation: int = 0  # configs so far: a request started before the last one is not logged
    log: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = State()


def _save_png(array: np.ndarray) -> str:
    from PIL import Image

    handle = tempfile.NamedTemporaryFile(suffix=".png", delete=False)
    handle.close()
    Image.fromarray(array).save(handle.name)
    return handle.name


def on_submit(image: np.ndarray):
    import cv2
    import gradio as gr

    start = time.time()
    with STATE.lock:
        STATE.count += 1
        number = STATE.count
        generation = STATE.generation
        behaviour = dataclasses.replace(STATE.behaviour)
        if STATE.behaviour.quota_times > 0:
            STATE.behaviour.quota_times -= 1
            outcome = "quota"
        elif STATE.behaviour.blank_times > 0:
            STATE.behaviour.blank_times -= 1
            outcome = "blank"
        elif behaviour.fail_every and number % behaviour.fail_every == 0:
            outcome = behaviour.fail_kind
        else:
            outcome = "ok"
    record = {"n": number, "start": start, "outcome": outcome,
              "height": int(image.shape[0]), "width": int(image.shape[1])}
    try:
        if behaviour.slow:
            time.sleep(behaviour.slow)
        if outcome == "quota":
            raise gr.Error(QUOTA_MESSAGE.format(wait=behaviour.quota_wait),
                           title="ZeroGPU quota exceeded", print_exception=False)
        if outcome == "gpu":
            raise gr.Error("GPU task aborted", print_exception=False)
        if outcome == "crash":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        original_image = image.copy()
        if behaviour.resize != 1.0:
            height, width = image.shape[:2]
            size = (max(1, round(width * behaviour.resize)), max(1, round(height * behaviour.resize)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        depth = known_disparity(image, behaviour.scale)
        if outcome == "blank":
            depth = np.zeros_like(depth)
        # exactly the Space's encoding (app.py on_submit)
        raw_name = _save_png(depth.astype("uint16"))
        if behaviour.pad_bytes:
            with open(raw_name, "ab") as raw_file:
                raw_file.write(bytes(behaviour.pad_bytes))
        span = depth.max() - depth.min()
        depth = (depth - depth.min()) / (span if span else 1.0) * 255.0
        depth = depth.astype(np.uint8)
        coloured = np.stack([depth, 255 - depth, depth // 2], axis=2)
        gray_name = _save_png(depth)
        return [(original_image, coloured), gray_name, raw_name]
    finally:
        record["end"] = time.time()
        with STATE.lock:
            if generation == STATE.generation:
                STATE.log.append(record)


async def _trickle(behaviour: Behaviour):
    end = time.monotonic() + behaviour.hold
    while time.monotonic() < end:
        yield b" "
        await asyncio.sleep(behaviour.drip_every)


def build_app():
    import gradio as gr
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    with gr.Blocks() as demo:
        gr.Markdown("# Depth Anything V2 (local test copy)")
        with gr.Row():
            input_image = gr.Image(label="Input Image", type="numpy")
            slider = gr.ImageSlider(label="Depth Map with Slider View")
        submit = gr.Button(value="Compute Depth")
        gray_depth_file = gr.File(label="Grayscale depth map")
        raw_file = gr.File(label="16-bit raw output (can be considered as disparity)")
        submit.click(on_submit, inputs=[input_image], outputs=[slider, gray_depth_file, raw_file],
                     api_name="on_submit", concurrency_limit=8)

    with gr.Blocks() as other:  # a Gradio server without /on_submit
        text_in, text_out = gr.Textbox(), gr.Textbox()
        gr.Button().click(lambda text: text, text_in, text_out, api_name="predict")

    app = FastAPI()

    @app.middleware("http")
    async def faults(request: Request, call_next):
        if {"authorization", "x-hf-authorization"} & {key.lower() for key in request.headers}:
            with STATE.lock:
                STATE.credentials += 1
        with STATE.lock:
            behaviour = STATE.behaviour
        path = request.url.path
        if behaviour.stall and path.startswith(behaviour.stall):
            await asyncio.sleep(behaviour.hold)
            return JSONResponse({"error": "stalled"}, status_code=504)
        if behaviour.drip and path.startswith(behaviour.drip):
            return StreamingResponse(_trickle(behaviour), media_type="application/octet-stream")
        if request.url.path.endswith("/queue/join"):
            with STATE.lock:
                STATE.joins += 1
                joins, behaviour = STATE.joins, STATE.behaviour
            if behaviour.http429_every and joins % behaviour.http429_every == 0:
                STATE.log.append({"n": None, "start": time.time(), "end": time.time(),
                                  "outcome": "http429"})
                return JSONResponse({"error": "Too Many Requests"}, status_code=429,
                                    headers={"Retry-After": "1"})
            if behaviour.http503_every and joins % behaviour.http503_every == 0:
                STATE.log.append({"n": None, "start": time.time(), "end": time.time(),
                                  "outcome": "http503"})
                return JSONResponse({"error": "Queue is full"}, status_code=503)
        return await call_next(request)

    @app.post("/_fake/config")
    async def configure(request: Request):
        values = await request.json()
        with STATE.lock:
            STATE.behaviour = Behaviour(**values)
            STATE.count = 0
            STATE.joins = 0
            STATE.credentials = 0
            STATE.generation += 1
            STATE.log.clear()
        return {"ok": True}

    @app.get("/_fake/log")
    async def log():
        with STATE.lock:
            return list(STATE.log)

    @app.get("/_fake/credentials")
    async def credentials():
        with STATE.lock:
            return {"requests": STATE.credentials}

    app = gr.mount_gradio_app(app, other, path="/other", show_error=False)
    return gr.mount_gradio_app(app, demo, path="", show_error=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"])
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    app = build_app()
    # SIGTERM stops it within 2 s even with requests held open (stalled, dripping or slow answers)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            time.sleep(0.05)
        print(f"FAKE_SPACE_READY http://127.0.0.1:{port}/", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
