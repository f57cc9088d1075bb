"""Model variants and site resources: what a variant needs, what a site has, and the one rule
that chooses between variants (docs/spec.md, *Variants*; docs/edge-state.md, *Site resources*).

A model version may be carried as one of several **variants** (``fp32``, ``fp16``, ``int8``,
``q4_k_m``, ``pruned-50`` ...), listed in the spec best quality first. A manifest's model
artifact names the variant it carries (:class:`Variant`, the ``variant`` object of
docs/bundle-format.md, format 1.2). A site's **resources** (:class:`Resources`) are its memory,
its accelerator and its link budget.

The choosing rule (:func:`choose`), used by ``ferry export --site/--profile/--max-bytes``, and
the fit rule (:func:`fit_problem`), used by the hub to choose and by the edge to refuse a
variant it cannot run, live here and nowhere else. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import limits
from .errors import FormatError, PolicyError, UsageError
from .progress import human_bytes
from .units import parse_link

#: ``none`` (runs on CPUs) or an accelerator kind: ``gpu``, ``nvidia-a100``, ``npu`` ... A variant
#: that needs an accelerator fits a site whose accelerator is that same word.
ACCELERATOR_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
NO_ACCELERATOR = "none"
#: A precision (``fp32``, ``fp16``, ``bf16``, ``int8`` ...) or quantization scheme (``q4_k_m``, ``awq``).
SCHEME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
VARIANT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
#: A quality figure as decimal text (canonical JSON has no floats): ``0.913``, ``63.2``, ``-1``.
FIGURE_RE = re.compile(r"^-?[0-9]{1,12}(?:\.[0-9]{1,12})?\Z")
MAX_FIGURES = 32


def parse_accelerator(text: str, *, what: str = "--accelerator") -> str:
    """``none`` or an accelerator kind (lower case letters, digits, ``.``, ``_``, ``-``).

    Raises:
        UsageError: anything else (the message names ``what``).
    """
    value = (text or "").strip()
    if not ACCELERATOR_RE.match(value):
        raise UsageError(f"{what} {text!r} is not an accelerator: write none, or a kind such as gpu or nvidia-l4 "
                         "(lower case letters, digits, '.', '_', '-')")
    return value


@dataclass(frozen=True)
class Variant:
    """One variant of a model version, as the manifest records it.

    Attributes:
        name: the variant's name (``int8``), unique within its model.
        size: bytes of the variant's files.
        min_memory: bytes of memory a site needs to run it.
        accelerator: ``none`` or the accelerator kind it needs.
        precision: the weights' precision (``fp16``), as the files say where ferry can read them.
        quantization: the quantization scheme (``q4_k_m``), likewise.
        quality: (benchmark, figure as decimal text) pairs from evaluation, informational.
    """

    name: str
    size: int
    min_memory: int
    accelerator: str = NO_ACCELERATOR
    precision: str | None = None
    quantization: str | None = None
    quality: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "size": self.size, "minMemory": self.min_memory,
                             "accelerator": self.accelerator}
        if self.precision is not None:
            d["precision"] = self.precision
        if self.quantization is not None:
            d["quantization"] = self.quantization
        if self.quality:
            d["quality"] = dict(self.quality)
        return d

    @classmethod
    def from_dict(cls, value: Any, where: str) -> Variant:
        """Read a manifest's ``variant`` object (docs/bundle-format.md, *Artifacts*, 1.2).

        Raises:
            FormatError: a field is missing, of the wrong type or not allowed.
        """
        if not isinstance(value, dict):
            raise FormatError(f"{where} must be a JSON object")
        for key in ("name", "accelerator"):
            if not isinstance(value.get(key), str):
                raise FormatError(f"{where}.{key} must be a string")
        name, accelerator = value["name"], value["accelerator"]
        if not VARIANT_NAME_RE.match(name):
            raise FormatError(f"{where}.name {name[:80]!r} is not allowed here")
        if not ACCELERATOR_RE.match(accelerator):
            raise FormatError(f"{where}.accelerator {accelerator[:80]!r} is not allowed here")
        numbers = {}
        for key in ("size", "minMemory"):
            n = value.get(key)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= limits.MAX_ENTRY_SIZE * limits.MAX_ENTRIES:
                raise FormatError(f"{where}.{key} must be a non-negative integer")
            numbers[key] = n
        schemes: dict[str, str | None] = {}
        for key in ("precision", "quantization"):
            s = value.get(key)
            if s is not None and (not isinstance(s, str) or not SCHEME_RE.match(s)):
                raise FormatError(f"{where}.{key} is not allowed here")
            schemes[key] = s
        quality = value.get("quality", {})
        if not isinstance(quality, dict) or len(quality) > MAX_FIGURES:
            raise FormatError(f"{where}.quality must be an object of at most {MAX_FIGURES} figures")
        for k, v in quality.items():
            if not VARIANT_NAME_RE.match(k) or not isinstance(v, str) or not FIGURE_RE.match(v):
                raise FormatError(f"{where}.quality: {k[:80]!r} must name a benchmark and give a decimal as text")
        return cls(name=name, size=numbers["size"], min_memory=numbers["minMemory"], accelerator=accelerator,
                   precision=schemes["precision"], quantization=schemes["quantization"],
                   quality=tuple(sorted(quality.items())))

    def describe(self) -> str:
        """``int8 (int8, 140 KiB, needs 1 GiB memory, no accelerator)``."""
        scheme = ", ".join(s for s in (self.precision, self.quantization) if s)
        needs = "no accelerator" if self.accelerator == NO_ACCELERATOR else f"accelerator {self.accelerator}"
        return (f"{self.name} ({scheme + ', ' if scheme else ''}{human_bytes(self.size)}, needs "
                f"{human_bytes(self.min_memory)} memory, {needs})")


@dataclass(frozen=True)
class Resources:
    """What a site has. Each field is None when not recorded (then it does not restrict).

    Attributes:
        memory: bytes of memory available to a model.
        accelerator: ``none`` or the site's accelerator kind.
        link: (bytes, period) the site's link carries, e.g. ``(10_000_000_000, "month")``;
            the hub reads it as the byte budget of one bundle.
    """

    memory: int | None = None
    accelerator: str | None = None
    link: tuple[int, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"memory": self.memory, "accelerator": self.accelerator,
                "link": {"bytes": self.link[0], "per": self.link[1]} if self.link else None}

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Resources:
        """The inverse of :meth:`to_json`: ``{"memory": bytes|null, "accelerator": str|null,
        "link": {"bytes", "per"}|null}`` (a return bundle's ``status.json``, ``siteIdentity.resources``).

        Raises:
            FormatError: a field of the wrong shape (naming ``what``).
        """
        if not isinstance(doc, dict) or set(doc) - {"memory", "accelerator", "link"}:
            raise FormatError(f"{what} must be {{memory, accelerator, link}}")
        memory, accelerator, link = doc.get("memory"), doc.get("accelerator"), doc.get("link")
        if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool) or not 0 < memory < 2**63):
            raise FormatError(f"{what}.memory must be a number of bytes")
        if accelerator is not None:
            try:
                accelerator = parse_accelerator(accelerator if isinstance(accelerator, str) else "",
                                                what=f"{what}.accelerator")
            except UsageError as exc:
                raise FormatError(str(exc)) from None
        if link is not None:
            if not isinstance(link, dict) or set(link) != {"bytes", "per"}:
                raise FormatError(f"{what}.link must be {{bytes, per}}")
            try:
                link = parse_link(f"{link['bytes']}/{link['per']}", what=f"{what}.link")
            except UsageError as exc:
                raise FormatError(str(exc)) from None
        return cls(memory=memory, accelerator=accelerator, link=link)

    def describe(self) -> str:
        """``memory 16 GiB, accelerator none, link 10.0 GB/month`` (``not recorded`` when empty)."""
        parts = []
        if self.memory is not None:
            parts.append(f"memory {human_bytes(self.memory)}")
        if self.accelerator is not None:
            parts.append(f"accelerator {self.accelerator}")
        if self.link is not None:
            parts.append(f"link {human_bytes(self.link[0])}/{self.link[1]}")
        return ", ".join(parts) or "not recorded"


def fit_problem(variant: Variant, site: Resources) -> str | None:
    """Why ``site`` cannot run ``variant``, or None when it can (the fit rule).

    A variant fits when its ``min_memory`` is at most the site's memory and it needs no
    accelerator or exactly the site's accelerator kind. What the site has not recorded does
    not restrict. Source: docs/spec.md, *Variants*.
    """
    if site.memory is not None and variant.min_memory > site.memory:
        return f"needs {human_bytes(variant.min_memory)} memory, the site has {human_bytes(site.memory)}"
    if variant.accelerator != NO_ACCELERATOR and site.accelerator is not None \
            and site.accelerator != variant.accelerator:
        return f"needs accelerator {variant.accelerator}, the site has {site.accelerator}"
    return None


@dataclass(frozen=True)
class Choice:
    """The variant chosen for one model, why, and why each better one was passed over."""

    model: str
    variant: Variant
    reason: str
    passed: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant.name, "reason": self.reason,
                "passedOver": [{"variant": n, "why": w} for n, w in self.passed]}

    def describe(self) -> str:
        why = "; ".join(f"{n} {w}" for n, w in self.passed)
        return f"{self.model}: variant {self.variant.name}: {self.reason}" + (f" ({why})" if why else "")


def choose(models: Sequence[tuple[str, Sequence[Variant]]], site: Resources | None, budget: int | None,
           fixed: int = 0) -> list[Choice]:
    """The variant each model carries: *the highest-quality variant that fits* (the rule).

    Variants are given best quality first (the spec's order). For each model, in order, the
    first variant that fits the site (:func:`fit_problem`) and whose size fits what is left of
    ``budget`` wins: the budget less ``fixed`` (everything else the bundle carries), the sizes
    chosen for earlier models, and the smallest fitting size of each later model (so an early
    model cannot starve a later one). Source: docs/spec.md, *Variants*, "Choosing".

    Args:
        models: (model name, its variants best first) in spec order.
        site: the site's resources, or None (no resource limits).
        budget: bytes the bundle may take (``--max-bytes`` or the profile's link), or None.
        fixed: bytes of what the bundle carries besides the variants.
    Returns:
        one :class:`Choice` per model, in the given order.
    Raises:
        PolicyError: a model with no variant the site can run, or none within the budget
            (one line naming the model, the site's resources and each variant's problem).
    """
    res = site or Resources()
    runnable: list[list[Variant]] = []
    problems: list[list[tuple[str, str]]] = []
    for model, variants in models:
        fits = [v for v in variants if fit_problem(v, res) is None]
        probs = [(v.name, p) for v in variants if (p := fit_problem(v, res)) is not None]
        if not fits:
            raise PolicyError(f"model {model!r}: no variant fits the site ({res.describe()}): "
                              + "; ".join(f"{n} {p}" for n, p in probs))
        runnable.append(fits)
        problems.append(probs)
    choices: list[Choice] = []
    spent = fixed
    for i, (model, variants) in enumerate(models):
        later = sum(min(v.size for v in fits) for fits in runnable[i + 1:])
        left = None if budget is None else budget - spent - later
        passed: list[tuple[str, str]] = []
        chosen: Variant | None = None
        for v in variants:
            why = dict(problems[i]).get(v.name)
            if why is None and left is not None and v.size > left:
                why = f"is {human_bytes(v.size)}, over the {human_bytes(max(left, 0))} left of the budget"
            if why is None:
                chosen = v
                break
            passed.append((v.name, why))
        if chosen is None:
            assert budget is not None
            raise PolicyError(f"model {model!r}: no variant fits the byte budget of {human_bytes(budget)} "
                              f"({human_bytes(spent)} taken by the rest of the bundle"
                              f"{', ' + human_bytes(later) + ' kept for later models' if later else ''}): "
                              + "; ".join(f"{n} {w}" for n, w in passed))
        if site is None and budget is None:
            reason = "the best variant (no --site, --profile or --max-bytes to choose for)"
        elif not passed:
            reason = "the best variant, and it fits" + (" the site" if site else "") + \
                (" and the budget" if budget is not None else "")
        else:
            reason = "the best variant that fits" + (" the site" if site else "") + \
                (" and the budget" if budget is not None else "")
        spent += chosen.size
        choices.append(Choice(model, chosen, reason, tuple(passed)))
    return choices
