"""The checking machinery shared by every chapter's checkers (the package docstring says how
they are used)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .runtime import (  # noqa: F401  (re-exported for the chapters' checkers)
    DEFAULT_REQUIREMENT,
    CheckFailed,
    ForbiddenCall,
    Missing,
    ModifiedInput,
    close_to,
    code_files,
    compare,
    describe_case,
    describe_tensor,
    failure_message,
    matches,
    namespace_of,
    requirement_of,
    run_watched,
    unpack_pair,
)
from .runtime import (
    compare_outputs as compare_values,
)

__all__ = ["check", "CheckFailed", "CHECKERS", "Checker", "compare"]

CHECKERS: dict[str, Checker] = {}


def register(cls: type[Checker]) -> type[Checker]:
    CHECKERS[cls.name] = cls()
    return cls


class Checker:
    """The logic of one exercise's tests.

    ``name`` is the name the student defines ("softmax"), or "Class.method" for a method.
    ``uses`` lists other exercises the student's code calls; at grading they are swapped for
    the ``oracle`` of their checker while this one runs, so that one mistake costs points in
    one place. ``forbidden`` names the PyTorch functions or modules the exercise asks the
    student to write without (e.g. ``"torch.softmax"``; ``"torch.nn.functional.cross_entropy
    (label_smoothing)"`` forbids only that keyword); using one costs the exercise's points.

    Every case may say which of the exercise's stated requirements it checks
    (``case["requirement"]``, default ``"values"``): the visible cases cover every
    requirement, the hidden ones re-check the same requirements on other shapes and values,
    and a grade gives each requirement an equal share of the exercise's points.
    """

    name: str = ""
    uses: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    #: how the notebook names ``forbidden`` (when the list itself is long)
    forbidden_text: str = ""
    #: requirement -> what to think about when a case of it fails and no known mistake matches
    advice: dict[str, str] = {}
    atol: float = 1e-5
    rtol: float = 1e-4

    def cases(self, gen: torch.Generator, hidden: bool) -> list[dict[str, Any]]:
        """Inputs to try: visible cases are small and few; hidden ones re-check the same
        requirements with other shapes and values. Values are tensors, ints, floats, bools or
        strings (so that the grader can save them without pickle)."""
        raise NotImplementedError

    def run(self, obj: Any, case: dict[str, Any]) -> dict[str, Any]:
        """Call the student's ``obj`` on ``case``; return its outputs by name, unchecked.
        (Copied into student notebooks: it must not compute a right answer.)"""
        raise NotImplementedError

    def expected(self, case: dict[str, Any]) -> dict[str, Any]:
        """The right outputs for ``case``, computed with PyTorch's own functions."""
        raise NotImplementedError

    def mistakes(self, case: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Known mistakes as (hint, the outputs that mistake gives on ``case``). Student
        notebooks carry these outputs for their visible cases, so that they can name the
        mistake without holding any code that computes a right answer."""
        return []

    def symptom(self, case: dict[str, Any], got: dict[str, Any]) -> str | None:
        """A hint read from the answer alone (NaN where none belongs, a wrong rank...), or
        None. (Copied into student notebooks: it must not compute a right answer.)"""
        return None

    def hint(self, case: dict[str, Any], got: dict[str, Any]) -> str | None:
        """A guess at the mistake behind a wrong answer, or None."""
        for hint, outputs in self.mistakes(case):
            if matches(got, outputs, self.atol):
                return hint
        return self.symptom(case, got) or self.advice.get(requirement_of(case))

    def describe(self, case: dict[str, Any]) -> str:
        """A short description of a case for messages."""
        return describe_case(case)

    def requirements(self) -> list[str]:
        """The requirements the visible cases check, in order."""
        cases = self.cases(torch.Generator().manual_seed(0), hidden=False)
        return list(dict.fromkeys(requirement_of(case) for case in cases))

    @property
    def oracle(self) -> Callable:
        """A PyTorch-based stand-in for the student's object, used while checking others."""
        raise NotImplementedError(f"no oracle for {self.name}")


def distinct(checker: Checker, case: dict, found: list[tuple[str, dict]]
             ) -> list[tuple[str, dict]]:
    """The known mistakes whose outputs on ``case`` differ from the right ones (a mistake
    that changes nothing here must not name the fault of another wrong answer)."""
    right = checker.expected(case)
    return [(hint, outputs) for hint, outputs in found
            if not matches(right, outputs, checker.atol)]


def compare_outputs(checker: Checker, got: dict[str, Any], expected: dict[str, Any]
                    ) -> list[str]:
    """What is wrong in ``got`` (nothing: an empty list), with the checker's tolerances."""
    return compare_values(got, expected, checker.atol, checker.rtol)


# --- running a check ----------------------------------------------------------------------------


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


def trusted_files(namespace: dict[str, Any] | None, provided: list[str]) -> set[str]:
    """The cells that hold provided code in ``namespace`` (their calls are not the
    student's)."""
    if not namespace:
        return set()
    return code_files([namespace[name] for name in provided if name in namespace])


def run_case(checker: Checker, obj: Any, case: dict[str, Any],
             trusted: set[str] | None = None) -> dict[str, Any]:
    """Run the student's code on one case (see :func:`runtime.run_watched`)."""
    return run_watched(checker.run, obj, case, checker.forbidden, trusted)


def check(name: str, obj: Any, hidden: bool = False, seed: int = 0, isolate: bool = True,
          quiet: bool = False, provided: list[str] | tuple[str, ...] = ()) -> None:
    """Check the student's ``obj`` for exercise ``name``; raise :class:`CheckFailed` with a
    helpful message on the first wrong case. (The instructor's and the tests' entry point;
    students run the frozen visible cases of :mod:`coursetools.student`.)

    Returns None on purpose: nbgrader reads a number shown as a test cell's result as partial
    credit."""
    checker = CHECKERS[name]
    gen = torch.Generator().manual_seed(seed)
    cases = checker.cases(gen, hidden)
    namespace = namespace_of(obj)
    trusted = trusted_files(namespace, list(provided))
    with isolated(checker.uses if isolate else (), namespace):
        for number, case in enumerate(cases, 1):
            failure = judge_case(checker, obj, case, trusted)
            if failure is not None:
                kind, problems, hint = failure
                if kind == "not implemented":
                    raise CheckFailed(f"{name} is not implemented yet: replace "
                                      "`raise NotImplementedError()` with your code.")
                raise CheckFailed(failure_message(name, number, len(cases), case, problems,
                                                  hint))
    if not quiet:
        extra = " (hidden cases)" if hidden else ""
        print(f"{name}: all {len(cases)} cases passed{extra}.")


def judge_case(checker: Checker, obj: Any, case: dict[str, Any], trusted: set[str] | None = None
               ) -> tuple[str, list[str], str | None] | None:
    """None if the student's code gets ``case`` right, else (kind, problems, hint), kind being
    "not implemented", "forbidden", "raised" or "wrong"."""
    try:
        got = run_case(checker, obj, case, trusted)
    except NotImplementedError:
        return "not implemented", [], None
    except (ForbiddenCall, ModifiedInput) as error:
        return "forbidden" if isinstance(error, ForbiddenCall) else "modified input", \
            [str(error)], None
    except Exception as error:  # the student's code crashed: say how
        return "raised", [f"your code raised {type(error).__name__}: {error}"], None
    if not isinstance(got, dict):
        return "raised", ["the check could not read your outputs"], None
    problems = compare_outputs(checker, got, checker.expected(case))
    if problems:
        return "wrong", problems, checker.hint(case, got)
    return None


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
