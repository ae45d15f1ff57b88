"""Build script: metadata lives in pyproject.toml; this file adds the
compiled framing layer ``framerpc._framing`` and the compiled message I/O
``framerpc._zmqio`` from ext/.

``FRAMERPC_PURE=1`` at build time skips it (a pure install needs no
compiler); a failed compilation is fatal, so a broken build never ships
silently as pure Python.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("FRAMERPC_PURE", "") in ("", "0"):
    import numpy
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension(
                "framerpc._framing",
                ["ext/_framing.pyx"],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            ),
            Extension("framerpc._zmqio", ["ext/_zmqio.pyx"], libraries=["dl"]),
        ],
        compiler_directives={"language_level": 3},
    )

setup(ext_modules=ext_modules)
