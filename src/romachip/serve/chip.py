"""The `chip` object of a reply: what the ROMA silicon would have taken for that very request, from the
perf model (romachip.perf) on the image's chip, and `timings`, what this host took (llama.cpp's names)."""

from __future__ import annotations

import threading

from romachip.perf import ChipModel, report
from romachip.rom import RomImage
from romachip.sram.bank import BankOp
from romachip.sram.storage import AdapterView
from romachip.workload import LoraConfig

SOURCE = "romachip perf model on the image's chip (docs/perf.md); calibrated parameters are named in the preset"


def lora_config(view: AdapterView | None) -> LoraConfig | None:
    """The perf model's LoRA workload of an adapter: its largest rank on the projections it adapts."""
    return view.workload() if view else None


class ChipTimer:
    """One ChipModel per LoRA workload, all on the placement the image holds (never recompiled), shared by
    every request; thread-safe."""

    def __init__(self, image: RomImage) -> None:
        self.chip, self.spec, self.fmt = image.chip, image.spec, image.fmt
        self.placement = image.placement
        self._models: dict[LoraConfig | None, ChipModel] = {}
        self._lock = threading.Lock()

    def _model(self, lora: LoraConfig | None) -> ChipModel:
        if lora not in self._models:
            self._models[lora] = ChipModel(self.chip, self.spec, fmt=self.fmt, lora=lora, placement=self.placement)
        return self._models[lora]

    def chip_object(
        self, view: AdapterView | None, prompt_tokens: int, generated_tokens: int, load: BankOp | None
    ) -> dict:
        """Simulated TTFT, decode rate, time and energy of this request; the adapter's SRAM load cost."""
        lora = lora_config(view)
        with self._lock:  # ChipModel caches decode steps in a dict: one simulation at a time
            rep = report(self._model(lora), prompt_tokens, max(generated_tokens, 1))
        decode_steps = max(generated_tokens - 1, 0)  # the first token comes out of the prefill
        decode_ms = decode_steps / rep.decode_tokens_per_s * 1e3 if decode_steps else 0.0
        adapter = None
        if view is not None:
            adapter = {
                "name": view.name,
                "rank": lora.rank if lora else 0,
                "precision": view.precision,
                "resident": True,  # requests run on resident adapters; the load is paid once, at load time
                "sram_bytes": load.sram_bytes_written if load else None,
                "load_cycles": load.write_cycles if load else None,
                "load_ms": load.write_s * 1e3 if load else None,
                "load_energy_mj": load.write_energy_j * 1e3 if load else None,
            }
        return {
            "chip": self.chip.name,
            "model": self.spec.name,
            "weight_format": self.fmt.describe(),
            "prompt_tokens": prompt_tokens,
            "generated_tokens": generated_tokens,
            "ttft_ms": rep.ttft_ms,
            "decode_tokens_per_s": rep.decode_tokens_per_s,
            "decode_ms": decode_ms,
            "total_ms": rep.ttft_ms + decode_ms,
            "energy_mj": rep.prefill_energy_mj + rep.energy_per_token_mj * decode_steps,
            "prefill_energy_mj": rep.prefill_energy_mj,
            "energy_per_token_mj": rep.energy_per_token_mj,
            "power_w": rep.power_w,
            "adapter": adapter,
            "source": SOURCE,
        }


def host_timings(prompt_tokens: int, generated_tokens: int, job) -> dict:  # noqa: ANN001 (worker.Job)
    """What this host took, in llama.cpp's `timings` names (ms), plus the time the request queued."""
    first = job.first_token_s or job.finished_s
    prompt_ms = max(first - job.started_s, 0.0) * 1e3
    decoded = max(generated_tokens - 1, 0)
    predicted_ms = max(job.finished_s - first, 0.0) * 1e3
    return {
        "queue_ms": max(job.started_s - job.submitted_s, 0.0) * 1e3,
        "prompt_n": prompt_tokens,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / prompt_tokens if prompt_tokens else 0.0,
        "prompt_per_second": prompt_tokens / prompt_ms * 1e3 if prompt_ms else 0.0,
        "predicted_n": generated_tokens,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / decoded if decoded else 0.0,
        "predicted_per_second": decoded / predicted_ms * 1e3 if predicted_ms else 0.0,
    }
