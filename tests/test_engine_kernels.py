"""The native L-Unit kernel against the NumPy path, bit for bit: every width, ragged and odd groups, every
vector path of the C kernel, any thread count; the packed layout; the fallback when the kernel is missing."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_models import make_tiny

from romachip.engine import kernels
from romachip.engine.generate import Engine
from romachip.engine.kernels import NATIVE_PATHS, PreparedLinear, kernel_threads, linear, native_linear
from romachip.engine.packed import pack_codes, row_bytes, tile_codes, unpack_codes
from romachip.errors import GenerationError
from romachip.quant.formats import WeightFormat
from romachip.quant.tensor import QuantizedTensor

native = pytest.mark.skipif(not kernels.native_available(), reason="the native kernel is not built here")

# (out, in, group size): ragged last groups, groups that are not whole 32-column chunks, per-channel rows
# narrower and wider than the vector paths' 512 columns, a 1-output layer (a lone, padded tile)
SHAPES = [(40, 200, 128), (33, 96, 32), (17, 100, None), (9, 130, 48), (8, 1100, None), (1, 64, 64), (12, 704, 640)]


def _tensor(rng: np.random.Generator, bits: int, out: int, inp: int, group: int | None, sym: bool) -> QuantizedTensor:
    fmt = WeightFormat(bits=bits, group_size=group, symmetric=sym)
    groups = fmt.groups_per_row(inp)
    codes = rng.integers(0, 2**bits, (out, inp), dtype=np.uint8)
    codes[0] = 2**bits - 1  # the extreme code, against the extreme activations below
    if sym:
        zeros = np.full((out, groups), fmt.symmetric_zero, np.uint8)
    else:
        zeros = rng.integers(0, 2**bits, (out, groups), dtype=np.uint8)
        zeros[0] = 0
    scales = (rng.random((out, groups)) * 0.1 + 1e-3).astype(np.float16)
    return QuantizedTensor(codes, scales, zeros, fmt)


def _activations(rng: np.random.Generator, rows: int, inp: int) -> np.ndarray:
    x = rng.standard_normal((rows, inp)) * rng.choice([1e-4, 1.0, 40.0], (rows, inp))
    x = x.astype(np.float32)
    x[0, : min(inp, 40)] = 0  # an all-zero group
    if rows > 1:
        x[1] = np.where(np.arange(inp) % 2, 3.0, -3.0)  # every value at its group's maximum: |xi| = 2^13
    return x


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_round_trips_at_bits_per_weight(bits: int) -> None:
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, (11, 77), dtype=np.uint8)
    packed = pack_codes(codes, bits)
    assert packed.shape == (11, row_bytes(77, bits)) == (11, 96 * bits // 8)  # 77 columns padded to 96
    np.testing.assert_array_equal(unpack_codes(packed, bits, 77), codes)
    tiled = tile_codes(packed, bits)
    assert tiled.shape == (2, 8 * packed.shape[1])  # 11 outputs -> 2 tiles of 8
    np.testing.assert_array_equal(tiled.reshape(2, 3, 8, 4 * bits)[0, 1, 2], packed[2, 4 * bits : 8 * bits])


@native
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_native_kernel_equals_the_numpy_path_bit_for_bit(bits: int) -> None:
    rng = np.random.default_rng(100 + bits)
    for (out, inp, group), sym in itertools.product(SHAPES, (False, True)):
        qt = _tensor(rng, bits, out, inp, group, sym)
        slow = PreparedLinear.from_tensors([qt], kernel="numpy")
        fast = PreparedLinear.from_tensors([qt], kernel="native")
        assert fast.packed.nbytes == -(-out // 8) * 8 * row_bytes(inp, bits)  # bits/8 bytes a weight
        for rows, mode in itertools.product((1, 3, 9, 16, 37), ("int8", "bf16")):
            x = _activations(rng, rows, inp)
            expected = _bits(linear(slow, x, mode))
            for path, threads in itertools.product(NATIVE_PATHS, (1, 3)):
                with kernel_threads(threads):
                    got = native_linear(fast, x, mode, widest=path)
                np.testing.assert_array_equal(_bits(got), expected, err_msg=f"{bits} {out}x{inp} g{group} {path}")


@native
def test_engine_logits_do_not_depend_on_kernel_or_threads() -> None:
    tiny = make_tiny("gqa_tied_g32_4bit", layers=2, vocab=41)
    ids = np.random.default_rng(5).integers(0, 41, 11).tolist()
    expected = _bits(Engine(tiny.quantized, kernel="numpy").logits(ids))
    for threads in (1, 2, 3):
        engine = Engine(tiny.quantized, kernel="native", threads=threads)
        np.testing.assert_array_equal(_bits(engine.logits(ids)), expected)
        assert (
            engine.generate(ids, max_tokens=4).token_ids
            == Engine(tiny.quantized, kernel="numpy").generate(ids, max_tokens=4).token_ids
        )


def test_fallback_engages_without_the_native_kernel(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "_lunit", None)
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    assert kernels.default_kernel() == "numpy"
    tiny = make_tiny("gqa_tied_g32_4bit", layers=1, vocab=41)
    assert Engine(tiny.quantized).options()["kernel"] == "numpy"
    with pytest.raises(GenerationError, match="not built here"):
        Engine(tiny.quantized, kernel="native")


def test_kernel_choice_and_threads_are_checked(monkeypatch) -> None:
    tiny = make_tiny("gqa_tied_g32_4bit", layers=1, vocab=41)
    monkeypatch.setenv(kernels.KERNEL_ENV, "numpy")
    assert Engine(tiny.quantized).net.kernel == "numpy"
    monkeypatch.setenv(kernels.KERNEL_ENV, "cuda")
    with pytest.raises(GenerationError, match="unknown L-Unit kernel 'cuda'"):
        Engine(tiny.quantized)
    monkeypatch.delenv(kernels.KERNEL_ENV)
    with pytest.raises(GenerationError, match="threads must be >= 1"):
        Engine(tiny.quantized, threads=0)
    prep = PreparedLinear.from_tensors([tiny.quantized.weights["model.layers.0.mlp.down_proj.weight"]])
    with pytest.raises(GenerationError, match="unknown activation precision"):
        linear(prep, np.zeros((1, prep.in_features), np.float32), "fp8")


@native
def test_native_vector_steps_equal_numpy_bit_for_bit() -> None:
    from romachip.engine.detmath import EXP_HI, EXP_LO, exp64, exp64_numpy
    from romachip.engine.model import silu_mul, silu_mul_numpy

    rng = np.random.default_rng(9)
    edges = [0.0, -0.0, np.inf, -np.inf, EXP_HI, EXP_LO, np.nextafter(EXP_HI, 0), np.nextafter(EXP_LO, 0), -708.4,
             -740.0, 1e-300, -1e-300, 0.5 * np.log(2), -0.5 * np.log(2), 1.0, -1.0]  # fmt: skip
    x = np.concatenate([edges, rng.uniform(-750, 712, 20000), rng.standard_normal(20000) * 3])
    np.testing.assert_array_equal(exp64(x).view(np.uint64), exp64_numpy(x).view(np.uint64))
    assert exp64(np.float64(1.5)).shape == ()
    assert np.isnan(exp64(np.array([np.nan]))).all()
    g = (rng.standard_normal((7, 300)) * rng.choice([0.01, 1, 30, 800], (7, 300))).astype(np.float32)
    u = rng.standard_normal((7, 300)).astype(np.float32)
    np.testing.assert_array_equal(_bits(silu_mul(g, u)), _bits(silu_mul_numpy(g, u)))
    # the fused gate/up output read in place (column slices), rows over 1 and 3 threads
    y = (rng.standard_normal((300, 2 * 264)) * 5).astype(np.float32)
    for threads in (1, 3):
        with kernel_threads(threads):
            got = silu_mul(y[:, :264], y[:, 264:])
        np.testing.assert_array_equal(_bits(got), _bits(silu_mul_numpy(y[:, :264], y[:, 264:])))


@native
@pytest.mark.parametrize("kv", ["int8", "fp16"])
def test_native_attention_equals_numpy_bit_for_bit(kv: str) -> None:
    from romachip.engine.attention import attention
    from romachip.engine.kv import KVCache

    rng = np.random.default_rng(21)
    # (kv heads, query heads, d, shares, start, tokens): a prefill, a later prefill chunk, decode steps; one
    # key per unit (d 64 and 80: value rows in registers, four query rows together), several, a global softmax,
    # more units than keys
    cases = [(2, 4, 16, 256, 0, 37), (1, 3, 24, 5, 6, 9), (3, 3, 8, 1, 0, 12), (2, 2, 16, 3, 30, 1),
             (1, 2, 40, 256, 40, 1), (2, 6, 16, 7, 3, 20), (2, 6, 64, 256, 0, 23), (1, 3, 80, 256, 5, 6)]  # fmt: skip
    for kvh, heads, d, shares, start, tokens in cases:
        cache = KVCache(2, kvh, d, start + tokens + 3, kv)
        scale = rng.choice([1e-3, 1.0, 30.0], (start + tokens, kvh, 1)).astype(np.float32)
        k = rng.standard_normal((start + tokens, kvh, d)).astype(np.float32) * scale
        v = rng.standard_normal((start + tokens, kvh, d)).astype(np.float32) * scale
        v[min(2, start + tokens - 1)] = 0  # a zero value vector (scale 1)
        cache.write(1, 0, k, v)
        q = (rng.standard_normal((tokens, heads, d)) * rng.choice([0.1, 3.0, 20.0], (tokens, heads, 1))).astype(
            np.float32
        )
        expected = _bits(attention(cache, 1, q, start, shares=shares, native=False))
        for threads, widest in itertools.product((1, 3), range(len(NATIVE_PATHS))):
            with kernel_threads(threads):
                got = attention(cache, 1, q, start, shares=shares, native=True, widest=widest)
            np.testing.assert_array_equal(_bits(got), expected, err_msg=f"{kv} {kvh}x{heads} d{d} n{shares} {start}")


@native
@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_native_vector_encoding_equals_numpy_bit_for_bit(mode: str) -> None:
    from romachip.engine.kv import encode_vectors

    rng = np.random.default_rng(23)
    x = (rng.standard_normal((40, 24)) * rng.choice([1e-9, 3e-6, 1.0, 7e4], (40, 1))).astype(np.float32)
    x[0] = 0  # a zero vector: scale 1
    x[1, :4] = [1 + 2**-11, 1 + 3 * 2**-11, -(2**-25), 2**-24 * 1.5]  # fp16 ties to even, subnormal ties
    x[2, :3] = [65520.0, -1e6, 65504.0]  # past fp16's range: clamped to 65504
    ints, scale = encode_vectors(x, mode)
    for dtype in (np.float64, np.int8 if mode == "int8" else np.int32):
        got, got_scale = encode_vectors(x, mode, native=True, dtype=dtype)
        np.testing.assert_array_equal(got.astype(np.float64), ints)
        np.testing.assert_array_equal(got_scale.view(np.uint64), scale.view(np.uint64))
    for widest in range(len(NATIVE_PATHS)):  # the portable build of the same steps too
        got, got_scale = np.empty(x.shape), np.empty(x.shape[0])
        kernels._lunit.encode(x, got, got_scale, x.shape[0], x.shape[1], ("int8", "fp16").index(mode), widest)
        np.testing.assert_array_equal(got.view(np.uint64), ints.view(np.uint64))  # the sign of zero too
        np.testing.assert_array_equal(got_scale.view(np.uint64), scale.view(np.uint64))
    big = (rng.standard_normal((3001, 24)) * rng.choice([1e-6, 1.0, 7e4], (3001, 1))).astype(np.float32)
    ints, scale = encode_vectors(big, mode)
    for threads in (1, 3):  # chunks of rows over threads (past the size where threads engage)
        with kernel_threads(threads):
            got, got_scale = encode_vectors(big, mode, native=True)
        np.testing.assert_array_equal(got.view(np.uint64), ints.view(np.uint64))
        np.testing.assert_array_equal(got_scale.view(np.uint64), scale.view(np.uint64))


@native
def test_native_rms_norm_equals_numpy_bit_for_bit() -> None:
    from romachip.engine.model import rms_norm

    rng = np.random.default_rng(22)
    for rows, n in ((1, 64), (13, 576), (9, 7), (300, 576)):  # the last past the size where threads engage
        x = (rng.standard_normal((rows, n)) * rng.choice([1e-20, 1.0, 1e15], (rows, 1))).astype(np.float32)
        w = rng.standard_normal(n).astype(np.float32)
        expected = _bits(rms_norm(x, w, 1e-5, native=False))
        for threads in (1, 3):
            with kernel_threads(threads):
                np.testing.assert_array_equal(_bits(rms_norm(x, w, 1e-5, native=True)), expected)


@native
def test_native_rope_equals_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(24)
    for tokens, heads, d in ((1, 3, 64), (37, 9, 64), (5, 2, 6), (120, 9, 64)):  # odd lanes; threads engage
        x = (rng.standard_normal((tokens, heads, d)) * rng.choice([1e-30, 1.0, 1e30], (tokens, heads, 1))).astype(
            np.float32
        )
        angles = rng.uniform(-40, 40, (tokens, d // 2))
        c, s = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        cb, sb = c[:, None, :], s[:, None, :]
        expected = np.concatenate([x1 * cb - x2 * sb, x2 * cb + x1 * sb], axis=-1)  # apply_rope's NumPy steps
        wide = np.zeros((tokens, heads * d + 40), dtype=np.float32)  # x as rows of a wider array, read in place
        wide[:, 8 : 8 + heads * d] = x.reshape(tokens, -1)
        for rows, threads in itertools.product((x.reshape(tokens, -1), wide[:, 8 : 8 + heads * d]), (1, 3)):
            got = np.empty_like(x)
            kernels._lunit.rope(rows, c, s, got, tokens, heads, d, threads)
            np.testing.assert_array_equal(_bits(got), _bits(expected))


def test_an_engine_without_the_unpacked_weights_gives_the_same_bits() -> None:
    tiny = make_tiny("untied_llama3_g48_2bit_sym", layers=1, vocab=41)
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    light = Engine(tiny.quantized, keep_weights=False)
    assert light.model.weights == {} and tiny.quantized.weights  # the caller's model is untouched
    np.testing.assert_array_equal(_bits(light.logits(ids)), _bits(Engine(tiny.quantized).logits(ids)))


def test_the_install_goes_on_without_a_c_compiler(tmp_path) -> None:
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "setup.py", tmp_path)
    for folder in ("src/romachip", "src/romachip/engine", "src/romachip/perf"):  # every native module's sources
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for source in (root / folder).glob("_*.[ch]"):
            shutil.copy(source, tmp_path / folder)
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout + done.stderr and not list(tmp_path.rglob("*.so"))


def test_a_native_module_built_from_other_sources_is_not_called():
    # a checkout that pulled C changes without rebuilding keeps an old module: it must not be called
    # (it may lack a function or take other arguments); the NumPy path runs instead, with a warning
    probe = (
        "import sys, types, warnings\n"
        "sys.modules['romachip.engine._lunit'] = types.ModuleType('_lunit')  # no ABI: an old build\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from romachip.engine import kernels\n"
        "print(kernels.native_available(), kernels.default_kernel())\n"
        "print(any('rebuild' in str(w.message) for w in caught))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ROMACHIP_KERNEL"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "numpy", "True"]
