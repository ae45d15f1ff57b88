"""framerpc's benchmark runner (``framerpc bench``): framerpc against raw
pyzmq, side by side in one run.

``workloads`` (what is asked), ``systems`` (servers and clients of each
system), ``timing`` (the timing loops), ``processes`` (server and client
processes), ``report`` (tables, JSON, plot) and ``run`` (``run.main``, the
entry point). Nothing here imports framerpc at import time: the processes
load this package by path and then the framerpc checkout they measure.
"""
