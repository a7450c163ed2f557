"""Build the Cython hot path (src_pyx/*.pyx) as extension modules inside the raftlog package."""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        f"raftlog.{pyx.stem}",
        [str(pyx)],
        libraries=["z"],
        extra_compile_args=["-O3"],
    )
    for pyx in sorted(Path("src_pyx").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
