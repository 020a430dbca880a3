"""Width multipliers: parsing the forms suites and tables use, and their canonical labels.

protocol.md gives widths as fractions of a base architecture ("1/6", "2/6", 1) and one per-layer
variant, "1/6*" = (1/6, 1/6, 1/24, 1/24) for LeNet's four layers. Channel counts are
int(base * w) (floored), which is what reproduces the published parameter counts. Widths are kept
as exact Fractions so that, e.g., int(120 * 1/24) is 5 and not 4 through a float round-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from numbers import Real

Scalar = float | str | Fraction  # ints are floats to a type checker
WidthSpec = Scalar | Sequence[Scalar]

# "x*" scales the layers by x * STAR_FACTORS (protocol.md: "1/6*" = (1/6, 1/6, 1/24, 1/24)):
# the first two layers (LeNet's convolutions) keep width x, the last two get a quarter of it.
STAR_FACTORS = (Fraction(1), Fraction(1), Fraction(1, 4), Fraction(1, 4))

# Floats are turned into the nearest simple fraction: 2/6 given as 0.333... must still mean 1/3.
_MAX_DENOMINATOR = 10**6


def parse_scalar(value: Scalar) -> Fraction:
    """One positive multiplier from 1, 0.5, "1/6", "0.5" or a Fraction."""
    if isinstance(value, Fraction):
        result = value
    elif isinstance(value, bool):  # ValueError like every other bad width: suites catch one type
        raise ValueError(f"width must be a number or a fraction string, got {value!r}")  # noqa: TRY004
    elif isinstance(value, int):
        result = Fraction(value)
    elif isinstance(value, Real):
        result = Fraction(float(value)).limit_denominator(_MAX_DENOMINATOR)
    elif isinstance(value, str):
        try:
            result = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"cannot read width {value!r}: use a number (1, 0.5), a fraction ('1/6'), "
                f"a per-layer form ('1/6*') or a comma list ('1/6,1/6,1/24,1/24')"
            ) from None
        if "." in value:
            result = result.limit_denominator(_MAX_DENOMINATOR)
    else:
        raise ValueError(f"width must be a number or a fraction string, got {value!r}")  # noqa: TRY004
    if result <= 0:
        raise ValueError(f"width must be positive, got {value!r}")
    return result


def parse_width(width: WidthSpec, layers: int) -> tuple[Fraction, ...]:
    """Per-layer multipliers for an architecture with `layers` width-scaled layers.

    A scalar applies to every layer; "x*" means x * STAR_FACTORS (four layers only); a comma
    string or a sequence gives one multiplier per layer and must have exactly `layers` entries.
    """
    if isinstance(width, str):
        text = width.strip()
        if text.endswith("*"):
            if layers != len(STAR_FACTORS):
                raise ValueError(
                    f"width {width!r}: the '*' form is defined for {len(STAR_FACTORS)} layers "
                    f"(protocol.md's '1/6*' for LeNet), this architecture has {layers}"
                )
            base = parse_scalar(text[:-1])
            return tuple(base * factor for factor in STAR_FACTORS)
        if "," in text:
            width = [part for part in text.split(",")]
        else:
            return (parse_scalar(text),) * layers
    if isinstance(width, (list, tuple)):
        values = tuple(parse_scalar(v) for v in width)
        if len(values) != layers:
            raise ValueError(
                f"width {width!r} gives {len(values)} per-layer multipliers, expected {layers}"
            )
        return values
    return (parse_scalar(width),) * layers


def scaled(base: int, multiplier: Fraction, what: str = "layer") -> int:
    """int(base * w), the protocol's channel count; refuses a layer that would vanish."""
    count = int(base * multiplier)  # exact: Fraction floors like int(float) for positives
    if count < 1:
        raise ValueError(
            f"width {fraction_label(multiplier)} leaves {what} (base {base}) with no units: "
            f"int({base} * {fraction_label(multiplier)}) = 0"
        )
    return count


def fraction_label(value: Fraction) -> str:
    """Label of one multiplier: sixths as in protocol.md's tables ("1/6", "2/6"), else reduced."""
    if value.denominator == 1:
        return str(value.numerator)
    if (value * 6).denominator == 1:
        return f"{value * 6}/6"
    if value.denominator <= 1000:
        return f"{value.numerator}/{value.denominator}"
    return f"{float(value):g}"


def width_label(width: WidthSpec) -> str:
    """Canonical table label of a width: 1 -> "1", 0.5 -> "3/6", "2/6" -> "2/6", "1/6*" -> "1/6*".

    A per-layer list that is the star pattern gets its star label; a uniform list collapses to
    its scalar; any other list is its labels joined with ",".
    """
    if isinstance(width, str) and width.strip().endswith("*"):
        return f"{fraction_label(parse_scalar(width.strip()[:-1]))}*"
    if isinstance(width, str) and "," in width or isinstance(width, (list, tuple)):
        values = parse_width(width, len(width.split(",")) if isinstance(width, str) else len(width))
        if len(set(values)) == 1:
            return fraction_label(values[0])
        if len(values) == len(STAR_FACTORS) and all(
            v == values[0] * f for v, f in zip(values, STAR_FACTORS)
        ):
            return f"{fraction_label(values[0])}*"
        return ",".join(fraction_label(v) for v in values)
    return fraction_label(parse_scalar(width))
