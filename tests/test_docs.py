"""The documentation site's structure, without building it (CI builds it: ``sphinx-build -W``).

Checks that every page is reachable from a toctree, that the API pages cover the public packages
and every kernel / target-family module and name only modules that import, that every executed
tutorial checks something, that the pages kept out of execution still have their reason, and that
the method guide cites every checked-in benchmark result.
"""
from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest

import samplax

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# The packages the API reference documents (issue 14): module -> its page.
API_PAGES = {
    "samplax": "api/samplax.rst",
    "samplax.targets": "api/targets.rst",
    "samplax.mcmc": "api/mcmc.rst",
    "samplax.smc": "api/smc.rst",
    "samplax.diffusion": "api/diffusion.rst",
    "samplax.diffusion.guidance": "api/guidance.rst",
    "samplax.diffusion.inverse": "api/inverse.rst",
    "samplax.run": "api/run.rst",
    "samplax.neural": "api/neural.rst",
}
DIRECTIVE = re.compile(r"^\.\. (automodule|autofunction|autoclass|autodata)::\s*(\S+)", re.M)


def _pages():
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*")
                  if p.suffix in (".md", ".rst") and "_build" not in p.parts)


def _toctree_entries(page: str) -> list:
    text = (DOCS / page).read_text()
    base = pathlib.PurePosixPath(page).parent
    entries = []
    for block in re.findall(r"```\{toctree\}\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                entries.append((base / line).as_posix())
    return entries


def _resolve(entry: str) -> str:
    for suffix in (".md", ".rst"):
        if (DOCS / (entry + suffix)).exists():
            return entry + suffix
    raise AssertionError(f"toctree entry {entry!r} names no page under docs/")


def _conf_value(name: str):
    tree = ast.parse((DOCS / "conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"docs/conf.py defines no {name}")


def _directives(page: str) -> list:
    return DIRECTIVE.findall((DOCS / page).read_text())


def test_every_page_is_in_a_toctree():
    reached, todo = set(), ["index.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        todo.extend(_resolve(e) for e in _toctree_entries(page))
    missing = sorted(set(_pages()) - reached)
    assert not missing, f"pages in no toctree (Sphinx would warn, and -W fails the build): {missing}"
    assert "architecture.md" in reached and "api/index.md" in reached


def test_api_pages_cover_the_public_packages():
    api_index = {_resolve(e) for e in _toctree_entries("api/index.md")}
    for module, page in API_PAGES.items():
        assert page in api_index, f"{page} is not in the API reference's toctree"
        documented = [target for kind, target in _directives(page) if kind == "automodule"]
        assert documented and documented[0] == module, f"{page} must start with automodule {module}"
    # every subpackage samplax exports is documented
    for name in samplax.__all__:
        obj = getattr(samplax, name)
        if type(obj).__name__ == "module":
            assert obj.__name__ in API_PAGES, f"samplax.{name} has no API page"


def test_api_directives_name_existing_objects():
    for page in _pages():
        if not page.startswith("api/"):
            continue
        for kind, target in _directives(page):
            if kind == "automodule":
                importlib.import_module(target)
                continue
            module, _, attr = target.rpartition(".")
            assert hasattr(importlib.import_module(module), attr), f"{page}: {kind} {target} does not exist"


def test_every_kernel_and_target_family_module_is_documented():
    mcmc_modules = {t for k, t in _directives("api/mcmc.rst") if k == "automodule"}
    for name in samplax.mcmc.kernel_names():
        module = samplax.mcmc.get_kernel(name).module
        assert module in mcmc_modules, f"kernel {name!r} ({module}) is missing from docs/api/mcmc.rst"
    target_modules = {t for k, t in _directives("api/targets.rst") if k == "automodule"}
    for name in samplax.targets.names():
        module = samplax.targets.TARGETS.get(name).__module__
        assert module in target_modules, f"target {name!r} ({module}) is missing from docs/api/targets.rst"


def _code_cells(page: str) -> list:
    return re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_every_executed_tutorial_checks_a_result():
    not_executed = _conf_value("NOT_EXECUTED")
    assert _conf_value("nb_execution_mode") in ("force", "cache")
    notebooks = [p for p in _pages() if p.endswith(".md") and (DOCS / p).read_text().startswith(
        "---\nfile_format: mystnb")]
    tutorials = [p for p in notebooks if p.startswith("tutorials/")]
    assert {"tutorials/getting_started.md", "tutorials/logz.md", "tutorials/diffusion.md",
            "tutorials/numpyro_pymc.md"} <= set(tutorials)
    for page in tutorials:
        cells = _code_cells(page)
        assert cells, f"{page} has no code cell"
        if page not in not_executed:
            assert any(re.search(r"^\s*assert ", c, re.M) for c in cells), (
                f"{page} is executed but checks nothing: add a cell that asserts a computed value")


def test_pages_kept_out_of_execution_still_need_to_be():
    not_executed = _conf_value("NOT_EXECUTED")
    for page, reason in not_executed.items():
        assert (DOCS / page).exists(), f"NOT_EXECUTED names a missing page {page}"
        assert reason.strip(), f"NOT_EXECUTED[{page!r}] gives no reason"
    if hasattr(samplax, "from_numpyro") and hasattr(samplax, "from_pymc"):
        assert "tutorials/numpyro_pymc.md" not in not_executed, (
            "samplax.from_numpyro / from_pymc exist now: delete the tutorial's NOT_EXECUTED entry in "
            "docs/conf.py (so the build runs it) and add numpyro and pymc to the docs extra")


def test_method_guide_cites_every_benchmark_result():
    text = (DOCS / "choosing_a_method.md").read_text()
    for result in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        assert result.name in text, f"docs/choosing_a_method.md does not use benchmarks/results/{result.name}"


def test_docs_extra_and_build_command():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0] for r in extras["docs"]}
    assert {"sphinx", "myst-nb", "ipykernel"} <= names
    command = "sphinx-build -W --keep-going -b html docs docs/_build/html"
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text()
