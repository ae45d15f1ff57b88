"""Build script: metadata lives in pyproject.toml; this file adds the
compiled framing layer ``framerpc.wire._framing``, the compiled message
I/O ``framerpc.transport._zmqio``, the compiled call path
``framerpc.rpc._callpath`` and the compiled shared-memory hot path
``framerpc.wire._shmpath`` from ext/.

``FRAMERPC_PURE=1`` (or true/yes/on) at build time skips it (a pure install needs no
compiler); a failed compilation is fatal, so a broken build never ships
silently as pure Python.
"""

import importlib.util
import os
import pathlib

from setuptools import Extension, setup

# The same true/false spellings as at run time (framerpc._env, loaded by
# path: framerpc itself is not importable before it is built).
_spec = importlib.util.spec_from_file_location(
    "_framerpc_env", pathlib.Path(__file__).parent / "src" / "framerpc" / "_env.py"
)
_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_env)
_pure = _env.parse_flag(os.environ.get("FRAMERPC_PURE"))
if _pure is None:
    raise SystemExit(
        f"FRAMERPC_PURE={os.environ['FRAMERPC_PURE']!r} is not understood: use "
        "1/true/yes/on to skip the compiled layer, 0/false/no/off or empty to build it"
    )

ext_modules = []
if not _pure:
    import numpy
    from Cython.Build import cythonize

    # cythonize sees a module's own .pxd only beside its .pyx; _zmqio's is in
    # src/ (where cimport finds it as framerpc.transport._zmqio): a newer one
    # must regenerate _zmqio.c too, not only _callpath.c.
    _root = pathlib.Path(__file__).parent
    _pxd, _zmqio_c = _root / "src/framerpc/transport/_zmqio.pxd", _root / "ext/_zmqio.c"
    if _zmqio_c.exists() and _zmqio_c.stat().st_mtime < _pxd.stat().st_mtime:
        _zmqio_c.unlink()

    ext_modules = cythonize(
        [
            Extension(
                "framerpc.wire._framing",
                ["ext/_framing.pyx"],
                # included by _framing.pyx: an edit to any rebuilds it
                depends=[
                    "ext/_packer.pxi",
                    "ext/_unpacker.pxi",
                    "ext/_ndarray_new.pxi",
                ],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            ),
            Extension(
                "framerpc.transport._zmqio",
                ["ext/_zmqio.pyx"],
                libraries=["dl"],
                depends=["ext/_libzmq.pxi", "src/framerpc/transport/_zmqio.pxd"],
            ),
            # the call path: calls _zmqio's frame functions from C
            Extension(
                "framerpc.rpc._callpath",
                ["ext/_callpath.pyx"],
                depends=["src/framerpc/transport/_zmqio.pxd"],
            ),
            # the shared-memory hot path: arrays made through numpy's C API
            Extension(
                "framerpc.wire._shmpath",
                ["ext/_shmpath.pyx"],
                # _parcopy.h: the copy split with a worker pthread
                depends=["ext/_ndarray_new.pxi", "ext/_parcopy.h"],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            ),
        ],
        # where cimport finds framerpc/transport/_zmqio.pxd (_zmqio's declarations)
        include_path=["src"],
        compiler_directives={"language_level": 3},
    )

setup(ext_modules=ext_modules)
