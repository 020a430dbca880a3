"""The `ray` executor: each unit of cells a Ray task, its cells streamed back as they finish.

Why Ray's own machinery throughout: a unit is a streaming generator task (one object per cell,
so the driver stores each cell as soon as it is done), with resource requests (CPUs; on a GPU
run, a fraction of a GPU sized from the unit's planned memory) and Ray's retries when a worker
or node dies (a retried generator replays its unit; cells already delivered are dropped by
Ray, and by the store if they come again). Progress events reach the driver through a small
actor. `address` joins a running cluster ("auto", "HOST:PORT", "ray://HOST:PORT"); without one
a local cluster starts on 127.0.0.1 for the run and stops with it (LocalCluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchsuite.engine.threads import cpu_threads
from benchsuite.errors import BenchsuiteError

REPORT_INTERVAL = 0.5  # seconds between a task's progress updates (starts are always sent)
POLL = 0.25  # seconds the driver waits for a cell before showing progress again
MIN_GPU_SHARE = 1 / 16  # the smallest GPU fraction a unit asks for


def _ray():
    try:
        import ray
    except ImportError:
        raise BenchsuiteError(
            "the ray executor needs Ray: pip install 'benchsuite[ray]' (or pip install ray)"
        ) from None
    return ray


def execute_on_ray(plan):
    if not plan.units:
        return
    ray = _ray()
    options = plan.options
    cpus = float(options.get("cpus_per_unit", 1))
    job = dataclasses.replace(plan.make_job(), cpu_threads=max(1, math.floor(cpus)))
    if ray.is_initialized():  # the caller connected this process already: use it as it is
        yield from _stream(ray, plan, job, cpus, options)
        return
    address = str(options.get("address") or "")
    cluster = None if address else LocalCluster(cpu_threads(options.get("jobs", "auto")))
    try:
        with cluster.credentials() if cluster is not None else contextlib.nullcontext():
            connect(ray, address or cluster.address, cluster)
            try:
                yield from _stream(ray, plan, job, cpus, options)
            finally:
                ray.shutdown()  # our connection; a cluster joined by address keeps running
    finally:
        if cluster is not None:
            cluster.stop()


def connect(ray, address: str, cluster: LocalCluster | None = None, wait: float = 120) -> None:
    """ray.init to `address`, waiting (up to `wait` seconds) for a cluster still starting."""
    deadline = time.monotonic() + wait
    while True:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
            return
        except (ConnectionError, RuntimeError, ValueError) as error:
            starting = cluster is not None and cluster.process.poll() is None
            if not starting or time.monotonic() > deadline:
                detail = cluster.log_tail() if cluster is not None else str(error).splitlines()[0]
                raise BenchsuiteError(f"could not connect to the Ray cluster at {address}: {detail}") from None
            time.sleep(0.5)


class LocalCluster:
    """A one-node Ray cluster for one run, started with `ray start --head` on 127.0.0.1.

    Why not ray.init's own local cluster: that one binds fixed default ports (the dashboard
    agent's 52365, ...), so a second cluster on the machine (another user's run, a test) kills
    it at start. This one takes free ports for every listener, keeps its files in a fresh temp
    folder, and stops when the run ends or, through the parent-death signal, when the driver
    dies (kill -9 included)."""

    PORTS = (
        "port", "node-manager-port", "object-manager-port", "ray-client-server-port",
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "dashboard-port",
    )  # fmt: skip

    def __init__(self, cpus: int):
        ports = dict(zip(self.PORTS, _free_ports(len(self.PORTS))))
        self.temp = tempfile.mkdtemp(prefix="bsray")
        self.address = f"127.0.0.1:{ports['port']}"
        # a token of its own (Ray's token authentication), whatever ~/.ray holds
        self.environment = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        command = [
            _ray_command(), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
            f"--temp-dir={self.temp}", *(f"--{name}={port}" for name, port in ports.items()),
        ]  # fmt: skip
        self.log = open(os.path.join(self.temp, "ray-start.log"), "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.environment}, start_new_session=True,
            preexec_fn=_end_with_parent,  # noqa: PLW1509 - one prctl call, no locks taken
        )  # fmt: skip

    @contextlib.contextmanager
    def credentials(self):
        """This process speaks to the cluster with its token (Ray reads it from the environment
        when it connects); the environment is as it was afterwards."""
        saved = {name: os.environ.get(name) for name in self.environment}
        os.environ.update(self.environment)
        _reload_ray_config()
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _reload_ray_config()

    def log_tail(self) -> str:
        with open(os.path.join(self.temp, "ray-start.log")) as log:
            lines = [line.strip() for line in log if line.strip()]
        return lines[-1] if lines else f"`ray start` exited with {self.process.poll()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # `ray start --block` stops its node's processes
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


def _reload_ray_config() -> None:
    """Ray reads its authentication mode and token from the environment once per process; make
    it read them again (what Ray itself does when it turns token authentication on), so a second
    run in one process speaks to its own cluster with its own token."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - another Ray version
        pass


def _ray_command() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return beside if os.path.exists(beside) else (shutil.which("ray") or "ray")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _end_with_parent() -> None:
    """In the `ray start` child: SIGTERM when the driver dies (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _stream(ray, plan, job, cpus: float, options):
    retries = int(options.get("retries", 3))
    gpus = options.get("gpus_per_unit", "auto")
    board = ray.remote(_Board).options(num_cpus=0).remote()
    task = ray.remote(_run_unit)
    limit = None if options.get("jobs", "auto") == "auto" or not options.get("address") else int(options["jobs"])
    pending = list(plan.units)
    running: dict = {}
    try:
        while pending or running:
            while pending and (limit is None or len(running) < limit):
                unit = pending.pop(0)
                resources = {"num_cpus": cpus, "num_gpus": _gpu_share(plan, unit, gpus)}
                submit = task.options(num_returns="streaming", max_retries=retries, **resources)
                running[submit.remote(job, unit, board)] = unit
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL)
            for event in ray.get(board.drain.remote()):
                plan.report(event)
            for generator in ready:
                try:
                    reference = next(generator)
                except StopIteration:
                    del running[generator]
                    continue
                yield _get(ray, reference, running[generator])
    finally:
        for generator in running:  # the driver stops (an error, Ctrl-C): nobody stores these
            try:
                ray.cancel(generator, force=True)
            except Exception:  # noqa: BLE001, S110 - already finished or gone: nothing to cancel
                pass


def _get(ray, reference, unit):
    """A cell's outcome, or the unit's failure as one line (a plugin's BenchsuiteError as it
    was; a worker that died more often than the retries allow, saying so)."""
    from benchsuite.execution.units import unit_label

    try:
        return ray.get(reference)
    except ray.exceptions.RayTaskError as error:
        cause = error.cause if isinstance(getattr(error, "cause", None), BaseException) else None
        if isinstance(cause, BenchsuiteError):
            raise BenchsuiteError(str(cause)) from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.TaskCancelledError) as error:
        raise BenchsuiteError(
            f"{unit_label(unit)}: its Ray worker died more often than the retries allow ({type(error).__name__}); "
            "the other cells are saved, run the same command again to retry them"
        ) from None


def _gpu_share(plan, unit, gpus) -> float:
    """The GPU fraction a unit asks for: none on a CPU run; else `gpus` as given, or (auto) the
    unit's planned memory as a share of the device's, at least MIN_GPU_SHARE."""
    if gpus != "auto":
        return float(gpus)
    if not plan.device.startswith("cuda"):
        return 0.0
    import torch

    total = torch.cuda.get_device_properties(torch.device(plan.device)).total_memory
    needed = plan.memory(unit)
    if needed is None:
        return 1.0
    share = math.ceil(16 * min(1.0, max(MIN_GPU_SHARE, 2 * needed / total))) / 16
    return min(1.0, share)


def _run_unit(job, unit, board):
    """The Ray task: run the unit where Ray placed it, one yielded object per cell."""
    from benchsuite.execution.cells import Forwarder

    report = Forwarder(board.add.remote, REPORT_INTERVAL)
    try:
        yield from job(unit, report)
    finally:
        report.close()  # a Ray worker runs many tasks: one forwarding thread per task, ended


class _Board:
    """Progress events from the tasks, collected for the driver's display."""

    def __init__(self):
        self.events = []

    def add(self, event):
        self.events.append(event)

    def drain(self):
        events, self.events = self.events, []
        return events
