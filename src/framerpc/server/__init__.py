"""The server endpoint: ``RPCServer``, split by job."""

from .rpc_server import RPCServer

__all__ = ["RPCServer"]
