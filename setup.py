"""The optional native kernels: the engine's L-Unit kernel (src/romachip/engine/_lunit.c and its siblings),
the perf model's event loop (src/romachip/perf/_events.c) and the tile table's sums (src/romachip/_tiles.c);
everything else is in pyproject.toml.

`optional=True`: where no C compiler (or no Python headers) is found the install goes on without them;
the engine then takes its NumPy path, which gives the same bits (docs/numerics.md), the perf model its
Python event loop, which gives the same schedules, and the placement its NumPy sums, the same numbers.
A few C files, a few seconds.
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
        # integer loops, no OpenMP, no float arithmetic: the event loop; sums over a placement's tile table
        Extension(
            "romachip.perf._events",
            sources=["src/romachip/perf/_events.c"],
            depends=["src/romachip/_pyints.h"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,
        ),
        Extension("romachip._tiles", sources=["src/romachip/_tiles.c"], depends=["src/romachip/_pyints.h"],
                  extra_compile_args=["-O2", "-std=c11"], optional=True),  # fmt: skip
    ]
)
