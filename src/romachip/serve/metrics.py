"""Prometheus metrics of one server (a registry per app, so several servers can share a process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, queue_depth: Callable[[], int], running: Callable[[], int]) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("romachip_requests", "Generation requests by endpoint, model and outcome",
                                ["endpoint", "model", "status"], registry=r)  # fmt: skip
        self.prompt_tokens = Counter("romachip_prompt_tokens", "Prompt tokens prefilled", ["model"], registry=r)
        self.generated_tokens = Counter("romachip_generation_tokens", "Tokens generated", ["model"], registry=r)
        self.chip_seconds = Counter("romachip_chip_seconds", "Simulated chip time of the replies (TTFT + decode)",
                                    ["model"], registry=r)  # fmt: skip
        self.chip_joules = Counter("romachip_chip_energy_joules", "Simulated chip energy of the replies",
                                   ["model"], registry=r)  # fmt: skip
        self.adapter_ops = Counter("romachip_adapter_operations", "Adapter loads and unloads", ["op", "status"],
                                   registry=r)  # fmt: skip
        self.latency = Histogram("romachip_request_seconds", "Host wall time of a generation request",
                                 ["endpoint"], registry=r)  # fmt: skip
        self.cancelled = Counter("romachip_cancelled_requests", "Generations stopped because the client went away",
                                 registry=r)  # fmt: skip
        self.rejected = Counter("romachip_rejected_requests", "Requests refused with 429 (queue full)", registry=r)
        Gauge("romachip_queue_depth", "Requests waiting for the engine", registry=r).set_function(queue_depth)
        Gauge("romachip_requests_running", "Requests the engine is running", registry=r).set_function(running)

    def reply(self, endpoint: str, model: str, prompt: int, generated: int, chip: dict, seconds: float) -> None:
        self.requests.labels(endpoint, model, "ok").inc()
        self.prompt_tokens.labels(model).inc(prompt)
        self.generated_tokens.labels(model).inc(generated)
        self.chip_seconds.labels(model).inc(chip["total_ms"] / 1e3)
        self.chip_joules.labels(model).inc(chip["energy_mj"] / 1e3)
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
