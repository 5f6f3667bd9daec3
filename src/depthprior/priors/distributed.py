"""generate on a Ray cluster: the same plan, outputs and manifest, the work spread by Ray Data.

The driver lists the images and plans the run exactly as the local pipeline does (skips,
collisions, identity, the lock on OUT) before Ray starts. Ray Data then runs three stages:

    read     CPU tasks: the file (a path every node sees, or a URL) -> stored RGB pixels
    replicas an autoscaling pool of actors, each holding one loaded model (whole, fractional or
             no GPUs): prepare -> infer -> finish, prepare and finish on threads beside the model
    write    CPU tasks: encode the map and write its files (temporary + rename, or one PUT)

and hands each image's record back to the driver, which keeps the one manifest at OUT, saved
atomically as records arrive. Ray retries the tasks and actor calls of a worker or node that
dies; the write is idempotent, so an image done twice writes the same bytes twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import (DepthpriorError, ImageError, MissingDependencyError, ModelLoadError,
                      StorageUnavailable, UsageError, first_line)
from ..files.jsonfile import parse_json
from ..images import ImageItem
from ..files import objectstore, place
from ..threads import run_yielding
from .backends import Backend, BackendSettings, backend_class
from .backends.base import DepthMap
from .frames import PreparedImage, batches, write_outputs
from .manifest import ImageRecord, ThrottledSaver
from .plan import Plan, Summary, record_result, save_manifest

log = logging.getLogger(__name__)

#: images per call of a replica: enough to overlap prepare/finish with the model
REPLICA_BATCH = 8
#: read tasks at most (one image each below that): enough to balance, few enough to schedule
MAX_BLOCKS = 1024


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide to run. address: "auto" (the cluster `ray start` or RAY_ADDRESS names,
    else a local instance), "local" (always a new local instance), or a cluster's address
    (host:port, ray://host:port). workers: model replicas (min, max), Ray scales between them;
    None: one per GPU (gpus_per_worker each) or one per node. gpus_per_worker: None is 1 where the
    cluster has GPUs and 0 where it has none; fractions share a GPU."""

    address: str = "auto"
    workers: tuple[int, int] | None = None
    gpus_per_worker: float | None = None

    def __post_init__(self) -> None:
        if self.workers is not None:
            low, high = self.workers
            if not (isinstance(low, int) and isinstance(high, int)) or low < 1 or high < low:
                raise UsageError(f"--ray-workers must be N or MIN-MAX with 1 <= MIN <= MAX, got {self.workers}")
        if self.gpus_per_worker is not None and not 0 <= self.gpus_per_worker <= 64:
            raise UsageError(f"--ray-gpus-per-worker must be between 0 and 64, got {self.gpus_per_worker}")


def parse_workers(text: str) -> tuple[int, int]:
    """"4" -> (4, 4); "2-8" -> (2, 8); a UsageError for anything else."""
    low, _, high = text.partition("-")
    try:
        workers = (int(low), int(high or low))
    except ValueError:
        raise UsageError(f"--ray-workers takes N or MIN-MAX (e.g. 4 or 2-8), got {text!r}") from None
    RaySettings(workers=workers)
    return workers


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependencyError("ray[data]", "ray", "--ray") from None
    return ray


def check_backend(backend_type: type[Backend], loaded: Backend | None = None) -> None:
    """Refused before any work: a remote backend is one server, replicas would not scale it;
    a model loaded in this process cannot be sent to the replicas (they load their own)."""
    if loaded is not None:
        raise UsageError("generate(..., ray=...) loads the model on the cluster: pass the backend "
                         "by name (backend='torch') and its settings, not a loaded Backend")
    if backend_type.uploads:
        raise UsageError(f"--ray runs local models on the cluster; --backend {backend_type.name} "
                         "sends images to one remote server: use --backend torch or onnx with --ray")


def run_on_ray(backend_type: type[Backend], settings: BackendSettings, plan: Plan, fmt: str,
               ray_settings: RaySettings, progress: bool, summary: Summary) -> None:
    """The images in plan.todo through the three stages; records kept as they come back."""
    ray = import_ray()
    start = time.perf_counter()
    started, own_instance = _connect(ray, ray_settings.address)
    try:
        sizing = _sizing(ray, ray_settings)
        log.info("on Ray: %s", sizing.describe())
        summary.cluster = sizing.describe()
        # a local instance this call started has this environment; a cluster joined gets it
        environment = {} if own_instance else storage_environment()
        _check_worker_storage(ray, plan, environment)
        dataset = _dataset(ray, backend_type, settings, plan, fmt, sizing, environment)
        _collect(dataset, plan, progress, summary, start)
    finally:
        if started:
            ray.shutdown()


def _connect(ray: Any, address: str) -> tuple[bool, bool]:
    """Join the cluster: (whether this call connected, so the caller shuts it down; whether it
    started a local instance of its own, whose workers have this process's environment)."""
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes are about its own bars
    if ray.is_initialized():
        return False, False
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ notes are not the user's
    options = dict(log_to_driver=False, include_dashboard=False, configure_logging=False)
    cluster = _reachable_cluster(address)
    try:
        ray.init(address=cluster or "local", **options)
    except Exception as error:  # noqa: BLE001 - a refused token is one line; the rest as Ray says
        refusal = authentication_refusal(f"{type(error).__name__}: {error} {error.__cause__ or ''}")
        if refusal:
            raise UsageError(f"the Ray cluster at {cluster} {refusal}") from None
        raise
    return True, cluster is None


def _reachable_cluster(address: str) -> str | None:
    """The cluster address to join, None for a new local instance.

    Checked with a plain TCP connection first: Ray itself waits for a cluster that is gone (a
    stale record of a killed `ray start`, a typo) for many minutes.
    """
    if address == "local":
        return None
    candidate = address
    if address == "auto":
        candidate = os.environ.get("RAY_ADDRESS") or _recorded_cluster()
        if not candidate or candidate in ("auto", "local"):
            return None
    host, _, port = candidate.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        if address != "auto":
            raise UsageError(f"cannot reach the Ray cluster at {candidate} ({first_line(error)}); "
                             "start it with `ray start --head`, or give --ray local") from None
        log.warning("the Ray cluster recorded at %s is not running; starting a local one", candidate)
        return None
    if "://" not in candidate:
        answer = _ask_cluster_id_within(f"{host or '127.0.0.1'}:{port}", CLUSTER_ANSWER_SECONDS)
        if answer is None:
            raise UsageError(f"something listens at {candidate} but does not answer as a Ray "
                             f"cluster within {CLUSTER_ANSWER_SECONDS:g} s; check the address "
                             "(`ray status` on the head node), or give --ray local")
        refusal = authentication_refusal(answer)
        if refusal:
            raise UsageError(f"the Ray cluster at {candidate} {refusal}")
    return candidate


#: a Ray cluster's GCS answers in well under a second; Ray's own client waits 40 s, then ray.init minutes
CLUSTER_ANSWER_SECONDS = 15.0


def _ask_cluster_id_within(address: str, seconds: float) -> str | None:
    """_ask_cluster_id, or None when no answer came within `seconds`."""
    answer: list[str] = []
    thread = threading.Thread(target=lambda: answer.append(_ask_cluster_id(address)), daemon=True,
                              name="depthprior-ray-probe")
    with _native_stderr_silenced():  # Ray's C++ client warns on stderr before it raises
        thread.start()
        thread.join(seconds)
    return answer[0] if answer else None


def _ask_cluster_id(address: str) -> str:
    """The error text of one short call to the cluster's GCS ("" when it answers). ray.init
    itself would print a warning a second for 20 s and then a traceback when the cluster
    wants a token this client lacks."""
    try:
        from ray._raylet import GcsClient
    except ImportError:
        return ""
    try:
        GcsClient(address=address, cluster_id=None)
        return ""
    except Exception as error:  # noqa: BLE001 - the check is best effort; ray.init decides
        return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def authentication_refusal(text: str) -> str:
    """What to tell the user when a Ray error text says the cluster refused this client's
    authentication token (or its lack of one); "" for any other text."""
    if not re.search(r"UNAUTHENTICATED|Unauthenticated|InvalidAuthToken|AuthenticationError|"
                     r"[Aa]uthentication token is missing or incorrect", text):
        return ""
    sends_none = "RAY_AUTH_MODE is currently" in text or os.environ.get("RAY_AUTH_MODE", "").lower() != "token"
    problem = ("requires an authentication token and this client sends none" if sends_none else
               "refuses this client's authentication token")
    return (f"{problem}: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to "
            "the cluster's token (`ray get-auth-token` on its head node)")


def _recorded_cluster() -> str | None:
    """The address `ray start --head` recorded on this machine, if any."""
    record = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        with open(record, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class _Sizing:
    low: int
    high: int
    gpus: float  # per replica
    threads: int  # a CPU replica's model threads
    nodes: int
    cluster_cpus: float
    cluster_gpus: float

    @property
    def replica_cpus(self) -> float:
        """The logical CPUs a replica reserves: a quarter of the cluster's for all of them, so
        read and write tasks always find room, also when a node leaves and its replicas move
        (replicas holding every CPU would starve them: the run would wait for ever). Its model
        threads are set apart (_limit_threads); Ray Data spreads replicas over the nodes."""
        return min(0.5, self.cluster_cpus / (4 * max(self.high, 1)))

    def describe(self) -> str:
        replicas = str(self.low) if self.low == self.high else f"{self.low}-{self.high}"
        device = f"{self.gpus:g} GPU each" if self.gpus else f"CPU, {self.threads} threads each"
        return (f"{replicas} model replicas ({device}) on {self.nodes} node(s) with "
                f"{self.cluster_cpus:g} CPUs, {self.cluster_gpus:g} GPUs")


def _sizing(ray: Any, wanted: RaySettings) -> _Sizing:
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    nodes = max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
    per_gpu = wanted.gpus_per_worker if wanted.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per_gpu > gpus:
        raise UsageError(f"--ray-gpus-per-worker {per_gpu:g}, but the cluster has {gpus:g} GPUs; "
                         "pass --ray-gpus-per-worker 0 to run the models on CPUs")
    if wanted.workers is not None:
        low, high = wanted.workers
    else:
        low = high = max(1, int(gpus // per_gpu)) if per_gpu else nodes
    if per_gpu and low * per_gpu > gpus:
        raise UsageError(f"{low} replicas with {per_gpu:g} GPUs each need {low * per_gpu:g} GPUs; "
                         f"the cluster has {gpus:g}: lower --ray-workers or --ray-gpus-per-worker")
    per_node = -(-high // nodes)  # replicas sharing a node when Ray spreads them evenly
    threads = max(1, int(cpus / nodes // per_node))
    return _Sizing(low, high, per_gpu, threads, nodes, cpus, gpus)


def _dataset(ray: Any, backend_type: type[Backend], settings: BackendSettings, plan: Plan,
             fmt: str, sizing: _Sizing, environment: dict[str, str]) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    rows = [{"name": item.name, "path": _absolute(item.path)} for item in plan.todo]
    root = _absolute(plan.manifest.root)
    storage = _runtime_env(environment)  # the stages that read and write files
    return (
        ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))
        .map(_read_row_yielding, fn_kwargs={"max_pixels": settings.max_pixels}, num_cpus=0.5,
             **storage)
        .map_batches(
            _Replica,
            fn_constructor_kwargs={"backend": backend_type.name, "settings": settings,
                                   "threads": sizing.threads},
            batch_size=REPLICA_BATCH,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(min_size=sizing.low, max_size=sizing.high),
            num_gpus=sizing.gpus,
            num_cpus=sizing.replica_cpus,
        )
        .map(_write_row_yielding, fn_kwargs={"root": root, "fmt": fmt}, num_cpus=0.5, **storage)
    )


def storage_environment() -> dict[str, str]:
    """The storage settings of this process, for the workers' runtime environment (Ray keeps
    them out of its logs; depthprior never prints or logs them)."""
    return objectstore.storage_settings()


def _runtime_env(environment: dict[str, str]) -> dict[str, Any]:
    return {"runtime_env": {"env_vars": environment}} if environment else {}


def _check_worker_storage(ray: Any, plan: Plan, environment: dict[str, str]) -> None:
    """One worker reads the first image and proves it can write OUT, before the dataset runs:
    a worker that cannot is one line, not every image failing one by one."""
    if not plan.todo:
        return
    probe = ray.remote(num_cpus=0, max_retries=0, **_runtime_env(environment))(_storage_probe)
    image, root = _absolute(plan.todo[0].path), _absolute(plan.manifest.root)
    try:
        problem = ray.get(probe.remote(image, root), timeout=max(60.0, 6 * objectstore.timeout()))
    except Exception as error:  # noqa: BLE001 - Ray's own: the run cannot start
        raise UsageError(f"a Ray worker could not check the storage: {first_line(_root_cause(error))}") from None
    if problem:
        raise UsageError(f"a Ray worker {problem}; the workers need the storage settings of this "
                         "shell (they get its AWS_* variables) and a path every node sees, or a URL")


def _storage_probe(image: str, root: str) -> str:
    """Runs on a worker: "" when it can read `image` and write under `root`, else what failed."""
    from ..files.outputs import check_writable

    where = _node_address()
    try:
        if not place.is_present(image):  # the driver listed it: this node does not see it
            return f"on {where} does not find {image}"
    except DepthpriorError as error:
        return f"on {where} cannot read {image}: {first_line(error)}"
    try:
        check_writable(root)
    except DepthpriorError as error:
        return f"on {where} cannot write {root}: {first_line(error)}"
    return ""


def _absolute(where: Any) -> str:
    """A URL as it is; a path made absolute, since workers need not share this working folder."""
    return place.absolute(where)


def _check_visible(plan: Plan, summary: Summary) -> None:
    """A file a worker wrote on a node's own disk is not at OUT here: that image failed."""

    root = plan.manifest.root
    if not place.is_local(root):
        return
    for item in plan.todo:
        record = plan.manifest.images.get(item.name)
        if record is None or not record.ok or all(os.path.isfile(os.path.join(root, rel)) for rel in record.outputs):
            continue
        summary.done -= 1
        summary.flagged.pop(item.name, None)
        record_result(plan, summary, item.name, ImageRecord.failed(
            f"written by a worker but not found in {root} on this machine: OUT must be a "
            "folder every node shares, or a URL (s3://...)"))


def _collect(dataset: Any, plan: Plan, progress: bool, summary: Summary, start: float) -> None:
    from tqdm import tqdm


    saver = ThrottledSaver(plan.manifest)
    replicas: Counter[str] = Counter()
    bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for row, first in _rows_as_they_come(dataset):
            if row["fatal"]:
                raise ModelLoadError(row["fatal"])
            if row.get("stopped"):  # not done: a rerun does it
                summary.stopped = row["stopped"]
                break
            if first:
                summary.ray_startup = time.perf_counter() - start
                summary.ray_first = first
            if row["backend"] and not plan.manifest.backend:
                plan.manifest.backend = parse_json(row["backend"], "a replica's backend row")
                summary.backend = plan.manifest.backend
            record_result(plan, summary, row["name"], ImageRecord.from_json(parse_json(row["record"], "a replica's record row")))
            if row["replica"]:
                replicas[row["replica"]] += 1
            saver.touch()
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed), refresh=False)
    except KeyboardInterrupt:
        summary.interrupted = True
    except DepthpriorError:
        raise
    except Exception as error:  # noqa: BLE001 - Ray's own, e.g. a cluster that went away
        summary.stopped = f"the Ray run failed: {first_line(_root_cause(error))}"
    finally:
        _check_visible(plan, summary)
        summary.manifest_error = save_manifest(plan.manifest)
        summary.replicas = dict(replicas)
        bar.close()


def _rows_as_they_come(dataset: Any) -> Iterator[tuple[dict[str, Any], int]]:
    """(row, n): each block's rows as soon as the block is done (iter_rows would batch and
    prefetch); n is the first block's length on its first row, else 0."""
    first = True
    for block in dataset.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pandas"):
        for index, row in enumerate(block.to_dict("records")):
            yield row, len(block) if first and index == 0 else 0
        first = first and len(block) == 0


def _root_cause(error: BaseException) -> BaseException:
    """The innermost error behind Ray's wrappers (a RayTaskError's cause, __cause__ chains)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "cause", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


# ---------------------------------------------------------------- the stages (run on workers)

def _read_row_yielding(row: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """_read_row below the replicas' priority, as the local pipeline's reader threads are."""
    return run_yielding(_read_row, row, max_pixels)


def _write_row_yielding(row: dict[str, Any], root: str, fmt: str) -> dict[str, Any]:
    return run_yielding(_write_row, row, root, fmt)


def _read_row(row: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """The stored pixels of one image, or why it could not be read."""
    from ..images import decode_rgb

    out = {"name": row["name"], "path": row["path"], "height": 0, "width": 0, "pixels": b"", "error": "",
           "stopped": ""}
    try:
        image = decode_rgb(row["path"], max_pixels=max_pixels)
    except StorageUnavailable as error:  # not this image's fault: the driver stops the run
        out["error"] = out["stopped"] = first_line(error)
        return out
    except ImageError as error:
        out["error"] = first_line(error)
        return out
    except Exception as error:  # noqa: BLE001 - one bad file never stops the batch
        out["error"] = f"{type(error).__name__}: {first_line(error)}"
        return out
    out.update(height=image.shape[0], width=image.shape[1], pixels=image.tobytes())
    return out


class _Replica:
    """One loaded model; each call prepares, infers and finishes a few images."""

    def __init__(self, backend: str, settings: BackendSettings, threads: int):
        _limit_threads(threads)
        self.identity = f"{_node_address()}/pid {os.getpid()}"
        self.pool = ThreadPoolExecutor(max(2, min(4, threads)), "depthprior-replica")
        self.cannot_start = ""  # why the model could not load here: the driver ends the run
        try:
            self.engine = backend_class(backend)(settings)
        except Exception as error:  # noqa: BLE001 - raised here, Ray would only say the actor died
            self.cannot_start = f"a model replica could not start on {self.identity}: {first_line(error)}"
            return
        self.described = json.dumps(self.engine.describe())

    def __call__(self, batch: Any) -> Any:
        rows = batch.to_dict("records")
        if self.cannot_start:
            return _frame([{**self._row(row, self.cannot_start), "fatal": self.cannot_start, "backend": ""}
                           for row in rows])

        entries = list(self.pool.map(self._prepare, rows))
        results: list[Future | str] = []
        for batch in batches(self.engine, iter(entries), self.engine.preferred_batch_size):
            good = [entry for entry in batch if entry.error is None]
            outcomes = dict(zip(map(id, good), self._infer([entry.prepared for entry in good])))
            results += [entry.error if entry.error is not None else
                        self.pool.submit(self._finish, entry, outcomes[id(entry)]) for entry in batch]
        return _frame([self._row(row, result if isinstance(result, str) else result.result())
                       for row, result in zip(rows, results)])

    def _infer(self, inputs: list[Any]) -> list[Any]:
        """The engine's outcomes; an error that would end a local run fails these images only
        (raised here, Ray would retry the call on this replica for ever)."""
        try:
            return self.engine.infer_each(inputs)
        except Exception as error:  # noqa: BLE001
            return [error] * len(inputs)

    def _prepare(self, row: dict[str, Any]) -> PreparedImage:
        """The row prepared for the engine, as the local pipeline's readers prepare an image."""

        entry = PreparedImage(ImageItem(row["path"], row["name"]), row["height"], row["width"])
        if row["error"]:
            entry.error = row["error"]
            return entry
        try:
            pixels = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
            entry.prepared = self.engine.prepare(pixels, row["name"])
        except Exception as error:  # noqa: BLE001
            entry.error = f"{type(error).__name__}: {first_line(error)}"
        return entry

    def _finish(self, entry: PreparedImage, outcome: Any) -> DepthMap | str:
        if isinstance(outcome, BaseException):
            return first_line(outcome)
        try:
            return self.engine.finish(outcome, entry.height, entry.width)
        except Exception as error:  # noqa: BLE001
            return first_line(error)

    def _row(self, row: dict[str, Any], result: DepthMap | str) -> dict[str, Any]:
        out = {"name": row["name"], "path": row["path"], "backend": getattr(self, "described", ""),
               "replica": self.identity, "fatal": "", "error": "", "values": b"", "height": row["height"], "width": row["width"], "depth": "",
               "stopped": row.get("stopped", "")}
        if isinstance(result, str):
            out["error"] = result
            return out
        values = np.ascontiguousarray(result.values, dtype=np.float32)
        out.update(values=values.tobytes(), height=values.shape[0], width=values.shape[1],
                   depth=json.dumps({"kind": result.kind, "source": result.source, "levels": result.levels,
                                     "notes": list(result.notes), "extras": dict(result.extras)}))
        return out


def _write_row(row: dict[str, Any], root: str, fmt: str) -> dict[str, Any]:
    """Encode and write one image's files; its manifest record (as JSON) for the driver."""
    from ..files.place import location

    stopped = row.get("stopped", "")
    if row["error"]:
        record = ImageRecord.failed(row["error"])
    else:
        try:
            values = np.frombuffer(row["values"], np.float32).reshape(row["height"], row["width"])
            depth = DepthMap(values=values, **parse_json(row["depth"], "a replica's map row"))
            record = write_outputs(location(root), ImageItem(row["path"], row["name"]), depth, fmt)
        except StorageUnavailable as error:  # the storage went away: the driver stops the run
            stopped = first_line(error)
            record = ImageRecord.failed(stopped)
        except Exception as error:  # noqa: BLE001 - one image's failure, listed
            record = ImageRecord.failed(first_line(error))
    return {"name": row["name"], "record": json.dumps(record.to_json()), "backend": row["backend"],
            "replica": row["replica"] if record.ok else "", "fatal": row["fatal"], "stopped": stopped}


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas

    return pandas.DataFrame(rows)


def _limit_threads(threads: int) -> None:
    """A CPU replica's model threads: its share of the node, not Ray's default of one. With the
    whole node (one replica per node) it matches the local run, and so do its PNGs byte for
    byte; other thread counts add in another order (a level in a few pixels)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(min(threads, os.cpu_count() or threads))
    except ImportError:
        pass


def _node_address() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - a label only
        return "node"


