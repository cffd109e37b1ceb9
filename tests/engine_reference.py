"""A slow reference of docs/numerics.md, written from the document: Python ints for every integer product,
Python floats (binary64) and numpy.float32 scalars for every rounding, one scalar at a time, plain loops.
It shares no code with src/romachip/engine; the engine must equal it bit for bit."""

from __future__ import annotations

import math
from decimal import Context, Decimal

import numpy as np


def f32(v: float) -> float:
    """Round a binary64 value to binary32 (for one +-*/ of binary32 operands this is the single rounding)."""
    return float(np.float32(v))


def flog2(m: float) -> int:
    return math.frexp(m)[1] - 1


def round_bits(x: float, bits: int, min_exp: int | None = None) -> float:
    """Nearest value with `bits` significant bits (ties to even); quantum at least 2^min_exp."""
    if x == 0:
        return 0.0
    e = math.frexp(x)[1]
    q = e - bits if min_exp is None else max(e - bits, min_exp)
    return math.ldexp(round(math.ldexp(x, -q)), q)


def bf16(x: float) -> float:
    return round_bits(x, 8)


def fp16(x: float) -> float:
    return round_bits(min(max(x, -65504.0), 65504.0), 11, -24)


def horner(coeffs: list[float], x: float) -> float:
    p = coeffs[0]
    for c in coeffs[1:]:
        p = p * x
        p = p + c
    return p


def exp64(x: float) -> float:
    if x >= 709.78:
        return math.inf
    if x <= -745.2:
        return 0.0
    k = round(x * 1.4426950408889634)
    r = (x - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    p = horner([1 / math.factorial(n) for n in range(9, -1, -1)], r)
    return math.ldexp(math.ldexp(p, k // 2), k - k // 2)


def sincos64(theta: float) -> tuple[float, float]:
    k = round(theta * 0.6366197723675814)
    r = ((theta - k * 1.5707963267341256) - k * 6.077100506303966e-11) - k * 2.0222662487959506e-21
    r2 = r * r
    s = horner([(-1) ** n / math.factorial(2 * n + 1) for n in range(10, -1, -1)], r2) * r
    c = horner([(-1) ** n / math.factorial(2 * n) for n in range(10, -1, -1)], r2)
    return [(s, c), (c, -s), (-s, -c), (-c, s)][k % 4]


def seq(values: list[float]) -> float:
    acc = values[0]
    for v in values[1:]:
        acc = acc + v
    return acc


class Reference:
    def __init__(self, qmodel, activation: str, kv: str, kv_shares: tuple[int, ...] | int = 1) -> None:
        self.m, self.spec, self.act, self.kvmode = qmodel, qmodel.spec, activation, kv
        layers = qmodel.spec.num_layers
        self.kv_shares = (kv_shares,) * layers if isinstance(kv_shares, int) else tuple(kv_shares)
        self.tensors = {}
        for name, t in qmodel.weights.items():
            g = t.fmt.group_len(t.shape[1])
            codes, zeros = t.codes.astype(int).tolist(), t.zeros.astype(int).tolist()
            w = [[codes[o][i] - zeros[o][i // g] for i in range(t.shape[1])] for o in range(t.shape[0])]
            self.tensors[name] = (w, t.scales.astype(np.float32).astype(float).tolist(), g)
        self.inv_freq = self._inv_freq()

    # ---- L-Unit
    def act_ints(self, x: list[float], g: int) -> tuple[list[int], list[float]]:
        n = len(x)
        groups = math.ceil(n / g)
        if self.act == "int8":
            m = max(abs(v) for v in x)
            if m == 0:
                return [0] * n, [1.0] * groups
            a = f32(m / 127)
            return [max(-127, min(127, round(f32(v / a)))) for v in x], [a] * groups
        xi, scales = [], []
        for j in range(groups):
            b = [bf16(v) for v in x[j * g : (j + 1) * g]]
            big = max(abs(v) for v in b)
            if big == 0:
                xi += [0] * len(b)
                scales.append(1.0)
                continue
            e = flog2(big)
            xi += [round(math.ldexp(v, 13 - e)) for v in b]
            scales.append(math.ldexp(1.0, e - 13))
        return xi, scales

    def linear(self, name: str, x: list[float]) -> list[float]:
        w, s, g = self.tensors[name]
        xi, a = self.act_ints(x, g)
        out = []
        for o in range(len(w)):
            terms = []
            for j in range(len(a)):
                cols = range(j * g, min((j + 1) * g, len(x)))
                dot = sum(w[o][i] * xi[i] for i in cols)
                terms.append((float(dot) * a[j]) * s[o][j])
            out.append(f32(seq(terms)))
        return out

    # ---- vector unit
    def rms(self, x: list[float], weight: np.ndarray) -> list[float]:
        ss = seq([v * v for v in x])
        r = f32(1.0 / math.sqrt(ss / len(x) + self.spec.rms_norm_eps))
        return [f32(f32(v * r) * float(wv)) for v, wv in zip(x, weight, strict=True)]

    def _inv_freq(self) -> list[float]:
        d, spec = self.spec.head_dim, self.spec
        ctx = Context(prec=40)
        inv = []
        for i in range(d // 2):
            p = ctx.power(Decimal(repr(spec.rope_theta)), ctx.divide(Decimal(2 * i), Decimal(d)))
            inv.append(np.float32(1) / np.float32(float(p)))
        sc = spec.rope_scaling
        if sc is None:
            return [float(v) for v in inv]
        F = np.float32  # noqa: N806
        old = sc.original_max_position_embeddings
        out = []
        for v in inv:
            wavelen = F(2 * math.pi) / v
            scaled = v / F(sc.factor) if wavelen > F(old / sc.low_freq_factor) else v
            smooth = (F(old) / wavelen - F(sc.low_freq_factor)) / F(sc.high_freq_factor - sc.low_freq_factor)
            smoothed = (F(1) - smooth) * scaled / F(sc.factor) + smooth * scaled
            medium = not (wavelen < F(old / sc.high_freq_factor)) and not (wavelen > F(old / sc.low_freq_factor))
            out.append(float(smoothed if medium else scaled))
        return out

    def rope(self, x: list[float], pos: int) -> list[float]:
        half = len(x) // 2
        out1, out2 = [], []
        for i in range(half):
            sin, cos = sincos64(f32(pos * self.inv_freq[i]))
            c, s = f32(cos), f32(sin)
            x1, x2 = x[i], x[i + half]
            out1.append(f32(f32(x1 * c) - f32(x2 * s)))
            out2.append(f32(f32(x2 * c) + f32(x1 * s)))
        return out1 + out2

    # ---- H-Unit
    def kv_form(self, v: list[float], mode: str | None = None) -> tuple[list[int], float]:
        if (mode or self.kvmode) == "int8":
            m = max(abs(x) for x in v)
            if m == 0:
                return [0] * len(v), 1.0
            s = f32(m / 127)
            return [max(-127, min(127, round(f32(x / s)))) for x in v], s
        h = [fp16(x) for x in v]
        m = max(abs(x) for x in h)
        if m == 0:
            return [0] * len(v), 1.0
        e = flog2(m)
        return [round(math.ldexp(x, 14 - e)) for x in h], math.ldexp(1.0, e - 14)

    def attend(self, q: list[float], keys: list[tuple], values: list[tuple], shares: int) -> list[float]:
        """One head, one query over the visible keys 0..t (lists of (ints, scale)), the keys dealt over
        `shares` H-Units round robin; each unit's partials, then the vector units' combine in unit order."""
        qi, sq = self.kv_form(q, "fp16")  # the query is always in the fp16 form
        c = 1.0 / math.sqrt(len(q))
        scores = [f32(((float(sum(a * b for a, b in zip(qi, ki, strict=True))) * sq) * sk) * c) for ki, sk in keys]
        partials = []  # (m_u, Z_u, O_u) of every unit holding a visible key, in unit order
        for u in range(shares):
            held = [j for j in range(len(keys)) if j % shares == u]
            if not held:
                continue
            top = max(scores[j] for j in held)
            e = {j: f32(exp64(scores[j] - top)) for j in held}
            z = seq([e[j] for j in held])
            omega = {j: e[j] * values[j][1] for j in held}
            f = flog2(max(omega.values()))
            p = {j: round(math.ldexp(omega[j], 21 - f)) for j in held}
            o = [math.ldexp(float(sum(p[j] * values[j][0][dim] for j in held)), f - 21) for dim in range(len(q))]
            partials.append((top, z, o))
        m = max(top for top, _, _ in partials)
        alpha = [f32(exp64(top - m)) for top, _, _ in partials]
        z = seq([a * zu for a, (_, zu, _) in zip(alpha, partials, strict=True)])
        return [
            f32(seq([a * ou[dim] for a, (_, _, ou) in zip(alpha, partials, strict=True)]) / z) for dim in range(len(q))
        ]

    def lora(self, x: list[float], a: np.ndarray, b: np.ndarray, scale: float) -> list[float]:
        u = [f32(seq([float(a[k, i]) * x[i] for i in range(len(x))])) for k in range(a.shape[0])]
        lo = [f32(seq([float(b[o, k]) * u[k] for k in range(len(u))])) for o in range(b.shape[0])]
        return [f32(float(np.float32(scale)) * v) for v in lo]

    def proj(self, name: str, x: list[float], adapter) -> list[float]:  # noqa: ANN001
        y = self.linear(name + ".weight", x)
        if adapter and name in adapter:
            y = [f32(p + q) for p, q in zip(y, self.lora(x, *adapter[name]), strict=True)]
        return y

    # ---- the model
    def logits(self, tokens: list[int], adapter=None) -> np.ndarray:  # noqa: ANN001
        spec, d = self.spec, self.spec.head_dim
        rep = spec.num_heads // spec.num_kv_heads
        w, s, g = self.tensors["model.embed_tokens.weight"]
        xs = [[f32(s[t][i // g] * w[t][i]) for i in range(spec.hidden_size)] for t in tokens]
        for layer in range(spec.num_layers):
            pre = f"model.layers.{layer}."
            fl = self.m.floats
            ks, vs, outs = [], [], []
            for pos, x in enumerate(xs):
                h = self.rms(x, fl[pre + "input_layernorm.weight"])
                q = self.proj(pre + "self_attn.q_proj", h, adapter)
                k = self.proj(pre + "self_attn.k_proj", h, adapter)
                v = self.proj(pre + "self_attn.v_proj", h, adapter)
                ks.append([self.kv_form(self.rope(k[j * d : (j + 1) * d], pos)) for j in range(spec.num_kv_heads)])
                vs.append([self.kv_form(v[j * d : (j + 1) * d]) for j in range(spec.num_kv_heads)])
                att = []
                for head in range(spec.num_heads):
                    qh = self.rope(q[head * d : (head + 1) * d], pos)
                    kvh = head // rep
                    att += self.attend(qh, [kk[kvh] for kk in ks], [vv[kvh] for vv in vs], self.kv_shares[layer])
                outs.append(att)
            new = []
            for x, att in zip(xs, outs, strict=True):
                o = self.proj(pre + "self_attn.o_proj", att, adapter)
                x = [f32(a + b) for a, b in zip(x, o, strict=True)]
                h = self.rms(x, fl[pre + "post_attention_layernorm.weight"])
                gate = self.proj(pre + "mlp.gate_proj", h, adapter)
                up = self.proj(pre + "mlp.up_proj", h, adapter)
                m = [f32(f32(gv / (1.0 + exp64(-gv))) * uv) for gv, uv in zip(gate, up, strict=True)]
                down = self.proj(pre + "mlp.down_proj", m, adapter)
                new.append([f32(a + b) for a, b in zip(x, down, strict=True)])
            xs = new
        head = "model.embed_tokens.weight" if spec.tie_word_embeddings else "lm_head.weight"
        rows = [self.linear(head, self.rms(x, self.m.floats["model.norm.weight"])) for x in xs]
        return np.array(rows, dtype=np.float32)
