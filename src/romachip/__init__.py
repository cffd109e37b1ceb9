"""romachip: the ROMA ROM-based LLM accelerator in software.

Burn a LLaMA-family checkpoint into a ROM image, plug in LoRA adapters, run the chip bit-accurately
and measure what the silicon would do. See README.md and docs/.
"""

import os

# OpenMP threads (the native L-Unit kernel's and torch's share one libgomp) sleep when idle unless the user
# chose a policy: libgomp's default spin-wait made 2 engine threads 40x slower than 1 on a loaded 2-core
# machine (measured: 1.2 s of CPU per SmolLM2 token instead of 0.03 s). libgomp reads this when it loads,
# so it only takes effect where romachip is imported before torch (the CLI; not a script importing torch first).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
