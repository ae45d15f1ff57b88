"""Build script: metadata lives in pyproject.toml; this file only adds the
compiled framing layer (ext/) when its source is present."""

from pathlib import Path

from setuptools import setup

ext_modules = []
if Path("ext/_framing.pyx").exists():
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension("framerpc._framing", ["ext/_framing.pyx"],
                   include_dirs=[numpy.get_include()])],
        compiler_directives={"language_level": 3},
    )

setup(ext_modules=ext_modules)
