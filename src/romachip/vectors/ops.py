"""Turn the tap's events of one step into ops: per selected unit, what it receives, holds and must produce.

Each op is a manifest entry {kind, unit, layer, step, module, positions, params, inputs, memory, expected}
whose values name files (or ROM tiles); the checker replays ops in this order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from romachip.compile import Placement
from romachip.engine.model import FUSED
from romachip.engine.tap import OpKind, TapEvent
from romachip.errors import VectorsError
from romachip.quant.formats import WeightFormat
from romachip.rom.layout import format_to_json
from romachip.vectors.capture import Step
from romachip.vectors.store import VectorStore
from romachip.vectors.units import kv_positions, unit_tiles

VECTOR = "vector"  # the `unit` of ops the vector units compute (whole rows, as the contract defines them)
_GROUP_OF = {n: key for key, names in FUSED.items() for n in names}


def _int_element(values: np.ndarray) -> str:
    """I_j words: int32 (every 2/3/4-bit format with bf16 or int8 activations fits), int64 beyond."""
    return "int32" if int(np.max(np.abs(values), initial=0)) < 1 << 31 else "int64"


class StepWriter:
    """Writes one step's ops for the selected units; `ops` collects the manifest entries."""

    def __init__(
        self, store: VectorStore, placement: Placement, formats: dict[str, WeightFormat], units: list[int],
        floats: dict[str, np.ndarray], eps: float, lora_rows: dict[str, np.ndarray], kv_mode: str,
    ) -> None:  # fmt: skip
        self.store, self.placement, self.formats, self.units = store, placement, formats, units
        self.floats, self.eps, self.lora_rows, self.kv_mode = floats, eps, lora_rows, kv_mode
        self.ops: list[dict[str, Any]] = []
        self._kv_in: dict[int, dict[str, list[np.ndarray]]] = {}  # layer -> k/v rows [kvh, d] by position

    def write(self, step: Step) -> None:
        aligned: dict[tuple[int, str], dict[str, str]] = {}
        linear_y: dict[tuple[int, int, str], str] = {}
        k_rot: dict[int, np.ndarray] = {}
        v_out: dict[int, np.ndarray] = {}
        shares: dict[int, list[TapEvent]] = {}
        for ev in step.events:
            base = f"s{step.index:02d}/L{ev.layer:02d}"
            proj = ev.module.rsplit(".", 1)[-1]
            if ev.kind is OpKind.RMS_NORM:
                self._norm(step, ev, base, proj)
            elif ev.kind is OpKind.LINEAR:
                key = (ev.layer, _GROUP_OF[proj])
                if key not in aligned:
                    aligned[key] = self._align(step, ev, f"{base}/vector/{key[1]}")
                self._linear(step, ev, base, proj, aligned[key], linear_y)
                if proj == "v_proj":
                    v_out[ev.layer] = ev.arrays["y"]
            elif ev.kind is OpKind.LORA:
                self._lora(step, ev, base, proj, linear_y)
                if proj == "v_proj":
                    v_out[ev.layer] = ev.arrays["y"]
            elif ev.kind is OpKind.ROPE and ev.module.endswith("k"):
                k_rot[ev.layer] = ev.arrays["y"]
            elif ev.kind in (OpKind.SWIGLU, OpKind.RESIDUAL):
                self._elementwise(step, ev, base)
            elif ev.kind is OpKind.ATTENTION_SHARE:
                shares.setdefault(ev.layer, []).append(ev)
            elif ev.kind is OpKind.ATTENTION:
                kv_files = self._kv(step, ev.layer, k_rot[ev.layer], v_out[ev.layer])
                self._attention(step, ev, base, shares.pop(ev.layer, []), kv_files)

    def _op(self, kind: str, unit: int | str, step: Step, layer: int, module: str, **parts: Any) -> None:
        self.ops.append({
            "kind": kind, "unit": unit, "layer": layer, "step": step.index, "module": module,
            "positions": step.positions.tolist(), **parts,
        })  # fmt: skip

    def _arr(self, rel: str, values: np.ndarray, elem: str, role: str, section: str, unit, step: Step, layer: int,
             op: str) -> str:  # fmt: skip
        return self.store.array(rel, values, elem, role=role, section=section, unit=unit, op=op, layer=layer,
                                step=step.index)  # fmt: skip

    # -- vector units -------------------------------------------------------------------------------
    def _norm(self, step: Step, ev: TapEvent, base: str, name: str) -> None:
        d = f"{base}/vector/{name}"
        w = self.floats[f"{ev.module}.weight"]
        args = (VECTOR, step, ev.layer, "rms_norm")
        inputs = {
            "x": self._arr(f"{d}/x", ev.arrays["x"], "fp32", "input", "vector", *args),
            "weight": self._arr(f"{d}/weight", w.astype(np.float16), "fp16", "input", "vector", *args),
        }
        expected = {"y": self._arr(f"{d}/y", ev.arrays["y"], "fp32", "expected", "vector", *args)}
        self._op("rms_norm", VECTOR, step, ev.layer, ev.module, params={"eps": self.eps}, inputs=inputs,
                 expected=expected)  # fmt: skip

    def _elementwise(self, step: Step, ev: TapEvent, base: str) -> None:
        """SwiGLU (gate, up -> y) and the residual adds (x, delta -> y): whole rows, float32."""
        kind = "swiglu" if ev.kind is OpKind.SWIGLU else "residual"
        name = "swiglu" if kind == "swiglu" else f"residual_{ev.module}"
        d = f"{base}/vector/{name}"
        args = (VECTOR, step, ev.layer, kind)
        names = ("gate", "up") if kind == "swiglu" else ("x", "delta")
        inputs = {n: self._arr(f"{d}/{n}", ev.arrays[n], "fp32", "input", "vector", *args) for n in names}
        expected = {"y": self._arr(f"{d}/y", ev.arrays["y"], "fp32", "expected", "vector", *args)}
        module = ev.module if kind == "swiglu" else f"model.layers.{ev.layer}.{ev.module}_residual"
        self._op(kind, VECTOR, step, ev.layer, module, params={}, inputs=inputs, expected=expected)

    def _align(self, step: Step, ev: TapEvent, d: str) -> dict[str, str]:
        """The vector unit's conversion of a linear layer's input into the L-Units' integers."""
        a = ev.arrays
        mode = ev.extra.get("activation")
        fmt = self.formats[ev.module]
        in_f = a["x"].shape[1]
        args = (VECTOR, step, ev.layer, "align")
        xi = a["xi"]
        inputs = {"x": self._arr(f"{d}/x", a["x"], "fp32", "input", "activations", *args)}
        if mode == "bf16":
            g = fmt.group_len(in_f)
            groups = fmt.groups_per_row(in_f)
            padded = np.zeros((xi.shape[0], groups * g))
            padded[:, :in_f] = xi
            nonzero = np.any(padded.reshape(xi.shape[0], groups, g) != 0, axis=-1)
            exponent = np.where(nonzero, a["act_exponent"].T, 0)  # 0 for an all-zero group (it adds +0)
            expected = {
                "xi": self._arr(f"{d}/xi", xi, "int16", "expected", "activations", *args),
                "exponent": self._arr(f"{d}/exponent", exponent, "int16", "expected", "activations", *args),
            }
        else:
            expected = {
                "xi": self._arr(f"{d}/xi", xi, "int8", "expected", "activations", *args),
                "scale": self._arr(f"{d}/scale", a["act_scale"][0], "fp32", "expected", "activations", *args),
            }
        params = {"activation": mode, "group_len": fmt.group_len(in_f), "in_features": in_f}
        self._op("align", VECTOR, step, ev.layer, d.rsplit("/", 1)[1], params=params, inputs=inputs,
                 expected=expected)  # fmt: skip
        return {**inputs, **expected}

    # -- L-Units ------------------------------------------------------------------------------------
    def _linear(self, step: Step, ev: TapEvent, base: str, proj: str, aligned: dict[str, str],
                linear_y: dict) -> None:  # fmt: skip
        a = ev.arrays
        tensor = f"{ev.module}.weight"
        fmt = self.formats[ev.module]
        for u in self.units:
            tiles = unit_tiles(self.placement, u, tensor)
            if not tiles:
                continue
            rows = np.concatenate([np.arange(t.row_start, t.row_stop) for t in tiles])
            ints = np.moveaxis(a["group_integers"][..., rows], 0, -1)  # [tokens, rows, groups]
            terms = np.moveaxis(a["group_terms"][..., rows], 0, -1)
            d = f"{base}/u{u:03d}/{proj}"
            args = (u, step, ev.layer, "linear")
            expected = {
                "group_integers": self._arr(
                    f"{d}/I", ints.astype(np.int64), _int_element(ints), "expected", "linear", *args
                ),  # fmt: skip
                "group_terms": self._arr(f"{d}/t", terms, "fp64", "expected", "linear", *args),
                "y": self._arr(f"{d}/y", a["y"][:, rows], "fp32", "expected", "linear", *args),
            }
            linear_y[(u, ev.layer, proj)] = expected["y"]
            inputs = {k: aligned[k] for k in ("xi", "exponent", "scale") if k in aligned}
            memory = {"rom_tiles": [
                {"shape": list(self.placement.tensor_entry(tensor).shape), "format": format_to_json(fmt), **t.__dict__}
                for t in tiles
            ]}  # fmt: skip
            self._op("linear", u, step, ev.layer, ev.module, params={"activation": ev.extra.get("activation"),
                     "rows": rows.tolist()}, inputs=inputs, memory=memory, expected=expected)  # fmt: skip

    # -- H-Units ------------------------------------------------------------------------------------
    def _lora(self, step: Step, ev: TapEvent, base: str, proj: str, linear_y: dict) -> None:
        a = ev.arrays
        module = ev.module
        layer = ev.layer
        x_path = f"{base}/vector/{_GROUP_OF[proj]}/x"
        u_path = self._arr(f"{base}/vector/{proj}_lora_u", a["u"], "fp32", "input", "lora", VECTOR, step, layer,
                           "lora_b")  # fmt: skip
        a_units = self.lora_rows[module]
        for unit in self.units:
            d = f"{base}/u{unit:03d}/{proj}"
            ks = np.flatnonzero(a_units == unit)
            args = (unit, step, layer, "lora_a")
            if ks.size:
                expected = {"u": self._arr(f"{d}/lora_u", a["u"][:, ks], "fp32", "expected", "lora", *args)}
                memory = {
                    "a": f"sram/u{unit:03d}/lora/{module}/a",
                    "a_scale": f"sram/u{unit:03d}/lora/{module}/a_scale",
                }
                self._op("lora_a", unit, step, layer, module, params={"rank_rows": ks.tolist()},
                         inputs={"x": x_path}, memory=memory, expected=expected)  # fmt: skip
            tiles = unit_tiles(self.placement, unit, f"{module}.weight")
            if not tiles:
                continue
            rows = np.concatenate([np.arange(t.row_start, t.row_stop) for t in tiles])
            args = (unit, step, layer, "lora_b")
            expected = {
                "delta": self._arr(f"{d}/lora_delta", a["delta"][:, rows], "fp32", "expected", "lora", *args),
                "y": self._arr(f"{d}/lora_y", a["y"][:, rows], "fp32", "expected", "lora", *args),
            }
            memory = {"b": f"sram/u{unit:03d}/lora/{module}/b", "b_scale": f"sram/u{unit:03d}/lora/{module}/b_scale"}
            inputs = {"u": u_path, "base": linear_y[(unit, layer, proj)]}
            self._op("lora_b", unit, step, layer, module, params={"rows": rows.tolist()}, inputs=inputs,
                     memory=memory, expected=expected)  # fmt: skip

    def _kv(self, step: Step, layer: int, k: np.ndarray, v: np.ndarray) -> dict[int, dict[str, str]]:
        """Each selected H-Unit stores the K/V of the positions it owns (token round robin), and holds the
        cache as this step's attention reads it."""
        kv = step.kv[layer]
        length = int(step.positions[-1]) + 1
        kvh, d = kv["k"].shape[0], kv["k"].shape[2]
        k = k.reshape(len(step.positions), kvh, d)
        v = v.reshape(len(step.positions), kvh, d)
        seen = self._kv_in.setdefault(layer, {"k": [], "v": []})
        seen["k"].extend(k)
        seen["v"].extend(v)
        files: dict[int, dict[str, str]] = {}
        for unit in self.units:
            held = kv_positions(self.placement, unit, layer, length)
            if held.size == 0:
                continue
            sram = f"sram/u{unit:03d}/s{step.index:02d}/L{layer:02d}"
            args = (unit, step, layer, "kv")
            memory = files[unit] = {"positions": held.tolist()}
            for name in ("k", "v"):
                codes = np.moveaxis(kv[name][:, held], 0, 1)  # [held, kvh, d]
                scale = kv[f"{name}_scale"][:, held].T  # [held, kvh]
                if self.kv_mode == "int8":  # int8 elements and one float32 scale per vector
                    memory[name] = self._arr(f"{sram}/{name}", codes, "int8", "sram", "kv", *args)
                    memory[f"{name}_scale"] = self._arr(f"{sram}/{name}_scale", scale, "fp32", "sram", "kv", *args)
                else:  # the fp16 values h themselves: the engine's cache keeps the attention MACs' aligned
                    # form of h (docs/numerics.md), which rounds small elements, so h comes from the K/V rows
                    rows = np.stack([seen[name][p] for p in held])
                    values = np.clip(rows, -65504, 65504).astype(np.float16)
                    memory[name] = self._arr(f"{sram}/{name}", values, "fp16", "sram", "kv", *args)
            new = np.flatnonzero(np.isin(step.positions, held))
            if new.size == 0:
                continue
            memory = {k_: v_ for k_, v_ in memory.items() if k_ != "positions"}
            d_ = f"s{step.index:02d}/L{layer:02d}/u{unit:03d}/kv"
            inputs = {
                "k": self._arr(f"{d_}/k", k[new], "fp32", "input", "kv", *args),
                "v": self._arr(f"{d_}/v", v[new], "fp32", "input", "kv", *args),
            }
            rows = np.searchsorted(held, step.positions[new])
            self._op("kv_write", unit, step, layer, f"model.layers.{layer}.self_attn", params={
                "kv": self.kv_mode, "positions_written": step.positions[new].tolist(), "held_positions": held.tolist(),
                "rows_in_memory": rows.tolist()}, inputs=inputs, memory=memory)  # fmt: skip
        return files

    def _attention(self, step: Step, ev: TapEvent, base: str, shares: list[TapEvent], kv_files: dict) -> None:
        """Each selected H-Unit's share (scores, softmax partials, weighted values over the keys it holds),
        then the vector units' combine of every share in unit order."""
        layer, module = ev.layer, ev.module
        d_ = f"{base}/vector/attention"
        q = ev.arrays["q"]
        tokens, heads, hd = q.shape
        args = (VECTOR, step, layer, "attention")
        q_key = self._arr(f"{d_}/q", q, "fp32", "input", "attention", *args)
        if len({e.unit for e in shares}) != len(shares):
            raise VectorsError("vectors cover steps of up to 256 tokens (one attention pass); shorten the prompt")
        for e in shares:
            # O_u = A_u 2^(F_u - 21) of an exact integer A_u: a zero is +0 (a float BLAS product of zeros
            # may give -0, which carries no meaning here)
            a = {**e.arrays, "partial": e.arrays["partial"] + 0.0}
            keys = np.asarray(a["key_positions"])
            owner = self.placement.kv_unit_of(int(keys[0]), layer) if keys.size else -1
            if owner not in self.units or owner not in kv_files or kv_files[owner]["positions"] != keys.tolist():
                continue  # a share of an unselected unit (or one global share: no single H-Unit holds it)
            d = f"{base}/u{owner:03d}/attention"
            uargs = (owner, step, layer, "attention_share")
            expected = {
                name: self._arr(f"{d}/{name}", a[name] if name != "weights" else a[name].astype(np.int64), elem,
                                "expected", "attention", *uargs)
                for name, elem in (("scores", "fp32"), ("max", "fp32"), ("exp", "fp32"), ("sum", "fp64"),
                                   ("weights", "int32"), ("exponent", "int16"), ("partial", "fp64"))
            }  # fmt: skip
            memory = {k_: v_ for k_, v_ in kv_files[owner].items() if k_ != "positions"}
            self._op("attention_share", owner, step, layer, module, params={
                "share": e.unit, "shares": int(e.extra.get("shares", len(shares))), "kv": self.kv_mode,
                "key_positions": keys.tolist(), "query_positions": step.positions.tolist()},
                inputs={"q": q_key}, memory=memory, expected=expected)  # fmt: skip
        if not shares:
            return
        order = sorted(shares, key=lambda e: e.unit)
        stack = {n: np.stack([e.arrays[n] for e in order]) for n in ("max", "sum", "partial")}
        stack["partial"] = stack["partial"] + 0.0  # as above: the partial of an exact integer, +0 for zero
        rescale = np.stack([e.arrays["rescale"] for e in order]) if "rescale" in order[0].arrays else None
        inputs = {
            "max": self._arr(f"{d_}/share_max", stack["max"], "fp32", "input", "attention", *args),
            "sum": self._arr(f"{d_}/share_sum", stack["sum"], "fp64", "input", "attention", *args),
            "partial": self._arr(f"{d_}/share_partial", stack["partial"], "fp64", "input", "attention", *args),
        }
        expected = {"y": self._arr(f"{d_}/y", ev.arrays["y"].reshape(tokens, heads, hd), "fp32", "expected",
                                   "attention", *args)}  # fmt: skip
        if rescale is not None:
            expected["rescale"] = self._arr(f"{d_}/rescale", rescale, "fp32", "expected", "attention", *args)
        self._op("attention_combine", VECTOR, step, layer, module, params={"shares": len(order)}, inputs=inputs,
                 expected=expected)  # fmt: skip
