"""The server endpoint: ``RPCServer``, split by job."""

from .decorators import DEFAULT_METHOD_TIMEOUT
from .rpc_server import RPCServer

__all__ = ["DEFAULT_METHOD_TIMEOUT", "RPCServer"]
