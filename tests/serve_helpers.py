"""A real romachip server for the tests: a tiny random LLaMA with SmolLM2's real tokenizer and chat
template, burned for the `roma` chip, PEFT adapters for it, and uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from pathlib import Path

import httpx
from lora_helpers import make_adapter, quantize_tiny, tiny_llama

from romachip.rom import RomImage, burn
from romachip.serve import ServeConfig, create_app
from romachip.spec import load_chip

VOCAB = 2048
#: 480 KV bytes per token (3 layers x 4 KV heads x K and V x 16 int8 + a float32 scale), so the H-Units'
#: SRAM, not the model's positions or the vector units, bounds the context (and adapters shrink it).
TINY = dict(seed=0, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, max_position_embeddings=2**24,
            hidden_size=64, intermediate_size=96, num_key_value_heads=4)  # fmt: skip
#: The ChatML template SmolLM2-Instruct ships (its default system prompt included).
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def real_tokenizer():  # noqa: ANN201
    """A real byte-level BPE tokenizer (2,048 tokens, trained on Python's docs in a fraction of a second),
    SmolLM2's special tokens at SmolLM2's ids, wrapped by transformers with the ChatML template."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(list(topics.values()), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=CHATML, eos_token="<|im_end|>")


def tiny_image(path: Path, hf_tokenizer) -> RomImage:  # noqa: ANN001
    """A 3-block random LLaMA over the tokenizer's vocabulary, with the tokenizer and chat template."""
    model = tiny_llama(**TINY)
    q = quantize_tiny(model, tokenizer_json=hf_tokenizer.backend_tokenizer.to_str())
    q = dataclasses.replace(q, chat_template=hf_tokenizer.chat_template)
    return burn(q, load_chip("roma"), path, chip_preset="roma")


def peft_adapter(folder: Path, seed: int, **kwargs) -> Path:  # noqa: ANN003
    """A PEFT LoRA folder (safetensors) for the tiny model, B randomised so it changes the output."""
    model = tiny_llama(**TINY)
    kwargs.setdefault("target_modules", ["q_proj", "v_proj", "down_proj"])
    make_adapter(model, folder, seed=seed, b_std=0.5, **kwargs)
    return folder


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class RunningServer:
    """uvicorn serving create_app(config) on 127.0.0.1 in a thread, ready when started."""

    def __init__(self, config: ServeConfig, *, ready_timeout_s: float = 60.0) -> None:
        import uvicorn

        self.app = create_app(config)
        self.backend = self.app.state.backend
        self.sock = _free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.backend.error is not None:
                raise RuntimeError(f"the test server failed to load: {self.backend.error}")
            time.sleep(0.05)
        raise RuntimeError("the test server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10.0)
        self.sock.close()
