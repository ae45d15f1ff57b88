"""A server's registration with a ``DeviceRegistry``: registering and
unregistering (the ``RegistryLink`` keeps it alive from the serve loop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import zmq

    from .. import transport
    from ..registry import RegistryLink

__all__ = ["RegistrationMixin"]


class RegistrationMixin:
    """RPCServer's registry glue (see ``RPCServer``)."""

    # set by RPCServer.__init__
    url: str
    alive_timeout: int
    name: str
    uuid: str | None
    registry_addr: str
    _zmq_context: zmq.Context
    _options: transport.SocketOptions
    _registry_link: RegistryLink | None
    _terminated: bool

    def register_to_registry(
        self,
        type_: str,
        name: str,
        registry_url: str,
        overwrite: bool = True,
        *,
        timeout: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> str:
        """Register this server with a ``DeviceRegistry``.

        While ``serve_forever`` runs, the server checks in with the
        registry and registers again if the registry forgot it.

        Parameters
        ----------
        type_ : str
            Device type.
        name : str
            Proposed name; the registry may change it to avoid a clash.
        registry_url : str
            The registry's URL, e.g. ``tcp://host:5555``.
        overwrite : bool
            Take the name from a device already holding it.
        timeout : int
            How long to wait for the registry's answer (ms, default 1000);
            a registry across a slow link or on a loaded host may need more.
        clock : callable
            Monotonic time in seconds that schedules the check-ins (default
            ``time.monotonic``); tests pass a clock they move by hand.

        Returns
        -------
        str
            The name the registry accepted.

        Raises
        ------
        TimeoutError
            The registry did not answer within ``timeout`` ms.
        """
        from ..registry import RegistryLink

        link = RegistryLink(
            self._zmq_context,
            registry_url,
            type_,
            name,
            self.url,
            self.alive_timeout,
            overwrite=overwrite,
            security=self._options.security,
            clock=clock,
        )
        try:
            self.name, self.uuid = link.register(timeout)
        except BaseException:
            link.close()
            raise
        if self._registry_link is not None:
            self._registry_link.close()
        self._registry_link = link
        self.registry_addr = registry_url
        return self.name

    def _unregister(self) -> None:
        link, self._registry_link = self._registry_link, None
        if link is not None:
            try:
                if not self._terminated:  # no request on a terminated context
                    link.unregister(timeout=500)
            finally:
                link.close()
        self.name, self.uuid, self.registry_addr = "", None, ""
