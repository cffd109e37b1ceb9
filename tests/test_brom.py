"""B-ROM encoding and bit packing: exact inverses, hand-checked bytes, errors."""

import itertools

import numpy as np
import pytest

from romachip.errors import FormatError
from romachip.rom.bits import pack_scales, pack_uint, unpack_scales, unpack_uint
from romachip.rom.brom import brom_decode, brom_encode, decode_words, encode_words


def test_hand_checked_patterns():
    bits = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [1, 0, 1], [0, 1, 0]], dtype=np.uint8)
    p = brom_encode(bits)
    # column 0 of rows 0..3 reads 1,0,1,1 -> 0b1101 = 13; column 2: 1,1,1,1 -> 15; row 4 alone: padded
    assert p.tolist() == [[13, 0, 15], [0, 1, 0]]
    assert brom_decode(p, 5).tolist() == bits.tolist()


def test_exhaustive_small_arrays_round_trip():
    for rows, cols in ((4, 2), (3, 2), (1, 8), (8, 1), (5, 1)):
        for flat in itertools.product((0, 1), repeat=rows * cols):
            b = np.array(flat, dtype=np.uint8).reshape(rows, cols)
            p = brom_encode(b)
            assert p.shape == (-(-rows // 4), cols) and p.max(initial=0) <= 15
            assert np.array_equal(brom_decode(p, rows), b)


def test_every_pattern_is_reachable_and_distinct():
    # the 16 columns of a 4-row block holding 0..15 in binary give back exactly 0..15
    b = ((np.arange(16)[None, :] >> np.arange(4)[:, None]) & 1).astype(np.uint8)
    assert brom_encode(b).tolist() == [list(range(16))]


def test_random_large_round_trip():
    rng = np.random.default_rng(1)
    b = rng.integers(0, 2, size=(4097, 131), dtype=np.uint8)
    assert np.array_equal(brom_decode(brom_encode(b), 4097), b)


def test_word_codec_matches_bit_level_definition():
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, size=32 * 513, dtype=np.uint8)  # 513 groups of four 64-bit words
    enc = encode_words(raw, 64)
    bits = np.unpackbits(raw, bitorder="little").reshape(-1, 64)  # row w = word w, LSB-first
    p = brom_encode(bits)
    assert np.array_equal(enc, (p[:, 0::2] | (p[:, 1::2] << 4)).reshape(-1))
    assert np.array_equal(decode_words(enc, 64), raw)
    assert not np.array_equal(enc, raw)  # a real permutation, not a copy


def test_word_codec_hand_checked_group():
    raw = np.zeros(32, dtype=np.uint8)
    raw[0:8] = 0xFF  # word 0: all ones -> bit 0 of every pattern
    raw[24] = 0x01  # word 3, column 0 -> bit 3 of pattern 0
    enc = encode_words(raw, 64)
    assert enc[0] == 0x19 and (enc[1:] == 0x11).all()  # column 0: 0b1001, column 1: 0b0001


def test_other_word_widths_use_the_generic_path():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, size=16 * 40, dtype=np.uint8)  # 32-bit words, groups of 16 bytes
    assert np.array_equal(decode_words(encode_words(raw, 32), 32), raw)


def test_codec_errors():
    with pytest.raises(FormatError, match="0 or 1"):
        brom_encode(np.array([[2]]))
    with pytest.raises(FormatError, match="2-D"):
        brom_encode(np.zeros(4))
    with pytest.raises(FormatError, match="0..15"):
        brom_decode(np.array([[16]], dtype=np.uint8), 4)
    with pytest.raises(FormatError, match="cannot hold 9 rows"):
        brom_decode(np.zeros((2, 3), dtype=np.uint8), 9)
    with pytest.raises(FormatError, match="whole groups of 32 bytes"):
        encode_words(np.zeros(40, dtype=np.uint8), 64)
    with pytest.raises(FormatError, match="whole bytes"):
        encode_words(np.zeros(40, dtype=np.uint8), 12)


def test_pack_uint_hand_checked():
    assert pack_uint(np.array([1, 2, 3]), 4).tolist() == [0x21, 0x03]
    assert pack_uint(np.array([1, 2, 3, 0, 3]), 2).tolist() == [0b00111001, 0b11]
    assert pack_uint(np.array([1, 2]), 3).tolist() == [0x11]  # v0 at bits 0-2, v1 at bits 3-5


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_pack_uint_round_trip(bits):
    rng = np.random.default_rng(bits)
    v = rng.integers(0, 1 << bits, size=1001, dtype=np.uint8)
    packed = pack_uint(v, bits)
    assert packed.size == -(-1001 * bits // 8)
    assert np.array_equal(unpack_uint(packed, bits, 1001), v)


def test_unpack_needs_enough_bytes():
    with pytest.raises(FormatError, match="cannot hold 9 values of 4 bits"):
        unpack_uint(np.zeros(4, dtype=np.uint8), 4, 9)


def test_scales_round_trip_and_bf16_precision_check():
    s16 = np.array([0.5, 1e-4, 3.0], dtype=np.float16)
    assert pack_scales(s16, "fp16").tolist() == list(s16.astype("<f2").tobytes())
    assert np.array_equal(unpack_scales(pack_scales(s16, "fp16"), "fp16", 3), s16)
    s32 = np.array([0.1, 2.5], dtype=np.float32)
    assert np.array_equal(unpack_scales(pack_scales(s32, "fp32"), "fp32", 2), s32)
    bf = np.array([1.5, -0.15625], dtype=np.float32)  # both exact in bf16
    assert pack_scales(bf, "bf16").tolist() == [0xC0, 0x3F, 0x20, 0xBE]
    assert np.array_equal(unpack_scales(pack_scales(bf, "bf16"), "bf16", 2), bf)
    with pytest.raises(FormatError, match="more than bf16 precision"):
        pack_scales(np.array([0.1], dtype=np.float32), "bf16")
