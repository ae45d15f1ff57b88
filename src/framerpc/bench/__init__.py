"""framerpc's benchmark runner (``framerpc bench``): framerpc against raw
pyzmq, side by side in one run. ``run.main`` is the entry point; the
server processes and client loops live in ``_peers``."""
