"""Old import path of ``framerpc.tools.cli_device`` (the device commands
of the ``framerpc`` command), kept so existing imports keep working."""

from .tools.cli_device import (
    DEFAULT_REGISTRY as DEFAULT_REGISTRY,
)
from .tools.cli_device import (
    DEFAULT_TIMEOUT_MS as DEFAULT_TIMEOUT_MS,
)
from .tools.cli_device import (
    CommandError as CommandError,
)
from .tools.cli_device import (
    GenericClient as GenericClient,
)
from .tools.cli_device import (
    add_commands as add_commands,
)
from .tools.cli_device import (
    as_array as as_array,
)
from .tools.cli_device import (
    connected as connected,
)
from .tools.cli_device import (
    jsonable as jsonable,
)
from .tools.cli_device import (
    load_descriptions as load_descriptions,
)
from .tools.cli_device import (
    parse_arguments as parse_arguments,
)
from .tools.cli_device import (
    parse_value as parse_value,
)
from .tools.cli_device import (
    resolve as resolve,
)
from .tools.cli_device import (
    summarize as summarize,
)

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "GenericClient",
    "as_array",
    "connected",
    "load_descriptions",
    "parse_arguments",
    "resolve",
    "CommandError",
    "DEFAULT_REGISTRY",
    "add_commands",
    "parse_value",
    "jsonable",
    "summarize",
]
