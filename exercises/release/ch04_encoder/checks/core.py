"""The checking machinery shared by every chapter's checkers (the package docstring says how
they are used)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["check", "CheckFailed", "CHECKERS", "Checker", "compare"]

CHECKERS: dict[str, Checker] = {}


class CheckFailed(AssertionError):
    """Raised by :func:`check` with a message that says what is wrong."""


def register(cls: type[Checker]) -> type[Checker]:
    CHECKERS[cls.name] = cls()
    return cls


class Checker:
    """The logic of one exercise's tests.

    ``name`` is the name the student defines ("softmax"), or "Class.method" for a method.
    ``uses`` lists other exercises the student's code calls; they are swapped for the
    ``oracle`` of their checker while this one runs.
    """

    name: str = ""
    uses: tuple[str, ...] = ()
    atol: float = 1e-5
    rtol: float = 1e-4

    def cases(self, gen: torch.Generator, hidden: bool) -> list[dict[str, Any]]:
        """Inputs to try: visible cases are small and few; hidden ones add other shapes and
        edge cases. Values are tensors, ints, floats, bools or strings (so that the grader can
        save them without pickle)."""
        raise NotImplementedError

    def run(self, obj: Any, case: dict[str, Any]) -> dict[str, Any]:
        """Call the student's ``obj`` on ``case``; return its outputs by name, unchecked."""
        raise NotImplementedError

    def expected(self, case: dict[str, Any]) -> dict[str, Tensor]:
        """The right outputs for ``case``, computed with PyTorch's own functions."""
        raise NotImplementedError

    def hint(self, case: dict[str, Any], got: dict[str, Any]) -> str | None:
        """A guess at the mistake behind a wrong answer, or None."""
        return None

    def describe(self, case: dict[str, Any]) -> str:
        """A short description of a case for messages."""
        parts = []
        for key, value in case.items():
            if key.startswith("w."):
                continue
            if isinstance(value, Tensor):
                parts.append(f"{key}: {describe_tensor(value)}")
            else:
                parts.append(f"{key}={value!r}")
        return ", ".join(parts)

    @property
    def oracle(self) -> Callable:
        """A PyTorch-based stand-in for the student's object, used while checking others."""
        raise NotImplementedError(f"no oracle for {self.name}")


# --- comparing -------------------------------------------------------------------------------


def describe_tensor(t: Tensor) -> str:
    text = f"shape {tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"
    if t.dtype == torch.bool and t.numel() and not bool(t.all()):
        text += f" ({int((~t).sum())} False)"
    return text


def compare(got: Any, expected: Tensor, what: str, atol: float, rtol: float) -> str | None:
    """None if ``got`` is a tensor equal to ``expected`` within tolerance, else the problem."""
    if not isinstance(got, Tensor):
        return f"{what}: expected a torch.Tensor, got {type(got).__name__}"
    if type(got) is not Tensor and not isinstance(got, nn.Parameter):
        return f"{what}: expected a plain torch.Tensor, got the subclass {type(got).__name__}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    if got.dtype != expected.dtype:
        return f"{what}: expected dtype {expected.dtype}, got {got.dtype}"
    got = got.detach()
    if expected.dtype == torch.bool or not expected.is_floating_point():
        wrong = got != expected
        if bool(wrong.any()):
            first = tuple(int(i) for i in wrong.nonzero()[0])
            return (f"{what}: {int(wrong.sum())} of {wrong.numel()} entries differ, first at "
                    f"index {first}: expected {expected[first].item()}, got {got[first].item()}")
        return None
    bad_nan = torch.isnan(got) & ~torch.isnan(expected)
    if bool(bad_nan.any()):
        first = tuple(int(i) for i in bad_nan.nonzero()[0])
        return f"{what}: NaN at index {first} ({int(bad_nan.sum())} NaN entries in all)"
    if not torch.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=True):
        err = (got - expected).abs().nan_to_num(float("inf"))
        first = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
        return (f"{what}: max abs error {err.max().item():.3g} at index {first} "
                f"(expected {expected[first].item():.6g}, got {got[first].item():.6g}; "
                f"tolerance atol={atol:g}, rtol={rtol:g})")
    return None


def compare_outputs(checker: Checker, got: dict[str, Any], expected: dict[str, Tensor]
                    ) -> list[str]:
    problems = []
    for key, exp in expected.items():
        problem = compare(got.get(key), exp, key, checker.atol, checker.rtol)
        if problem:
            problems.append(problem)
    return problems


# --- running a check ----------------------------------------------------------------------------


def namespace_of(obj: Any) -> dict[str, Any] | None:
    """The global namespace the student's object was defined in (the notebook's)."""
    fn = obj
    if isinstance(obj, type):
        fn = next((v for v in vars(obj).values() if callable(v) and hasattr(v, "__globals__")),
                  None)
    fn = getattr(fn, "__wrapped__", fn)  # through decorators such as @torch.no_grad()
    return getattr(fn, "__globals__", None)


@contextlib.contextmanager
def isolated(uses: tuple[str, ...], namespace: dict[str, Any] | None) -> Iterator[None]:
    """Swap the exercises in ``uses`` for their oracles inside ``namespace``, then restore."""
    restore: list[Callable[[], None]] = []
    try:
        for name in uses if namespace is not None else ():
            oracle = CHECKERS[name].oracle
            if "." in name:
                cls_name, method = name.split(".")
                cls = namespace.get(cls_name)
                if isinstance(cls, type):
                    old = cls.__dict__.get(method)
                    setattr(cls, method, oracle)
                    restore.append(lambda cls=cls, m=method, old=old: setattr(cls, m, old))
            elif name in namespace:
                old = namespace[name]
                namespace[name] = oracle
                restore.append(lambda n=name, old=old: namespace.__setitem__(n, old))
            else:  # not defined (a skipped or failed cell): it must not cost this exercise
                namespace[name] = oracle
                restore.append(lambda n=name: namespace.pop(n, None))
        yield
    finally:
        for undo in reversed(restore):
            undo()


def run_case(checker: Checker, obj: Any, case: dict[str, Any]) -> dict[str, Any]:
    """Run the student's code on one case with warnings and stderr silenced (nbgrader scores a
    test cell zero if it writes to stderr, and a library warning is no mistake)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return checker.run(obj, case)


def check(name: str, obj: Any, hidden: bool = False, seed: int = 0, isolate: bool = True,
          quiet: bool = False) -> None:
    """Check the student's ``obj`` for exercise ``name``; raise :class:`CheckFailed` with a
    helpful message on the first wrong case.

    Returns None on purpose: nbgrader reads a number shown as a test cell's result as partial
    credit."""
    checker = CHECKERS[name]
    gen = torch.Generator().manual_seed(seed)
    cases = checker.cases(gen, hidden)
    with isolated(checker.uses if isolate else (), namespace_of(obj)):
        for number, case in enumerate(cases, 1):
            where = f"{name}, case {number} of {len(cases)} ({checker.describe(case)})"
            try:
                got = run_case(checker, obj, case)
            except NotImplementedError:
                raise CheckFailed(f"{name} is not implemented yet: replace "
                                  "`raise NotImplementedError()` with your code.") from None
            except Exception as error:  # the student's code crashed: say where and how
                raise CheckFailed(f"{where}: your code raised {type(error).__name__}: {error}"
                                  ) from None
            problems = compare_outputs(checker, got, checker.expected(case))
            if problems:
                message = f"{where}:\n  " + "\n  ".join(problems)
                hint = checker.hint(case, got)
                if hint:
                    message += f"\n  Hint: {hint}"
                raise CheckFailed(message)
    if not quiet:
        extra = " (hidden cases)" if hidden else ""
        print(f"{name}: all {len(cases)} cases passed{extra}.")


# --- helpers for cases ----------------------------------------------------------------------------


def randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=gen) * scale


def randint(gen: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (1,), generator=gen))


def random_mask(gen: torch.Generator, shape: tuple[int, ...], p_allowed: float = 0.7,
                keep_one: bool = True) -> Tensor:
    """A random boolean mask (True = may attend); with ``keep_one`` every query row keeps at
    least its first key so that no row is fully masked."""
    mask = torch.rand(*shape, generator=gen) < p_allowed
    if keep_one:
        mask[..., 0] = True
    return mask


def random_tokens(gen: torch.Generator, batch: int, length: int, pad_id: int,
                  vocab: int = 20) -> Tensor:
    """Token ids (batch, length) in [0, vocab), never ``pad_id`` except in padded tails of
    random length (the first token of each row is always real)."""
    tokens = torch.randint(0, vocab - 1, (batch, length), generator=gen)
    tokens[tokens >= pad_id] += 1  # skip the pad id
    for row in range(batch):
        n = randint(gen, 0, length)
        if n:
            tokens[row, -n:] = pad_id
    return tokens


def close_to(got: Any, expected: Tensor, atol: float = 1e-4) -> bool:
    """Whether a (possibly malformed) answer is close to ``expected``: used by hints."""
    return (isinstance(got, Tensor) and got.shape == expected.shape
            and bool(torch.allclose(got.detach().double(), expected.double(), atol=atol,
                                    equal_nan=True)))


def unpack_pair(result: Any, first: str, second: str) -> dict[str, Any]:
    """Turn a returned (a, b) tuple into {first: a, second: b}, or explain what came back."""
    if isinstance(result, tuple) and len(result) == 2:
        return {first: result[0], second: result[1]}
    return {first: result, second: f"not returned (the function must return ({first}, {second}))"}
