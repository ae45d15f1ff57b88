"""Old import path of CURVE security: ``framerpc.transport.keys`` and
``framerpc.transport.authenticator``, kept so existing imports keep working."""

from .transport.keys import (
    Authenticator as Authenticator,
)
from .transport.keys import (
    ClientKeys as ClientKeys,
)
from .transport.keys import (
    Security as Security,
)
from .transport.keys import (
    admin_keys as admin_keys,
)
from .transport.keys import (
    apply_client as apply_client,
)
from .transport.keys import (
    apply_server as apply_server,
)
from .transport.keys import (
    curve_available as curve_available,
)
from .transport.keys import (
    generate_keys as generate_keys,
)
from .transport.keys import (
    load_public_key as load_public_key,
)
from .transport.keys import (
    peer_key as peer_key,
)

__all__ = [
    "Authenticator",
    "ClientKeys",
    "Security",
    "admin_keys",
    "apply_client",
    "apply_server",
    "curve_available",
    "generate_keys",
    "load_public_key",
    "peer_key",
]
