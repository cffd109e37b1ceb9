"""Derived values ("ties"): a field set from the rest of the design point by a small expression.

    ties:
      process_node_nm: tech.node_nm                       # follow the technology axis
      l_unit.rom.macros: fit_rom_macros()                 # fewest ROM macros that hold the model
      h_unit.sram.macros: ceil(18 * 8192 / h_unit.sram.macro_rows)

An expression is arithmetic (+ - * / // % **, unary -) over numbers, dotted paths into the design
(the same paths as axes; `x[4]` for a dict key) and a few functions: min, max, ceil, floor, round, int,
float, log2, sqrt, plus the named helpers below, which know the workload. Nothing else parses: no
attribute access outside the design, no names of Python's, so a spec cannot run code.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from romachip.dse.paths import FieldPath, get, resolve
from romachip.errors import SweepError

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "ceil": math.ceil,
    "floor": math.floor,
    "round": round,
    "int": int,
    "float": float,
    "log2": math.log2,
    "sqrt": math.sqrt,
}
#: Named helpers: name -> what it gives. They take no arguments; the task supplies the design and workload.
HELPERS = {
    "fit_rom_macros": "the fewest ROM macros per L-Unit that hold the workload's fullest L-Unit at this "
    "macro_rows x macro_cols x bits_per_cell (keeps ROM bits per unit >= what the model needs)",
    "vector_row_middle": "row_roles for mesh.rows rows: matrix rows with one vector row in the middle "
    "(ROMA's floorplan for any mesh height)",
}


def _chain(node: ast.AST) -> str | None:
    """`a.b[4].c` -> 'a.b.4.c'; None for anything that is not a plain path."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _chain(node.value)
        return None if head is None else f"{head}.{node.attr}"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        head = _chain(node.value)
        return None if head is None else f"{head}.{node.slice.value}"
    return None


@dataclass(frozen=True)
class Tie:
    """A checked tie: the path it sets and its parsed expression."""

    target: FieldPath
    text: str
    tree: ast.Expression
    paths: dict[str, FieldPath]  # every design path the expression reads
    helpers: tuple[str, ...]


def compile_tie(target: str, text: str) -> Tie:
    where = f"tie '{target}: {text}'"
    try:
        tree = ast.parse(str(text), mode="eval")
    except SyntaxError as exc:
        raise SweepError(f"{where}: not an expression ({exc.msg})") from None
    paths: dict[str, FieldPath] = {}
    helpers: list[str] = []

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            return check(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str):
            return None
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            check(node.left)
            return check(node.right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return check(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            name = node.func.id
            if name in HELPERS:
                if node.args:
                    raise SweepError(f"{where}: helper {name}() takes no arguments")
                helpers.append(name)
                return None
            if name not in _FUNCTIONS:
                known = ", ".join([*_FUNCTIONS, *HELPERS])
                raise SweepError(f"{where}: unknown function {name}(); known: {known}")
            for arg in node.args:
                check(arg)
            return None
        chain = _chain(node)
        if chain is not None:
            paths[chain] = resolve(chain)
            return None
        raise SweepError(f"{where}: {ast.unparse(node)!r} is not allowed (numbers, design paths, + - * / // % **, "
                         "and the functions listed in docs/dse.md)")  # fmt: skip

    check(tree)
    return Tie(resolve(target), str(text), tree, paths, tuple(helpers))


def evaluate(tie: Tie, design: dict, helper: Callable[[str], Any]) -> Any:
    """The tie's value on a design; `helper(name)` computes a named helper for this design point."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            if name in HELPERS:
                return helper(name)
            return _FUNCTIONS[name](*(ev(a) for a in node.args))
        path = tie.paths[_chain(node)]  # type: ignore[index]
        value = get(design, path)
        if value is None:
            raise SweepError(f"tie '{tie.target.text}: {tie.text}': '{path.text}' is not set in this design")
        return value

    try:
        return ev(tie.tree)
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise SweepError(f"tie '{tie.target.text}: {tie.text}' failed: {exc}") from None
