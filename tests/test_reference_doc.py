"""docs/config-reference.md is generated from the schemas; it must match them."""

from pathlib import Path

from romachip.spec.reference import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"


def test_config_reference_is_current():
    assert DOC.read_text() == render(), "regenerate: python -m romachip.spec.reference > docs/config-reference.md"


def test_reference_lists_every_chip_field():
    text = render()
    for field in ("clock_hz", "l_unit.rom.macros", "h_unit.sram.macro_rows", "noc.link_width_bits", "rope_theta"):
        assert f"`{field}`" in text
