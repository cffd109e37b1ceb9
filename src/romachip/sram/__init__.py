"""The H-Units' SRAM contents: LoRA adapters (PEFT import, FP8/FP16/BF16 storage, the adapter bank)."""
