"""The adapters a server holds: the AdapterBank of the image's chip, runtime loads confined to one
folder, and the model cards /v1/models lists (the base and every resident adapter, with `parent`).

Runtime loads read only PEFT folders (adapter_config.json + adapter_model.safetensors; pickled weights
are refused by the reader) whose resolved path, and the resolved path of each file read, lies inside
`--adapter-dir`: `..`, absolute paths elsewhere and symlinks out of the folder are all refused. The
bank decides whether an adapter fits; its capacity message is the refusal. The ROM image is only read.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from romachip.errors import RomachipError
from romachip.serve.errors import ApiError, from_romachip, model_not_found
from romachip.sram.bank import AdapterBank, BankOp
from romachip.sram.peft_import import WEIGHTS_NAME
from romachip.sram.storage import AdapterView

CONFIG_NAME = "adapter_config.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def resolve_inside(root: Path, given: str) -> Path:
    """The adapter folder `given` names (relative to `root`, or absolute), refused unless it and the files
    read from it resolve inside `root`."""
    base = root.resolve(strict=True)
    where = Path(given)
    candidate = where if where.is_absolute() else base / where
    real = candidate.resolve(strict=False)
    if not real.is_relative_to(base):
        raise ApiError(400, f"lora_path {given!r} is outside the server's adapter folder; put the adapter in it",
                       param="lora_path", code="path_outside_adapter_dir")  # fmt: skip
    if not real.exists():
        raise ApiError(404, f"lora_path {given!r} does not exist in the server's adapter folder",
                       param="lora_path", code="adapter_not_found")  # fmt: skip
    if not real.is_dir():
        raise ApiError(400, f"lora_path {given!r} is a file; give the PEFT adapter folder ({CONFIG_NAME} + "
                       f"{WEIGHTS_NAME})", param="lora_path", code="invalid_adapter")  # fmt: skip
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        f = real / name
        if f.exists() and not f.resolve(strict=True).is_relative_to(base):
            raise ApiError(400, f"lora_path {given!r}: {name} links outside the server's adapter folder",
                           param="lora_path", code="path_outside_adapter_dir")  # fmt: skip
    return real


class AdapterRegistry:
    """The bank plus what the API needs around it: names, load records, a lock, the allowed folder."""

    def __init__(self, bank: AdapterBank, base_id: str, adapter_dir: Path | None) -> None:
        self.bank, self.base_id, self.adapter_dir = bank, base_id, adapter_dir
        # Bank operations run one at a time, off the event loop; whoever reads the bank (the engine sizing a
        # request's KV cache from it) takes this lock too, so no read sees a load or unload half done.
        self.lock = self._lock = threading.Lock()
        self._loads: dict[str, BankOp] = {}
        self._created: dict[str, int] = {}
        self._sources: dict[str, str] = {}
        self.started = int(time.time())

    def check_name(self, name: str) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ApiError(400, f"lora_name {name!r} must be 1-64 letters, digits or . _ : - (starting with a letter "
                           "or digit)", param="lora_name", code="invalid_value")  # fmt: skip
        if name == self.base_id:
            raise ApiError(400, f"lora_name {name!r} is the base model's id; pick another", param="lora_name",
                           code="invalid_value")  # fmt: skip

    def load_trusted(self, name: str, folder: Path) -> BankOp:
        """An adapter the operator named at start-up (`--adapter NAME=DIR`): no folder restriction."""
        self.check_name(name)
        with self._lock:
            op = self.bank.load(name, folder)
            self._record(name, op, str(folder))
        return op

    def load(self, name: str, path: str) -> BankOp:
        """A runtime load (`POST /v1/load_lora_adapter`), confined to the adapter folder."""
        self.check_name(name)
        if self.adapter_dir is None:
            raise ApiError(403, "runtime adapter loading is off: start the server with --adapter-dir DIR",
                           code="adapter_loading_disabled")  # fmt: skip
        folder = resolve_inside(self.adapter_dir, path)
        with self._lock:
            if name in self.bank.names:
                raise ApiError(400, f"an adapter named {name!r} is already loaded; unload it first",
                               param="lora_name", code="adapter_exists")  # fmt: skip
            try:
                op = self.bank.load(name, folder)
            except RomachipError as exc:
                raise from_romachip(exc, param="lora_path") from None
            self._record(name, op, path)
        return op

    def unload(self, name: str) -> BankOp:
        with self._lock:
            if name not in self.bank.names:
                loaded = ", ".join(self.bank.names) or "none"
                raise ApiError(404, f"no adapter named {name!r} is loaded (loaded: {loaded})", param="lora_name",
                               code="adapter_not_found")  # fmt: skip
            op = self.bank.unload(name)
            for d in (self._loads, self._created, self._sources):
                d.pop(name, None)
        return op

    def _record(self, name: str, op: BankOp, source: str) -> None:
        self._loads[name], self._created[name], self._sources[name] = op, int(time.time()), source

    def resolve(self, model: str) -> tuple[AdapterView | None, BankOp | None]:
        """(the adapter view a request runs with, its load record); 404 for an unknown model id."""
        if model == self.base_id:
            return None, None
        with self._lock:
            if model not in self.bank.names:
                raise model_not_found(model)
            return self.bank.view(model), self._loads.get(model)

    def known(self, model: str) -> bool:
        return model == self.base_id or model in self.bank.names

    def max_context_tokens(self) -> int:
        with self._lock:
            return self.bank.max_context_tokens

    def cards(self) -> list[dict]:
        """/v1/models: the base, then every resident adapter as a model whose `parent` is the base."""
        with self._lock:
            ctx = self.bank.max_context_tokens
            out = [{"id": self.base_id, "object": "model", "created": self.started, "owned_by": "romachip",
                    "root": self.base_id, "parent": None, "max_model_len": ctx}]  # fmt: skip
            for name in self.bank.names:
                stored = self.bank.stored(name)
                out.append({
                    "id": name, "object": "model", "created": self._created.get(name, self.started),
                    "owned_by": "romachip", "root": self._sources.get(name, stored.source), "parent": self.base_id,
                    "max_model_len": ctx, "rank": max(stored.ranks.values(), default=0),
                    "precision": stored.precision, "sram_bytes": stored.nbytes,
                })  # fmt: skip
        return out
