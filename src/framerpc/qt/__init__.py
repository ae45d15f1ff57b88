"""framerpc in a Qt GUI: signals, calls and frames delivered in the GUI thread.

Built on qtpy, so PySide6 and PyQt6 both work (``pip install
"framerpc[qt]"``). Importing this package imports Qt; nothing else in
framerpc does.

- ``QtSignals(proxy)`` re-emits a proxy's remote signals as the Qt signal
  ``received(name, args)`` in the GUI thread; ``connect_slot(name, slot)``
  calls ``slot(*args)`` there.
- ``CallRunner()`` runs blocking proxy calls on its worker threads and
  returns a ``QtFuture`` whose ``succeeded`` / ``failed`` / ``finished``
  Qt signals (and done callbacks) fire in the GUI thread.
- ``FramePump(grab)`` calls ``grab()`` in a loop on a thread of its own
  and delivers the latest result as ``frame(object)`` in the GUI thread,
  one frame at a time (no queue builds up when the GUI is slower).

"GUI thread" means the thread the object was created in (it must run a
Qt event loop), normally the main thread. Close each object (``close()``
or ``stop()``) before closing the proxies it uses, and the proxies before
``context.term()``; see docs/guides/qt.md.
"""

from ._calls import CallRunner, QtFuture
from ._frames import FramePump
from ._signals import QtSignals

__all__ = ["CallRunner", "FramePump", "QtFuture", "QtSignals"]
