"""Old import path of ``framerpc.tools.cli_device`` (the device commands
of the ``framerpc`` command), kept so existing imports keep working."""

from .tools.cli_device import (
    DEFAULT_REGISTRY as DEFAULT_REGISTRY,
)
from .tools.cli_device import (
    CommandError as CommandError,
)
from .tools.cli_device import (
    add_commands as add_commands,
)
from .tools.cli_device import (
    jsonable as jsonable,
)
from .tools.cli_device import (
    parse_value as parse_value,
)
from .tools.cli_device import (
    summarize as summarize,
)

__all__ = [
    "CommandError",
    "DEFAULT_REGISTRY",
    "add_commands",
    "parse_value",
    "jsonable",
    "summarize",
]
