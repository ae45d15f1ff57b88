"""Old import path of CURVE security, kept so existing imports keep working:
the settings and key files are ``framerpc.transport.keys``, the ZAP handler
``framerpc.transport.authenticator``, socket set-up ``framerpc.transport.curve``."""

from .transport.authenticator import (
    Authenticator as Authenticator,
)
from .transport.authenticator import (
    ClientKeys as ClientKeys,
)
from .transport.authenticator import (
    stop_handler as stop_handler,
)
from .transport.curve import (
    apply_client as apply_client,
)
from .transport.curve import (
    apply_server as apply_server,
)
from .transport.curve import (
    peer_key as peer_key,
)
from .transport.keys import (
    Security as Security,
)
from .transport.keys import (
    admin_keys as admin_keys,
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
