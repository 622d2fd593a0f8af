"""Execute notebooks' code cells in one Python process and save their outputs, without Jupyter.

    python notebooks/execute.py notebooks/*.ipynb                    # run at full size, save the outputs
    HLM_JAX_QUICK=1 python notebooks/execute.py --check notebooks/*.ipynb   # reduced sizes, nothing saved

Each notebook runs with its own folder as working directory and a fresh namespace, as a kernel would:
printed text becomes stream outputs, a cell's last expression its result (with `_repr_html_` when the
object has one; none after a trailing semicolon), warnings a stderr stream, and every open matplotlib figure a PNG. The first error stops
the notebook and is raised with the cell's number.
"""
from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import io
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

FIGURE_DPI = 72


class NotebookError(RuntimeError):
    """A cell raised: the message names the notebook, the cell and the exception."""


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _rich(value) -> dict:
    data = {"text/plain": _lines(repr(value))}
    if hasattr(value, "_repr_html_"):
        html = value._repr_html_()
        if html:
            data["text/html"] = _lines(html)
    return data


def _figures() -> list[dict]:
    out = []
    for number in plt.get_fignums():
        buffer = io.BytesIO()
        plt.figure(number).savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
        out.append({"output_type": "display_data", "metadata": {},
                    "data": {"image/png": base64.b64encode(buffer.getvalue()).decode(), "text/plain": ["<Figure>"]}})
    plt.close("all")
    return out


def run_cell(source: str, namespace: dict, count: int) -> list[dict]:
    """Outputs of one code cell run in `namespace` (as Jupyter's nbformat v4 output dicts)."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    stdout, stderr = io.StringIO(), io.StringIO()
    displayed: list[dict] = []
    namespace["display"] = lambda obj: displayed.append({"output_type": "display_data", "metadata": {},
                                                         "data": _rich(obj)})
    value = None
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        warnings.simplefilter("default")
        exec(compile(tree, f"<cell {count}>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), f"<cell {count}>", "eval"), namespace)
    outputs = []
    if stdout.getvalue():
        outputs.append({"output_type": "stream", "name": "stdout", "text": _lines(stdout.getvalue())})
    messages = stderr.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    if messages:
        outputs.append({"output_type": "stream", "name": "stderr", "text": _lines(messages)})
    outputs += displayed
    quiet = source.rstrip().endswith(";")  # as IPython: a trailing semicolon hides the result
    if value is not None and not quiet and not isinstance(value, Figure):
        outputs.append({"output_type": "execute_result", "execution_count": count, "metadata": {},
                        "data": _rich(value)})
    return outputs + _figures()


def execute(path: Path, save: bool = True) -> dict:
    """Run every code cell of the notebook at `path` (cwd: its folder); save the outputs when `save`."""
    path = Path(path).resolve()
    notebook = json.loads(path.read_text())
    namespace = {"__name__": "__main__"}
    previous = os.getcwd()
    os.chdir(path.parent)
    try:
        count = 0
        for index, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] != "code":
                continue
            count += 1
            try:
                cell["outputs"] = run_cell("".join(cell["source"]), namespace, count)
            except Exception as exc:
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                raise NotebookError(f"{path.name}, cell {index} (code cell {count}): {detail}") from exc
            cell["execution_count"] = count
    finally:
        os.chdir(previous)
        plt.close("all")
    if save:
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return notebook


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--check", action="store_true", help="run without saving the outputs")
    args = parser.parse_args(argv)
    for name in args.notebooks:
        execute(Path(name), save=not args.check)
        print(f"ran {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
