"""The iceoryx2 system of the benchmark: request-response over shared memory.

Issue 14 compares framerpc's same-host path with iceoryx2's request-response
("one copy into a loaned slot"). The server here does what a camera server
would do with iceoryx2: for a frame request it loans a response slot in its
shared-memory segment, copies the frame into it once (``memmove``) and sends
it; the client wraps the received slot as a numpy array without a copy (the
array keeps the response, and so the slot, until it is garbage collected).
An echo request gets its own bytes back through a loaned slot.

The service is typed ``Slice[c_uint8]`` both ways (the request is the
workload's name or the echo text). iceoryx2's request-response has no
blocking receive, so each side waits on an event service of its own, as
iceoryx2's event-based examples do: the client notifies "<name>/request"
after sending, the server "<name>/response" after answering. The waits are
bounded (``_POLL``) so that a stop is noticed and nothing blocks forever.
Both sides block, as framerpc's do; neither spins a core: ``strace -c -f``
of an echo run shows, per call and side, one ``sendto`` (the notify), a
``setsockopt`` (the wait's timeout) and a blocking ``recvfrom`` on the
event's unix datagram socket plus one that finds it empty (``EAGAIN``),
no ``sched_yield`` or busy loop; the CPU time per call is about the wall
time, as for one side working at a time.

Every server gets a fresh service name (the "URL" ``iox2:<name>`` that
``systems.server_url`` makes for the "shm" transport), so runs never
collide; ``close`` deletes every port, service and node, which removes the
service's shared memory (iceoryx2 itself removes what a killed process
left when the next node is created). The module imports iceoryx2 only when a server or
client is made: without it the runner skips the system with a note.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
import time
import uuid
from typing import Any

import numpy as np

from .workloads import ECHO_TEXT, WORKLOADS, Workload, check, check_echo

__all__ = [
    "SCHEME",
    "IceoryxClient",
    "IceoryxServer",
    "available",
    "new_url",
    "service_exists",
    "version",
    "wrap",
]

#: Prefix of an iceoryx2 server's "URL"; the rest is its service name.
SCHEME = "iox2:"
#: Longest wait (ms) on an event before a loop looks at its stop flag.
_POLL_MS = 100
#: How long (s) a client waits for a response before giving up.
CALL_TIMEOUT_S = 10.0
#: Longest request: a workload's name or the echo text.
_MAX_REQUEST = 64
#: Response slots of the server: one request is in flight at a time and its
#: response is released before the next call (the default maps 8 slots).
#: Not ``response_payload_alignment``: iceoryx2 0.10 then sizes every byte
#: of a slice as the alignment, 64x the memory.
_SLOTS = 4


def available() -> bool:
    """Whether iceoryx2 can be imported (without importing it)."""
    return importlib.util.find_spec("iceoryx2") is not None


def version() -> str:
    """iceoryx2's installed version (its distribution's metadata)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("iceoryx2")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def new_url() -> str:
    """A server "URL" with a service name no other run uses."""
    return f"{SCHEME}framerpc-bench/{uuid.uuid4().hex}"


def _service_name(url: str) -> str:
    if not url.startswith(SCHEME):
        raise ValueError(f"not an iceoryx2 URL: {url!r}")
    return url[len(SCHEME) :]


def _iox2() -> Any:
    import iceoryx2

    # iceoryx2 warns on stderr that it runs without a config file; keep the
    # runner's output clean unless IOX2_LOG_LEVEL asks for more
    iceoryx2.set_log_level_from_env_or(iceoryx2.LogLevel.Error)
    return iceoryx2


class _Endpoint:
    """A node and the three services of one benchmark server (both sides).

    The services hold one client, one server and one request in flight,
    so the segments stay small: the response segment is sized for the
    largest workload's frame, a few slots deep.
    """

    def __init__(self, url: str) -> None:
        iox2 = self._iox2 = _iox2()
        name = _service_name(url)
        # Disabled: the runner stops a hung process with SIGTERM, which
        # iceoryx2 would otherwise catch for its own Node.wait()
        self.node = (
            iox2.NodeBuilder.new()
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)
            .create(iox2.ServiceType.Ipc)
        )
        payload = iox2.Slice[ctypes.c_uint8]
        self.service = (
            self.node.service_builder(iox2.ServiceName.new(name))
            .request_response(payload, payload)
            .max_clients(1)
            .max_servers(1)
            .max_nodes(2)
            .max_active_requests_per_client(1)
            .max_loaned_requests(1)
            .max_response_buffer_size(1)
            .max_borrowed_responses_per_pending_response(1)
            .open_or_create()
        )
        self.requests = self._event(name + "/request")
        self.responses = self._event(name + "/response")
        self.poll = iox2.Duration.from_millis(_POLL_MS)

    def _event(self, name: str) -> Any:
        iox2 = self._iox2
        return (
            self.node.service_builder(iox2.ServiceName.new(name))
            .event()
            .max_listeners(1)
            .max_notifiers(1)
            .max_nodes(2)
            .open_or_create()
        )

    def delete(self, *ports: Any) -> None:
        """Delete ``ports``, then drop the services and the node (in that
        order: a service's shared memory goes with its last port and handle;
        only ports have ``delete``, the rest goes with its last reference)."""
        for port in ports:
            port.delete()
        self.requests = self.responses = self.service = self.node = None


class IceoryxServer:
    """An iceoryx2 request-response server: ``url``, ``serve()`` until
    ``stop()`` (any thread), then ``close()``."""

    def __init__(self, url: str, frames: dict[str, np.ndarray]) -> None:
        self.url = url
        self._stop = threading.Event()
        self._frames = {
            name.encode(): np.ascontiguousarray(frame) for name, frame in frames.items()
        }
        largest = max((f.nbytes for f in self._frames.values()), default=0)
        self._end = end = _Endpoint(url)
        self._server = (
            end.service.server_builder()
            .initial_max_slice_len(max(largest, _MAX_REQUEST))
            .override_response_preallocation(_SLOTS)
            .create()
        )
        self._listener = end.requests.listener_builder().create()
        self._notifier = end.responses.notifier_builder().create()

    def serve(self) -> None:
        """Answer requests until ``stop``: a frame for its name, else echo."""
        server, frames = self._server, self._frames
        listener, notifier, poll = self._listener, self._notifier, self._end.poll
        while not self._stop.is_set():
            listener.timed_wait(poll)
            while (active := server.receive()) is not None:
                request = bytes(active.payload().as_memory_view())
                frame = frames.get(request)
                if frame is None:
                    slot = active.loan_slice_uninit(len(request))
                    ctypes.memmove(slot.payload_ptr, request, len(request))
                else:  # the one copy: the frame into the loaned slot
                    slot = active.loan_slice_uninit(frame.nbytes)
                    ctypes.memmove(slot.payload_ptr, frame.ctypes.data, frame.nbytes)
                slot.assume_init().send()
                active.delete()  # no more responses to this request
                notifier.notify()

    def stop(self) -> None:
        """Make ``serve`` return within ``_POLL_MS`` (any thread)."""
        self._stop.set()

    def close(self) -> None:
        """Delete the ports, services and node (after ``serve`` returned)."""
        self._end.delete(self._server, self._listener, self._notifier)


class IceoryxClient:
    """iceoryx2 request-response client: the frame's slot wrapped as a numpy
    array in place (``np.frombuffer`` on the shared memory, no copy), the
    echo text decoded to a str."""

    system = "iceoryx2"

    def __init__(self, url: str) -> None:
        self._end = end = _Endpoint(url)
        self._client = (
            end.service.client_builder().initial_max_slice_len(_MAX_REQUEST).create()
        )
        self._listener = end.responses.listener_builder().create()
        self._notifier = end.requests.notifier_builder().create()
        self._names = {w.name: w.name.encode() for w in WORKLOADS}
        self._echo = ECHO_TEXT.encode()

    def _request(self, request: bytes) -> Any:
        """Send ``request`` and wait for its one response."""
        slot = self._client.loan_slice_uninit(len(request))
        ctypes.memmove(slot.payload_ptr, request, len(request))
        pending = slot.assume_init().send()
        self._notifier.notify()
        listener, poll = self._listener, self._end.poll
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while (response := pending.receive()) is None:
            if time.monotonic() > deadline:
                pending.delete()
                raise TimeoutError(f"no iceoryx2 response in {CALL_TIMEOUT_S:g} s")
            listener.timed_wait(poll)
        pending.delete()  # the response outlives it; the request slot is free
        return response

    def fetch(self, workload: Workload) -> np.ndarray:
        """Request ``workload``'s frame: an array on its response slot."""
        return wrap(self._request(self._names[workload.name]), workload)

    def call(self, workload: Workload) -> None:
        if workload.shape is None:
            response = self._request(self._echo)
            check_echo(bytes(response.payload().as_memory_view()).decode())
            response.delete()
            return
        check(self.fetch(workload), workload)

    def close(self) -> None:
        self._end.delete(self._client, self._listener, self._notifier)


def wrap(response: Any, workload: Workload) -> np.ndarray:
    """A numpy array over ``response``'s payload in shared memory (no copy).

    The array holds the response (through its buffer), so the slot goes
    back to the server only when the array and its views are collected.
    """
    payload = response.payload()
    buffer = (ctypes.c_uint8 * payload.len()).from_address(payload.as_ptr())
    buffer._iox2_response = response  # keep the slot while the array lives
    arr = np.frombuffer(buffer, dtype=workload.dtype)
    return arr.reshape(workload.shape)  # type: ignore[arg-type]


def service_exists(url: str) -> bool:
    """Whether the request-response service of ``url`` still exists."""
    iox2 = _iox2()
    return bool(
        iox2.Service.does_exist(
            iox2.ServiceName.new(_service_name(url)),
            iox2.config.global_config(),
            iox2.MessagingPattern.RequestResponse,
            iox2.ServiceType.Ipc,
        )
    )
