"""Build script: metadata lives in pyproject.toml; this file adds the
compiled framing layer ``framerpc.wire._framing`` and the compiled message
I/O ``framerpc.transport._zmqio`` from ext/.

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

    ext_modules = cythonize(
        [
            Extension(
                "framerpc.wire._framing",
                ["ext/_framing.pyx"],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            ),
            Extension("framerpc.transport._zmqio", ["ext/_zmqio.pyx"], libraries=["dl"]),
        ],
        compiler_directives={"language_level": 3},
    )

setup(ext_modules=ext_modules)
