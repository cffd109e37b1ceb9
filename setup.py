"""The optional native kernels: the engine's L-Unit kernel (src/romachip/engine/_lunit.c and its siblings)
and the perf model's event loop (src/romachip/perf/_events.c); everything else is in pyproject.toml.

`optional=True`: where no C compiler (or no Python headers) is found the install goes on without them;
the engine then takes its NumPy path, which gives the same bits (docs/numerics.md), and the perf model
its Python event loop, which gives the same schedules. A few C files, a few seconds.
"""

from setuptools import Extension, setup

# -ffp-contract=off and no -ffast-math: every float step stays one IEEE operation (the numeric contract).
# OpenMP splits output rows over threads; each output is still computed by one thread, in one order.
FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-fast-math", "-fopenmp"]

setup(
    ext_modules=[
        Extension(
            "romachip.engine._lunit",
            sources=[f"src/romachip/engine/{name}.c" for name in ("_lunit", "_amx", "_vector", "_hunit")],
            depends=["src/romachip/engine/_native.h", "src/romachip/engine/_lunit.h"],
            extra_compile_args=FLAGS,
            extra_link_args=["-fopenmp"],
            optional=True,
        ),
        # one self-contained integer loop: no OpenMP, no float arithmetic
        Extension(
            "romachip.perf._events",
            sources=["src/romachip/perf/_events.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
    ]
)
