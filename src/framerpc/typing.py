"""Old import path of ``framerpc.types`` (type checks and coercion for
signals and properties), kept so existing imports keep working."""

from .types import (
    coerce_to_generic as coerce_to_generic,
)
from .types import (
    is_instance_of_generic as is_instance_of_generic,
)
from .types import (
    type_name as type_name,
)

__all__ = [
    "coerce_to_generic",
    "is_instance_of_generic",
    "type_name",
]
