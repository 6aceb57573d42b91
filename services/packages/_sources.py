"""The two files of a package that are read, never run: `predict.py` (parsed with
`ast`: a top-level `def run(input_path, output_dir)` or a typed `run`, optionally
`def setup()`) and
`requirements.txt` (normalised as pip reads it, self-contained)."""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterable

from events import InputSchema
from services.packages._signature import read_schema
from services.packages._zipcheck import PackageInvalidError

__all__ = [
    "PREDICT",
    "REQUIREMENTS",
    "check_predict",
    "decode_requirements",
    "normalise_requirements",
]

PREDICT = "predict.py"
REQUIREMENTS = "requirements.txt"


def normalise_requirements(text: str) -> tuple[str, ...]:
    """Requirement lines as pip reads them: continuations joined, comments and blank
    lines dropped, each line stripped. Order is kept (see the module docstring)."""
    joined = re.sub(r"\\\r?\n", "", text.lstrip("\ufeff"))
    lines = (_COMMENT.sub("", line).strip() for line in joined.splitlines())
    result = tuple(line for line in lines if line)
    for line in result:
        if _LOCAL_REF.search(line):
            raise PackageInvalidError(
                f"requirements.txt line {line!r} refers to a local file",
                "List every requirement in requirements.txt itself by name (and version); "
                "includes (-r, -c) and local paths are not supported.",
                reason="requirements_local_reference",
                path=REQUIREMENTS,
            )
    return result


_COMMENT = re.compile(r"(^|\s+)#.*$")  # pip's own rule: '#' at line start or after space
# Includes, local paths and file: URLs, also as a direct reference (`name @ file:...`)
# or an option's value (`--find-links /wheels`): pip reads them on the build host.
_LOCAL_REF = re.compile(
    r"^(-r|-c|--requirement|--constraint"
    r"|(-e|--editable|-f|--find-links|-i|--index-url|--extra-index-url)[\s=]*(\.|/|~|file:)"
    r"|\.|/|~|file:)"
    r"|@\s*file:",
    re.IGNORECASE,
)


def check_predict(source: bytes) -> tuple[bool, InputSchema | None]:
    """Parse predict.py (never import it); require a top-level `def run` that takes
    (input_path, output_dir), or typed inputs (`_signature`). Returns whether a
    top-level `setup` exists, and the typed inputs (None: the legacy form)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences in user code
            tree = ast.parse(source, filename=PREDICT)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        where = f" (line {err.lineno})" if isinstance(err, SyntaxError) and err.lineno else ""
        raise PackageInvalidError(
            f"predict.py does not parse{where}: {err}",
            "Run `python -m py_compile predict.py` locally and fix the error.",
            reason="predict_syntax",
            path=PREDICT,
        ) from err
    defs = {d.name: d for d in _top_level_defs(tree.body)}
    run = defs.get("run")
    if not isinstance(run, ast.FunctionDef):
        what = "is async" if isinstance(run, ast.AsyncFunctionDef) else "is missing"
        raise PackageInvalidError(
            f"predict.py: the top-level function run {what}",
            "Define `def run(input_path, output_dir):` at the top level of predict.py.",
            reason="predict_no_run",
            path=PREDICT,
        )
    schema = read_schema(run, tree)
    if schema is not None:
        return "setup" in defs, schema
    args = run.args
    positional = len(args.posonlyargs) + len(args.args)
    required_kwonly = any(default is None for default in args.kw_defaults)
    if (positional < 2 and args.vararg is None) or required_kwonly:
        raise PackageInvalidError(
            "predict.py: run must accept (input_path, output_dir)",
            "Define `def run(input_path, output_dir):`; extra parameters need defaults.",
            reason="predict_run_signature",
            path=PREDICT,
        )
    return "setup" in defs, None


def _top_level_defs(body: Iterable[ast.stmt]) -> Iterable[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Function definitions at module level, including inside top-level if/try blocks."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node
        elif isinstance(node, ast.If):
            yield from _top_level_defs([*node.body, *node.orelse])
        elif isinstance(node, ast.Try | ast.TryStar):
            handlers = [s for h in node.handlers for s in h.body]
            yield from _top_level_defs([*node.body, *handlers, *node.orelse, *node.finalbody])


def decode_requirements(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PackageInvalidError(
            "requirements.txt is not UTF-8 text",
            "Save requirements.txt as UTF-8 (pip freeze > requirements.txt does).",
            reason="requirements_encoding",
            path=REQUIREMENTS,
        ) from err
