"""romachip: the ROMA ROM-based LLM accelerator in software.

Burn a LLaMA-family checkpoint into a ROM image, plug in LoRA adapters, run the chip bit-accurately
and measure what the silicon would do. See README.md and docs/.
"""

__version__ = "0.1.0"
