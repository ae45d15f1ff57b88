"""The client endpoint: ``RPCClient`` and its proxies, split by job."""

from .rpc_client import NoResult, ProtocolChoice, RPCClient

__all__ = ["NoResult", "ProtocolChoice", "RPCClient"]
