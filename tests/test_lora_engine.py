"""The engine's LoRA path against PEFT: a PEFT adapter on the image's dequantized base in transformers gives
the logits the engine computes (float mode, FP16 storage of fp16-exact adapters, so only arithmetic differs),
in prefill and decode, for plain LoRA, rsLoRA, rank/alpha patterns and layers_to_transform; FP8 storage is
checked the same way with the decoded FP8 values given to PEFT."""

from __future__ import annotations

import numpy as np
import peft
import pytest
import torch
from engine_models import make_tiny
from lora_helpers import make_adapter
from transformers import LlamaForCausalLM

from romachip.engine.generate import Engine
from romachip.engine.model import decode_one_token, prefill
from romachip.rom import burn
from romachip.spec import load_chip
from romachip.sram.bank import AdapterBank
from romachip.sram.peft_reference import peft_with_stored_values
from romachip.workload import KvConfig

REL_TOL = 1e-4
PROMPT = [1, 5, 17, 33, 2, 64, 80, 9, 41, 7, 13, 99]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora_engine")
    tiny = make_tiny("gqa_tied_g32_4bit", layers=2)
    image = burn(tiny.quantized, load_chip("roma"), tmp / "tiny.rom", chip_preset="roma")
    qm = image.model()  # what the chip holds: codes as burned, FP16 norms
    base = LlamaForCausalLM(tiny.hf.config).eval()
    state = {k: torch.from_numpy(v.dequantize()) for k, v in qm.weights.items()}
    state.update({k: torch.from_numpy(v) for k, v in qm.floats.items()})
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
    base.load_state_dict(state)
    engine = Engine(qm, exact=False)  # activation and KV quantization off
    bank = AdapterBank.for_image(image, kv=KvConfig(context_tokens=64), precision="fp16")
    return tmp, tiny.hf.config, base, engine, bank


def _reference(base, folder) -> np.ndarray:
    pm = peft.PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        out = pm(torch.tensor([PROMPT])).logits[0].double().numpy()
    pm.unload()  # give the base model back without the LoRA layers
    return out


def _rel(got, ref) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


CASES = {
    "plain": dict(r=4, lora_alpha=8, target_modules="all-linear"),
    "rslora": dict(r=8, lora_alpha=6, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"]),
    "patterns": dict(
        r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "o_proj", "gate_proj", "down_proj"],
        rank_pattern={"down_proj": 2, r"model\.layers\.1\.self_attn\.q_proj": 6},
        alpha_pattern={"o_proj": 3, "k_proj": 10},
    ),
    "layers": dict(r=4, lora_alpha=16, target_modules=["o_proj", "up_proj"], layers_to_transform=[1]),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_engine_matches_peft(setup, case):
    tmp, cfg, base, engine, bank = setup
    folder = tmp / case
    make_adapter(LlamaForCausalLM(cfg), folder, b_std=0.2, dtype=torch.float16, **CASES[case])
    ref = _reference(base, folder)
    op = bank.load(case, folder)
    try:
        view = bank.view(case)
        got = engine.logits(PROMPT, adapter=view)
        without = engine.logits(PROMPT)
        assert _rel(got, ref) < REL_TOL
        assert _rel(without, ref) > 100 * REL_TOL  # the adapter matters far beyond the tolerance
        assert op.sram_bytes_written == bank.stored(case).nbytes
    finally:
        bank.unload(case)


class _Spy(dict):
    """An adapter mapping that records which modules the engine asked for."""

    def __init__(self, data):
        super().__init__(data)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        if key in self:
            self.asked.add(key)
        return super().get(key, default)


def test_lora_runs_for_every_projection_in_prefill_and_decode(setup):
    tmp, cfg, base, engine, bank = setup
    folder = tmp / "decode"
    make_adapter(LlamaForCausalLM(cfg), folder, b_std=0.2, dtype=torch.float16, r=4, target_modules="all-linear")
    ref = _reference(base, folder)
    bank.load("decode", folder)
    try:
        spy = _Spy(bank.view("decode"))
        cache = engine.new_cache(len(PROMPT), spy)
        head = prefill(engine.net, np.asarray(PROMPT[:-2]), cache, mode=engine.activation, adapter=spy)
        assert spy.asked == set(spy) and len(spy) == 2 * 7
        spy.asked.clear()
        steps = [decode_one_token(engine.net, t, cache, mode=engine.activation, adapter=spy) for t in PROMPT[-2:]]
        assert spy.asked == set(spy)
        assert _rel(head[-1], ref[len(PROMPT) - 3]) < REL_TOL
        for k, logits in enumerate(steps):
            assert _rel(logits, ref[len(PROMPT) - 2 + k]) < REL_TOL
    finally:
        bank.unload("decode")


def test_fp8_storage_is_what_the_engine_runs(setup):
    """The engine with FP8 storage equals PEFT given the decoded FP8 values (arithmetic only), and differs
    from the unquantized adapter by the storage error alone."""
    tmp, cfg, base, engine, _ = setup
    folder = tmp / "fp8"
    make_adapter(LlamaForCausalLM(cfg), folder, b_std=0.2, r=4, target_modules="all-linear")
    bank = AdapterBank(engine.chip, engine.model.spec, fmt=engine.model.fmt, kv=KvConfig(context_tokens=64))
    bank.load("fp8", folder)
    view = bank.view("fp8")
    ref_float = _reference(base, folder)
    pm = peft_with_stored_values(base, folder, view)
    with torch.no_grad():
        ref_fp8 = pm(torch.tensor([PROMPT])).logits[0].double().numpy()
    pm.unload()
    got = engine.logits(PROMPT, adapter=view)
    assert _rel(got, ref_fp8) < REL_TOL
    effect = ref_float - engine.logits(PROMPT)  # what the unquantized adapter changes
    storage = np.linalg.norm(got - ref_float) / np.linalg.norm(effect)
    assert 1e-3 < storage < 0.1  # FP8 keeps the adapter's effect to a few percent
