"""Symbolic dimensions: integer polynomials over named dims, with exact floor division.

A dim is a plain `int` when known, else a `Dim`: a sum of terms `coeff * atom * atom ...`
where an atom is a named symbol (`H`) or a floor division `floor(P / n)`. Normal forms make
equal sizes compare equal, so `ceil(ceil(H/2)/2)` and `ceil(H/4)` unify, and with `H` declared
a multiple of 32, `floor((H - 1)/2) + 1` is simply `H/2`.
"""

from __future__ import annotations

import ast
from fractions import Fraction
from functools import reduce
from typing import Mapping, Union

DimLike = Union[int, "Dim"]


class Sym:
    """A named dim; `multiple` is what it is known to be a multiple of."""

    __slots__ = ("name", "multiple", "_h")

    def __init__(self, name: str, multiple: int = 1):
        self.name = name
        self.multiple = multiple
        self._h = hash(("sym", name, multiple))

    def __eq__(self, other):
        return isinstance(other, Sym) and other.name == self.name and other.multiple == self.multiple

    def __hash__(self):
        return self._h

    def sort_key(self):
        return (0, self.name)

    def __repr__(self):
        return self.name


class FloorDiv:
    """The atom `floor(num / den)` with `num` a `Dim` that has no integer-divisible part."""

    __slots__ = ("num", "den", "_h")

    def __init__(self, num: "Dim", den: int):
        self.num = num
        self.den = den
        self._h = hash(("floor", num, den))

    def __eq__(self, other):
        return isinstance(other, FloorDiv) and other.den == self.den and other.num == self.num

    def __hash__(self):
        return self._h

    def sort_key(self):
        return (1, str(self))

    def __str__(self):
        return _format_floor(self)

    __repr__ = __str__


Atom = Union[Sym, FloorDiv]
Mono = tuple  # sorted tuple of atoms; () is the constant term


def _mono_key(mono: Mono):
    return tuple(a.sort_key() for a in mono)


def _mono_multiple(mono: Mono) -> int:
    m = 1
    for a in mono:
        if isinstance(a, Sym):
            m *= a.multiple
    return m


class Dim:
    """A symbolic size. Build with `sym("H")`, arithmetic, `floordiv`, `ceildiv`."""

    __slots__ = ("terms", "_h")

    def __init__(self, terms: Mapping[Mono, Fraction]):
        self.terms = {m: c for m, c in terms.items() if c != 0}
        self._h = None

    # ---- construction -------------------------------------------------------------
    @staticmethod
    def make(terms: Mapping[Mono, Fraction]) -> DimLike:
        d = Dim(terms)
        d = _absorb_constant(d)
        if not d.terms:
            return 0
        if len(d.terms) == 1 and () in d.terms and d.terms[()].denominator == 1:
            return int(d.terms[()])
        return d

    # ---- arithmetic ---------------------------------------------------------------
    def __add__(self, other: DimLike) -> DimLike:
        t = dict(self.terms)
        for m, c in _terms(other).items():
            t[m] = t.get(m, 0) + c
        return Dim.make(t)

    __radd__ = __add__

    def __neg__(self) -> DimLike:
        return Dim.make({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: DimLike) -> DimLike:
        return self + (-other)

    def __rsub__(self, other: DimLike) -> DimLike:
        return (-self) + other

    def __mul__(self, other: DimLike) -> DimLike:
        out: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in _terms(other).items():
                m = tuple(sorted(m1 + m2, key=lambda a: a.sort_key()))
                out[m] = out.get(m, 0) + c1 * c2
        return Dim.make(out)

    __rmul__ = __mul__

    def __truediv__(self, n: int) -> DimLike:
        """Exact division (the size is known to be divisible by `n`)."""
        if not isinstance(n, int) or n == 0:
            raise TypeError("a dim can only be divided exactly by a nonzero integer")
        return Dim.make({m: c / n for m, c in self.terms.items()})

    def __floordiv__(self, n: int) -> DimLike:
        return floordiv(self, n)

    # ---- comparison ---------------------------------------------------------------
    def __eq__(self, other):
        if isinstance(other, int):
            return False
        return isinstance(other, Dim) and other.terms == self.terms

    def __hash__(self):
        if self._h is None:
            self._h = hash(frozenset(self.terms.items()))
        return self._h

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for mono in self.terms:
            for a in mono:
                if isinstance(a, Sym):
                    out.add(a.name)
                else:
                    out |= a.num.symbols()
        return out

    def __str__(self):
        return format_dim(self)

    def __repr__(self):
        return f"Dim({format_dim(self)})"


def _terms(d: DimLike) -> Mapping[Mono, Fraction]:
    if isinstance(d, Dim):
        return d.terms
    return {(): Fraction(d)} if d else {}


def sym(name: str, multiple: int = 1) -> Dim:
    return Dim({(Sym(name, multiple),): Fraction(1)})


def _integral(mono: Mono, coeff: Fraction) -> bool:
    return (coeff * _mono_multiple(mono)).denominator == 1


def floordiv(d: DimLike, n: int) -> DimLike:
    """floor(d / n) for a positive integer n, simplified."""
    if n <= 0:
        raise ValueError("floor division by a non-positive integer")
    if isinstance(d, int):
        return d // n
    if n == 1:
        return d
    quotient: dict = {}
    rest: dict = {}
    for mono, c in d.terms.items():
        if mono == ():
            continue
        if _integral(mono, c / n):
            quotient[mono] = c / n
        else:
            rest[mono] = c
    const = d.terms.get((), Fraction(0))
    if const.denominator != 1:  # a rational constant: leave the whole thing opaque
        return Dim.make({(FloorDiv(d, n),): Fraction(1)})
    const = int(const)
    if not rest:
        if const // n:
            quotient[()] = Fraction(const // n)
        return Dim.make(quotient)
    # floor((floor(A/m) + c) / n) == floor((A + c*m) / (m*n))
    if len(rest) == 1:
        (mono, c), = rest.items()
        if c == 1 and len(mono) == 1 and isinstance(mono[0], FloorDiv):
            inner = mono[0]
            return _add(Dim.make(quotient), floordiv(inner.num + const * inner.den, inner.den * n))
    if const:
        rest[()] = Fraction(const)
    return _add(Dim.make(quotient), Dim.make({(FloorDiv(Dim(rest), n),): Fraction(1)}))


def ceildiv(d: DimLike, n: int) -> DimLike:
    """ceil(d / n) for a positive integer n."""
    return floordiv(d + (n - 1), n)


def _add(a: DimLike, b: DimLike) -> DimLike:
    return a + b if isinstance(a, Dim) else (b + a if isinstance(b, Dim) else a + b)


def _absorb_constant(d: Dim) -> Dim:
    """Normal form: an integer constant beside a single floor atom moves inside it."""
    const = d.terms.get(())
    if not const or const.denominator != 1:
        return d
    floors = [(m, c) for m, c in d.terms.items() if len(m) == 1 and isinstance(m[0], FloorDiv) and c == 1]
    if len(floors) != 1:
        return d
    (mono, _), = floors
    fd: FloorDiv = mono[0]
    num = fd.num + int(const) * fd.den
    terms = {m: c for m, c in d.terms.items() if m != () and m != mono}
    inner = floordiv(num, fd.den)
    return _merge(terms, inner)


def _merge(terms: dict, extra: DimLike) -> Dim:
    out = dict(terms)
    for m, c in _terms(extra).items():
        out[m] = out.get(m, 0) + c
    return Dim({m: c for m, c in out.items() if c != 0})


# ---- evaluation -------------------------------------------------------------------------


def evaluate(d: DimLike, env: Mapping[str, int]) -> int:
    """The integer value of `d` given sizes for its symbols; KeyError names a missing one."""
    if isinstance(d, int):
        return d
    total = Fraction(0)
    for mono, c in d.terms.items():
        v = Fraction(c)
        for a in mono:
            v *= env[a.name] if isinstance(a, Sym) else evaluate(a.num, env) // a.den
        total += v
    if total.denominator != 1:
        raise ValueError(f"{format_dim(d)} is not an integer for {dict(env)}")
    return int(total)


def is_static(d: DimLike) -> bool:
    return isinstance(d, int)


# ---- formatting -------------------------------------------------------------------------


def _format_mono(mono: Mono, c: Fraction, first: bool) -> str:
    sign = "-" if c < 0 else ("" if first else "+")
    c = abs(c)
    names = "*".join(str(a) if isinstance(a, Sym) else str(a) for a in mono)
    if not mono:
        body = str(c.numerator) if c.denominator == 1 else f"{c.numerator}/{c.denominator}"
    else:
        body = names if c.numerator == 1 else f"{c.numerator}*{names}"
        if c.denominator != 1:
            body = f"{body}/{c.denominator}"
    return sign + body


def format_dim(d: DimLike) -> str:
    if isinstance(d, int):
        return str(d)
    items = sorted(d.terms.items(), key=lambda mc: (mc[0] == (), _mono_key(mc[0])))
    return "".join(_format_mono(m, c, i == 0) for i, (m, c) in enumerate(items)) or "0"


def _format_floor(fd: FloorDiv) -> str:
    num, n = fd.num, fd.den
    const = num.terms.get((), Fraction(0))
    if const == n - 1:  # floor((A + n - 1)/n) is ceil(A/n)
        a = Dim({m: c for m, c in num.terms.items() if m != ()})
        return f"ceil({_over(a, n)})"
    return f"floor({_over(num, n)})"


def _over(a: Dim, n: int) -> str:
    if len(a.terms) == 1:
        (m, c), = a.terms.items()
        if m:
            return _format_mono(m, Fraction(c) / n, True)
    return f"({format_dim(a)})/{n}"


# ---- parsing ----------------------------------------------------------------------------


class DimSyntaxError(ValueError):
    pass


def parse_dim(text: str | int, multiples: Mapping[str, int] | None = None) -> DimLike:
    """Parse `H`, `H/2`, `(H-3)//2+1`, `ceil(H/32)`, `C*H*W`, or an integer."""
    if isinstance(text, bool):
        raise DimSyntaxError(f"expected a dim, found {text!r}")
    if isinstance(text, int):
        return text
    multiples = multiples or {}
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError:
        raise DimSyntaxError(f"cannot read dim expression {text!r}") from None

    def ev(node) -> DimLike:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            if not node.id.isidentifier():
                raise DimSyntaxError(f"bad dim name {node.id!r}")
            return sym(node.id, multiples.get(node.id, 1))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(node.op, (ast.Div, ast.FloorDiv)):
                if not isinstance(right, int) or right <= 0:
                    raise DimSyntaxError(f"{text!r}: can only divide by a positive integer")
                if isinstance(node.op, ast.FloorDiv):
                    return floordiv(left, right)
                if isinstance(left, int):
                    if left % right:
                        raise DimSyntaxError(f"{text!r}: {left}/{right} is not an integer")
                    return left // right
                return left / right
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("floor", "ceil")
                and len(node.args) == 1 and not node.keywords):
            arg = node.args[0]
            if isinstance(arg, ast.BinOp) and isinstance(arg.op, (ast.Div, ast.FloorDiv)):
                num, den = ev(arg.left), ev(arg.right)
                if isinstance(den, int) and den > 0:
                    return floordiv(num, den) if node.func.id == "floor" else ceildiv(num, den)
            return ev(arg)
        raise DimSyntaxError(f"cannot read dim expression {text!r}: use names, integers, + - * / // and floor()/ceil()")

    return ev(tree.body)


def shape_str(shape) -> str:
    return "[" + ", ".join(format_dim(d) for d in shape) + "]"


def prod(dims) -> DimLike:
    return reduce(lambda a, b: a * b if isinstance(a, Dim) or isinstance(b, Dim) else a * b, dims, 1)


def conv_out(size: DimLike, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
             ceil_mode: bool = False) -> DimLike:
    """Output length of a convolution or pooling window, exactly as torch computes it."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return floordiv(span, stride) + 1
    out = ceildiv(span, stride) + 1
    # torch drops a last window that would start inside the right padding
    if isinstance(out, int) and isinstance(size, int) and (out - 1) * stride >= size + padding:
        out -= 1
    return out
