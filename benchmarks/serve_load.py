"""`romachip serve` under load: 1, 8 and 32 concurrent clients on loopback against one solo run.

The server runs the demo image (SmolLM2-135M, uint4 g128, burned for `roma`) with three PEFT LoRA
adapters resident (rank 8 on q_proj/v_proj, random B, written as PEFT safetensors folders). Client i
asks for model [base, a, b, c][i % 4], streams when i is odd, samples at temperature 0.7 with seed i.
Every reply's token ids must equal the solo run of the same request (the engine alone, as `romachip
run` computes it: same prompt, adapter, seed); none may fail, and /health must answer 200 afterwards.

Reported per level: aggregate generated tokens/s (all tokens / wall time of the level), p50/p99 request
latency, the aggregate rate as a ratio to the solo run's tokens/s measured in the same process, and the
429 / failure / mismatch counts. One engine serves one request at a time, so the ratio stays near 1:
concurrency buys fairness and admission control on this host, not throughput (the numbers are the host's;
the `chip` object in each reply says what the silicon would take).

    python -m benchmarks serve_load
    python benchmarks/serve_load.py --tokens 16 --levels 1 8 32 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from romachip.engine.demo_model import ensure_demo_image
from romachip.engine.generate import Engine
from romachip.rom import RomImage
from romachip.serve import ServeConfig, create_app
from romachip.sram.bank import AdapterBank

ADAPTERS = ("a", "b", "c")
QUESTIONS = ["What is a ROM?", "Name a prime number.", "Why is the sky blue?", "What does SRAM keep?",
             "Say hello in French.", "What is 2 + 2?", "Describe a cat.", "What is a chip?"]  # fmt: skip


def write_peft_adapter(folder: Path, spec, seed: int, rank: int = 8) -> Path:  # noqa: ANN001 (ModelSpec)
    """A PEFT LoRA folder as `save_pretrained` writes it: adapter_config.json + adapter_model.safetensors."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    shapes, tensors = spec.linear_shapes(), {}
    for layer in range(spec.num_layers):
        for proj in ("q_proj", "v_proj"):
            out_f, in_f = shapes[proj]
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            bound = 1.0 / np.sqrt(in_f)
            tensors[f"{key}.lora_A.weight"] = rng.uniform(-bound, bound, (rank, in_f)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.normal(0.0, 0.02, (out_f, rank)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "bias": "none",
              "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": spec.name}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def request(i: int, base: str, tokens: int) -> dict:
    model = ([base, *ADAPTERS])[i % 4]
    messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]
    return {"model": model, "messages": messages, "max_tokens": tokens, "temperature": 0.7, "seed": i,
            "stream": i % 2 == 1, "return_tokens": True}  # fmt: skip


def solo_runs(image: RomImage, folders: dict[str, Path], bodies: list[dict]) -> tuple[list[list[int]], float]:
    """Each request alone on a fresh engine holding its adapter (`romachip run --adapter`), and the solo
    tokens/s of the first one (the reference rate)."""
    from romachip.engine.text import encode_messages

    engine = Engine(image.model(), chip=image.chip)
    bank = AdapterBank.for_image(image)
    for name, folder in folders.items():
        bank.load(name, folder)
    out, rate = [], 0.0
    for k, body in enumerate(bodies):
        ids = encode_messages(engine.model, engine.tokenizer, body["messages"])
        view = None if body["model"] not in folders else bank.view(body["model"])
        t0 = time.perf_counter()
        gen = engine.generate(ids, max_tokens=body["max_tokens"], temperature=0.7, seed=body["seed"], adapter=view)
        if k == 0:
            rate = gen.generated_tokens / (time.perf_counter() - t0)
        out.append(gen.token_ids)
    return out, rate


async def ask(client: httpx.AsyncClient, body: dict) -> tuple[int, list[int], float]:
    """(status, token ids, latency s) of one request, streamed or not."""
    t0 = time.perf_counter()
    if not body["stream"]:
        r = await client.post("/v1/chat/completions", json=body)
        ids = r.json()["choices"][0]["token_ids"] if r.status_code == 200 else []
        return r.status_code, ids, time.perf_counter() - t0
    ids: list[int] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                data = json.loads(line[6:])
                if "error" in data:
                    return 500, ids, time.perf_counter() - t0
                for choice in data.get("choices", []):
                    ids += choice.get("token_ids", [])
        return r.status_code, ids, time.perf_counter() - t0


async def level(url: str, bodies: list[dict], expected: list[list[int]]) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=64)) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(ask(client, b) for b in bodies))
        wall = time.perf_counter() - t0
        healthy = (await client.get("/health")).status_code == 200
    latencies = sorted(r[2] for r in results)
    tokens = sum(len(r[1]) for r in results)
    return {
        "clients": len(bodies),
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": latencies[min(len(latencies) - 1, int(np.ceil(0.99 * len(latencies))) - 1)],
        "rejected_429": sum(r[0] == 429 for r in results),
        "failed": sum(r[0] not in (200, 429) for r in results),
        "mismatched": sum(r[0] == 200 and r[1] != e for r, e in zip(results, expected, strict=True)),
        "healthy_after": healthy,
    }


def serve_in_thread(config: ServeConfig):  # noqa: ANN201
    import uvicorn

    app = create_app(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    if not app.state.backend.wait_ready(300):
        raise SystemExit(f"the server did not load: {app.state.backend.error}")
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=16, help="max_tokens of every request")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients per level")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    path, _ = ensure_demo_image()
    image = RomImage.open(path)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {n: write_peft_adapter(Path(tmp) / n, image.spec, seed) for seed, n in enumerate(ADAPTERS)}
        bodies = {n: [request(i, image.spec.name, args.tokens) for i in range(n)] for n in args.levels}
        distinct = bodies[max(args.levels)]  # request i is the same at every level
        expected, solo_rate = solo_runs(image, folders, distinct)
        config = ServeConfig(image=path, adapters=tuple(folders.items()), max_queue=64, max_tokens=args.tokens)
        server, thread, url = serve_in_thread(config)
        try:
            rows = [asyncio.run(level(url, bodies[n], expected[:n])) for n in args.levels]
        finally:
            server.should_exit = True
            thread.join(30)
    for row in rows:
        row["ratio_to_solo"] = row["tokens_per_s"] / solo_rate
    out = {"model": image.spec.name, "tokens_per_request": args.tokens, "solo_tokens_per_s": solo_rate, "levels": rows}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{image.spec.name}, {args.tokens} tokens per request; solo run {solo_rate:.1f} tokens/s (this host)")
    print("clients  tokens/s  ratio  p50 s   p99 s   429  failed  mismatched  healthy")
    for r in rows:
        print(f"{r['clients']:>7}  {r['tokens_per_s']:>8.1f}  {r['ratio_to_solo']:>5.2f}  {r['latency_p50_s']:>6.2f}  "
              f"{r['latency_p99_s']:>6.2f}  {r['rejected_429']:>3}  {r['failed']:>6}  {r['mismatched']:>10}  "
              f"{r['healthy_after']}")  # fmt: skip


if __name__ == "__main__":
    main()
