"""Old import path of ``framerpc.wire.framing`` (the framing engine
switch), kept so existing imports keep working."""

from .wire.framing import (
    EXT_ARRAY as EXT_ARRAY,
)
from .wire.framing import (
    EXT_BUFFER as EXT_BUFFER,
)
from .wire.framing import (
    EXT_INLINE_ARRAY as EXT_INLINE_ARRAY,
)
from .wire.framing import (
    IMPLEMENTATION as IMPLEMENTATION,
)
from .wire.framing import (
    INLINE_LIMIT as INLINE_LIMIT,
)
from .wire.framing import (
    MAX_DEPTH as MAX_DEPTH,
)
from .wire.framing import (
    MAX_FRAMES as MAX_FRAMES,
)
from .wire.framing import (
    MAX_HEADER_SIZE as MAX_HEADER_SIZE,
)
from .wire.framing import (
    MAX_OBJECTS as MAX_OBJECTS,
)
from .wire.framing import (
    OutOfBand as OutOfBand,
)
from .wire.framing import (
    decode as decode,
)
from .wire.framing import (
    encode as encode,
)

__all__ = [
    "EXT_BUFFER",
    "EXT_ARRAY",
    "EXT_INLINE_ARRAY",
    "INLINE_LIMIT",
    "MAX_FRAMES",
    "MAX_HEADER_SIZE",
    "MAX_OBJECTS",
    "MAX_DEPTH",
    "OutOfBand",
    "encode",
    "decode",
    "IMPLEMENTATION",
]
