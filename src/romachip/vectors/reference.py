"""The checker's own implementation of docs/numerics.md: slow, plain and independent of the engine.

Nothing here imports romachip.engine or romachip.rom: ROM words are B-ROM decoded and unpacked bit by
bit, integer products are int64 sums (exact), every floating-point reduction is an explicit loop in
ascending order, and each IEEE operation is one NumPy elementwise call (one rounding) or a Python float
operation (binary64). The checker compares these results with the vector files word for word.
"""

from __future__ import annotations

import math

import numpy as np

BF16_WINDOW_BITS = 13  # xi = rne(b * 2^(13 - E)): the L-Unit alignment window (docs/numerics.md)


# -- number formats ----------------------------------------------------------------------------------
def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 (ties to even), as float32: add half an ulp of bf16, drop 16 bits."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def fp8_e4m3_value(code: int) -> float:
    """E4M3 (OCP, no infinities): sign, 4 exponent bits (bias 7), 3 mantissa bits; S.1111.111 is NaN."""
    sign = -1.0 if code & 0x80 else 1.0
    e, m = (code >> 3) & 0xF, code & 7
    if e == 15 and m == 7:
        return math.nan
    if e == 0:
        return sign * (m / 8) * 2.0**-6
    return sign * (1 + m / 8) * 2.0 ** (e - 7)


def fp8_decode(codes: np.ndarray) -> np.ndarray:
    table = np.array([fp8_e4m3_value(c) for c in range(256)], dtype=np.float32)
    return table[np.asarray(codes, dtype=np.int64)]


def flog2(m: float) -> int:
    """floor(log2 m) of a positive float, exactly (from its binary exponent)."""
    return math.frexp(m)[1] - 1


# -- ROM ----------------------------------------------------------------------------------------------
def brom_decode_group(stored: list[int], word_bits: int) -> list[int]:
    """Four stored B-ROM words -> the four plain words they encode (docs/rom-format.md, "B-ROM encoding"):
    the group's bytes hold one 4-bit pattern per column c (nibble c), and bit i of that pattern is
    column c of plain word i."""
    g = 0
    for i, w in enumerate(stored):
        g |= w << (word_bits * i)
    plain = [0, 0, 0, 0]
    for c in range(word_bits):
        p = (g >> (4 * c)) & 15
        for i in range(4):
            plain[i] |= ((p >> i) & 1) << c
    return plain


class UnitRom:
    """One L-Unit's ROM from its macro files: stored words by logical address, plain words on demand."""

    def __init__(self, words: dict[int, int], word_bits: int, brom: bool) -> None:
        self.words, self.word_bits, self.brom = words, word_bits, brom
        self._plain: dict[int, int] = {}

    def plain_word(self, w: int) -> int:
        if w not in self._plain:
            if self.brom:
                g = w // 4
                for i, v in enumerate(brom_decode_group([self.words.get(4 * g + k, 0) for k in range(4)],
                                                        self.word_bits)):  # fmt: skip
                    self._plain[4 * g + i] = v
            else:
                self._plain[w] = self.words.get(w, 0)
        return self._plain[w]

    def bits(self, start_bit: int, nbits: int) -> np.ndarray:
        """Stream bits [start_bit, start_bit + nbits) as a uint8 array (bit i of the stream is bit
        i % word_bits of plain word i // word_bits)."""
        wb = self.word_bits
        first, last = start_bit // wb, (start_bit + nbits - 1) // wb
        out = np.zeros((last - first + 1) * wb, dtype=np.uint8)
        for k, w in enumerate(range(first, last + 1)):
            v = self.plain_word(w)
            out[k * wb : (k + 1) * wb] = [(v >> b) & 1 for b in range(wb)]
        off = start_bit - first * wb
        return out[off : off + nbits]

    def values(self, start_bit: int, count: int, bits: int) -> np.ndarray:
        """`count` unsigned values of `bits` bits, LSB first, from stream bit `start_bit`."""
        b = self.bits(start_bit, count * bits).reshape(count, bits).astype(np.int64)
        return (b << np.arange(bits, dtype=np.int64)).sum(axis=1)


def read_tile(rom: UnitRom, tile: dict) -> dict[str, np.ndarray]:
    """w = q - z (int64 [rows, cols]) and the scales (float64 [rows, groups]) of one ROM tile."""
    fmt, (_, cols) = tile["format"], tile["shape"]
    rows = tile["row_stop"] - tile["row_start"]
    g = cols if fmt["group_size"] is None else fmt["group_size"]
    groups = -(-cols // g)
    wb = rom.word_bits

    def ceil_w(n: int) -> int:
        return -(-n // wb) * wb

    codes = rom.values(tile["rom_offset_bits"], rows * cols, fmt["bits"]).reshape(rows, cols)
    s_off = tile["rom_offset_bits"] + ceil_w(tile["code_bits"])
    dtype = fmt["scale_dtype"]
    raw = rom.values(s_off, rows * groups, 32 if dtype == "fp32" else 16).astype(np.uint32)
    if dtype == "fp16":
        scales = raw.astype(np.uint16).view(np.float16).astype(np.float64)
    elif dtype == "bf16":
        scales = (raw << np.uint32(16)).view(np.float32).astype(np.float64)
    else:
        scales = raw.view(np.float32).astype(np.float64)
    if fmt["symmetric"]:
        zeros = np.full(rows * groups, 1 << (fmt["bits"] - 1), dtype=np.int64)
    else:
        zeros = rom.values(s_off + ceil_w(tile["scale_bits"]), rows * groups, fmt["zero_bits"])
    z = np.repeat(zeros.reshape(rows, groups), g, axis=1)[:, :cols]
    return {"w": codes - z, "scales": scales.reshape(rows, groups), "group_len": g}


# -- vector units ------------------------------------------------------------------------------------
def align_bf16(x: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """(xi int64 [rows, in], E int64 [rows, groups]; E = 0 for an all-zero group)."""
    b = bf16_round(x).astype(np.float64)
    rows, n = b.shape
    groups = -(-n // g)
    xi = np.zeros((rows, n), dtype=np.int64)
    e = np.zeros((rows, groups), dtype=np.int64)
    for r in range(rows):
        for j in range(groups):
            blk = b[r, j * g : (j + 1) * g]
            m = float(np.max(np.abs(blk)))
            if m == 0.0:
                continue
            e[r, j] = flog2(m)
            xi[r, j * g : (j + 1) * g] = np.rint(blk * 2.0 ** (BF16_WINDOW_BITS - e[r, j])).astype(np.int64)
    return xi, e


def align_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric INT8: (xi int64 [rows, in], a float32 [rows]), a = 1 for a zero row."""
    x = np.asarray(x, dtype=np.float32)
    m = np.max(np.abs(x), axis=1)
    a = np.where(m > 0, m / np.float32(127), np.float32(1)).astype(np.float32)
    xi = np.clip(np.rint(x / a[:, None]), -127, 127).astype(np.int64)
    return xi, a


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    x64 = x.astype(np.float64)
    ss = x64[:, 0] * x64[:, 0]
    for i in range(1, x.shape[1]):
        ss = ss + x64[:, i] * x64[:, i]
    r = 1.0 / np.sqrt(ss / x.shape[1] + eps)
    return (x * r.astype(np.float32)[:, None]) * np.asarray(w, dtype=np.float32)


# -- L-Unit -------------------------------------------------------------------------------------------
def linear(xi: np.ndarray, a: np.ndarray, w: np.ndarray, s: np.ndarray, g: int, zero_adds_plus0: bool):
    """I [tokens, rows, groups] int64, t float64 (same shape), y float32 [tokens, rows].

    xi int64 [tokens, in]; a float64 [tokens, groups] (a_j); w int64 [rows, in]; s float64 [rows, groups].
    """
    tokens = xi.shape[0]
    groups = s.shape[1]
    ints = np.zeros((tokens, w.shape[0], groups), dtype=np.int64)
    for j in range(groups):
        ints[:, :, j] = xi[:, j * g : (j + 1) * g] @ w[:, j * g : (j + 1) * g].T  # int64: exact
    terms = (ints.astype(np.float64) * a[:, None, :]) * s[None, :, :]
    if zero_adds_plus0:  # bf16 mode: a group whose xi are all 0 adds +0, whatever its scale
        for j in range(groups):
            empty = ~np.any(xi[:, j * g : (j + 1) * g] != 0, axis=1)
            terms[empty, :, j] = 0.0
    acc = terms[:, :, 0].copy()
    for j in range(1, groups):
        acc = acc + terms[:, :, j]
    return ints, terms, acc.astype(np.float32)


# -- H-Unit: LoRA and KV ------------------------------------------------------------------------------
def lora_a(x: np.ndarray, a_codes: np.ndarray, a_word: float, precision: str) -> np.ndarray:
    """u_k = f32(sum_i f64(A_ki x_i)) in ascending i, A = f32(decode(code) * a_word)."""
    a = (decoded(a_codes, precision) * np.float32(a_word)).astype(np.float64)
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    acc = x64[:, None, 0] * a[None, :, 0]
    for i in range(1, a.shape[1]):
        acc = acc + x64[:, None, i] * a[None, :, i]
    return acc.astype(np.float32)


def lora_b(u: np.ndarray, b_codes: np.ndarray, alpha: float, base: np.ndarray, precision: str):
    """(delta, y): l_o = f32(sum_k f64(B_ok u_k)), delta = f32(f32(alpha) l), y = f32(base + delta)."""
    b = decoded(b_codes, precision).astype(np.float64)
    u64 = np.asarray(u, dtype=np.float32).astype(np.float64)
    acc = u64[:, None, 0] * b[None, :, 0]
    for k in range(1, b.shape[1]):
        acc = acc + u64[:, None, k] * b[None, :, k]
    delta = np.float32(alpha) * acc.astype(np.float32)
    return delta, (np.asarray(base, dtype=np.float32) + delta).astype(np.float32)


def decoded(codes: np.ndarray, precision: str) -> np.ndarray:
    """Stored LoRA elements -> float32 values: FP8 E4M3 codes, or FP16/BF16 values already decoded."""
    return fp8_decode(codes) if precision == "fp8_e4m3" else np.asarray(codes, dtype=np.float32)


def kv_encode(v: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """[..., d] float32 -> int8 codes and float32 scale per vector (int8), or the fp16 values (fp16)."""
    v = np.asarray(v, dtype=np.float32)
    if mode == "fp16":
        return np.clip(v, -65504, 65504).astype(np.float16).astype(np.float32), None
    m = np.max(np.abs(v), axis=-1)
    sv = np.where(m > 0, m / np.float32(127), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(v / sv[..., None]), -127, 127), sv


# -- attention (docs/numerics.md, "Attention") -----------------------------------------------------------
LN2_HI = 0.6931471803691238
LN2_LO = 1.9082149292705877e-10
INV_LN2 = 1.4426950408889634
EXP_COEFFS = [1 / math.factorial(n) for n in range(9, -1, -1)]  # f64(1/n!), highest first
P_BITS = 21
KV_WINDOW_BITS = 14


def exp64(x: np.ndarray) -> np.ndarray:
    """The contract's binary64 exp: Cody-Waite reduction, degree-9 Horner, two exact power-of-two scalings."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    big, mid = x >= 709.78, (x > -745.2) & (x < 709.78)
    out[big] = np.inf
    xm = x[mid]
    k = np.rint(xm * INV_LN2)
    r = (xm - k * LN2_HI) - k * LN2_LO
    p = np.full_like(r, EXP_COEFFS[0])
    for c in EXP_COEFFS[1:]:
        p = p * r
        p = p + c
    half = np.floor(k / 2).astype(np.int64)
    out[mid] = np.ldexp(np.ldexp(p, half), k.astype(np.int64) - half)
    return out


def fp16_align(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp16 vectors (last axis) in the MACs' block form: vi = rne(h 2^(14-E)), sv = 2^(E-14); 0 and 1 if zero."""
    h = np.asarray(h, dtype=np.float64)
    m = np.max(np.abs(h), axis=-1)
    e = np.where(m > 0, np.frexp(np.where(m > 0, m, 1.0))[1] - 1, 0)
    vi = np.where(m[..., None] > 0, np.rint(h * np.ldexp(1.0, KV_WINDOW_BITS - e)[..., None]), 0.0)
    return vi.astype(np.int64), np.where(m > 0, np.ldexp(1.0, e - KV_WINDOW_BITS), 1.0)


def fp16_round(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32), -65504, 65504).astype(np.float16).astype(np.float32)


def attention_share(q, ki, ks, vi, vs, keys, queries) -> dict[str, np.ndarray]:
    """One H-Unit's share: q float32 [T, H, d] (after RoPE); its keys' integers ki, vi [P, kvh, d] and scales
    [P, kvh] (float64) at positions `keys` (ascending); queries at `queries` [T]. Key j is visible to query
    t iff j <= t. Rows where the unit holds no visible key: max -inf, exp/sum/weights/partial 0, exponent 0;
    hidden keys score -inf."""
    tokens, heads, d = q.shape
    rep = heads // ki.shape[1]
    qi, sq = fp16_align(fp16_round(q))  # [T, H, d], [T, H]
    c = 1.0 / math.sqrt(d)
    kvh_of = np.arange(heads) // rep
    dots = np.einsum("thd,phd->thp", qi, ki[:, kvh_of, :])  # int64: exact
    s = (((dots.astype(np.float64) * sq[..., None]) * ks[:, kvh_of].T[None]) * c).astype(np.float32)
    visible = np.asarray(keys)[None, :] <= np.asarray(queries)[:, None]  # [T, P]
    s = np.where(visible[:, None, :], s, np.float32(-np.inf))
    m = np.max(s, axis=-1) if s.shape[-1] else np.full((tokens, heads), -np.inf, np.float32)
    empty = np.isneginf(m)
    e = exp64(s.astype(np.float64) - np.where(empty, 0.0, m)[..., None]).astype(np.float32)
    z = np.zeros((tokens, heads))
    for j in range(e.shape[-1]):  # ascending keys, binary64
        z = z + e[..., j].astype(np.float64)
    w = e.astype(np.float64) * vs[:, kvh_of].T[None]
    wmax = np.max(w, axis=-1)
    f = np.where(empty | (wmax <= 0), 0, np.frexp(np.where(wmax > 0, wmax, 1.0))[1] - 1)
    p = np.rint(w * np.ldexp(1.0, P_BITS - f)[..., None])
    acc = np.einsum("thp,phd->thd", p.astype(np.int64), vi[:, kvh_of, :])  # int64: exact
    partial = acc.astype(np.float64) * np.ldexp(1.0, f - P_BITS)[..., None]
    return {"scores": s, "max": m.astype(np.float32), "exp": e, "sum": z, "weights": p.astype(np.int64),
            "exponent": f.astype(np.int64), "partial": partial}  # fmt: skip


def attention_combine(m: np.ndarray, z: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vector units' fold over the shares in unit order: m [n, T, H] float32, z [n, T, H], o [n, T, H, d]
    (binary64) -> (alpha float32 [n, T, H], 0 for an empty share; y float32 [T, H, d])."""
    top = np.max(m, axis=0)
    alpha = np.zeros(m.shape, dtype=np.float32)
    zs = np.zeros(z.shape[1:])
    os_ = np.zeros(o.shape[1:])
    first = np.ones(z.shape[1:], dtype=bool)
    for u in range(m.shape[0]):
        live = ~np.isneginf(m[u])
        alpha[u] = np.where(live, exp64(np.where(live, m[u].astype(np.float64) - top, 0.0)), 0.0).astype(np.float32)
        a = alpha[u].astype(np.float64)
        zs = np.where(live, np.where(first, a * z[u], zs + a * z[u]), zs)
        os_ = np.where(live[..., None], np.where(first[..., None], a[..., None] * o[u], os_ + a[..., None] * o[u]), os_)
        first &= ~live
    return alpha, (os_ / zs[..., None]).astype(np.float32)


def swiglu(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    """h = f32(silu(g) u), silu(g) = f32(f64(g / f64(1 + exp64(-g))))."""
    g64 = np.asarray(g, dtype=np.float32).astype(np.float64)
    silu = (g64 / (1.0 + exp64(-g64))).astype(np.float32)
    return silu * np.asarray(u, dtype=np.float32)
