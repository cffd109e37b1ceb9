"""romachip: the ROMA ROM-based LLM accelerator in software.

Burn a LLaMA-family checkpoint into a ROM image, plug in LoRA adapters, run the chip bit-accurately
and measure what the silicon would do. See README.md and docs/.
"""

import os

# OpenMP threads (the native kernel's and torch's share one libgomp) spin briefly, then sleep, unless the user
# chose a policy. A decode token runs a few hundred short parallel regions, so how an idle thread waits sets
# the 2-thread speed (SmolLM2 decode, 2 threads, measured on a 2-core machine): sleeping at once (PASSIVE)
# gave 22 tok/s when the machine was quiet (each region wakes a thread on an idle vCPU) but 45 under two busy
# processes; libgomp's default long spin made 2 threads 40x slower than 1 on a loaded host; a spin of 10,000
# iterations (tens of microseconds) gave 80-110 quiet and 17 loaded (1 thread: 40-55 either way). Quiet is
# the common case; on a shared machine set OMP_WAIT_POLICY=PASSIVE or run one thread. libgomp reads these
# when it loads, so they take effect where romachip is imported before torch (the CLI; the benchmarks).
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
