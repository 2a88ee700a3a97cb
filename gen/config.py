"""Generator configuration: a TOML file over documented defaults (gen/default_config.toml)."""
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources

from refree.hw.ddr4.params import DramParams
from refree.hw.engine.datapath import LANE_CHOICES
from refree.hw.engine.params import EngineParams
from refree.hw.engine.stale_set import StaleSetParams
from refree.hw.lrdimm.hot_row_store import HotStoreParams
from refree.hw.lrdimm.regmap import WindowParams

__all__ = ["GeneratorConfig", "load_config", "DEFAULT_CONFIG_TEXT", "WINDOW_KEYS", "package_version"]

#: The keys of ``[window]``: the fields of WindowParams.
WINDOW_KEYS = ("rank", "bg", "ba", "row", "rows")

DEFAULT_CONFIG_TEXT = (resources.files("refree.gen") / "default_config.toml").read_text()


@dataclass(frozen=True)
class GeneratorConfig:
    params: EngineParams
    dim: int
    max_tables: int
    addr_bits: int
    div_lanes: int = 4
    adagrad_lanes: int = 4
    fold_lanes: int = 64
    dram: DramParams = DramParams()
    #: ``[window]`` as written, in WINDOW_KEYS order (``row`` -1: the bank's last rows)
    window: tuple = (0, 3, 3, -1, 1)
    hot: HotStoreParams = HotStoreParams()
    slipstream: StaleSetParams = StaleSetParams()

    def window_params(self):
        """The NMP window on this configuration's ranks, checked against their geometry."""
        w = dict(zip(WINDOW_KEYS, self.window))
        try:
            if w["row"] == -1:
                WindowParams(rows=w["rows"])        # (checked first: the default row needs it)
                w["row"] = self.dram.geometry.rows - w["rows"]
            window = WindowParams(**w)
            window.check(self.dram.ranks, self.dram.geometry)
        except (TypeError, ValueError) as err:
            raise ValueError(f"window: {err}") from None
        return window

    def engine_kwargs(self):
        """Keyword arguments of :class:`refree.hw.engine.engine.Engine`."""
        stale = {"stale": self.slipstream} if self.slipstream.enabled else {}
        return dict(params=self.params, dim=self.dim, max_tables=self.max_tables,
                    addr_bits=self.addr_bits, div_lanes=self.div_lanes, adagrad_lanes=self.adagrad_lanes,
                    fold_lanes=self.fold_lanes, **stale)

    def as_dict(self):
        return {"engine": {"dim": self.dim, "max_tables": self.max_tables, "addr_bits": self.addr_bits,
                           "div_lanes": self.div_lanes, "adagrad_lanes": self.adagrad_lanes,
                           "fold_lanes": self.fold_lanes},
                "parts": {k: getattr(self.params, k) for k in EngineParams.__dataclass_fields__},
                "dram": {k: getattr(self.dram, k) for k in DramParams.__dataclass_fields__},
                "hot": asdict(self.hot), "slipstream": asdict(self.slipstream),
                "window": asdict(self.window_params())}


def _merge(conf, user, where):
    """``user``'s sections over ``conf``'s; unknown sections or keys are errors."""
    for section, values in user.items():
        if section not in conf or not isinstance(values, dict):
            raise ValueError(f"{where}: unknown section [{section}] (known: {', '.join(conf)})")
        for key, value in values.items():
            if key not in conf[section]:
                raise ValueError(f"{where}: unknown parameter {section}.{key} "
                                 f"(known: {', '.join(conf[section])})")
            conf[section][key] = value


def load_config(path=None, overrides=None):
    """Defaults, overridden by the file at `path`, then by ``overrides`` (``{section: {key:
    value}}``, as the file would give them: ``refree sweep``'s grid); unknown sections or
    keys are errors."""
    conf = tomllib.loads(DEFAULT_CONFIG_TEXT)
    if path is not None:
        try:
            with open(path, "rb") as f:
                user = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"configuration {path}: {e}") from None
        _merge(conf, user, f"configuration {path}")
    _merge(conf, overrides or {}, "configuration overrides")
    e = conf["engine"]
    if not isinstance(e["dim"], int) or isinstance(e["dim"], bool) or e["dim"] < 16 or e["dim"] % 16:
        raise ValueError(f"engine.dim must be a positive multiple of 16, not {e['dim']!r}")
    for key, lo, hi in (("max_tables", 1, 255), ("addr_bits", 8, 48)):
        v = e[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"engine.{key} must be an integer in [{lo}, {hi}], not {v!r}")
    for key in ("div_lanes", "adagrad_lanes"):
        if e[key] not in (1, 2, 4, 8, 16) or isinstance(e[key], bool):
            raise ValueError(f"engine.{key} must be 1, 2, 4, 8 or 16, not {e[key]!r}")
    if e["fold_lanes"] not in LANE_CHOICES or isinstance(e["fold_lanes"], bool):
        raise ValueError(f"engine.fold_lanes must be one of {', '.join(map(str, LANE_CHOICES))}, not {e['fold_lanes']!r}")
    try:
        dram = DramParams(**conf["dram"])
    except ValueError as err:
        raise ValueError(f"dram: {err}") from None
    try:
        hot = HotStoreParams(**conf["hot"])
    except ValueError as err:
        raise ValueError(f"hot: {err}") from None
    try:
        slipstream = StaleSetParams(**conf["slipstream"])
        if slipstream.enabled and (conf["parts"]["index_width"] > 48 or e["max_tables"] > 256):
            raise ValueError("a stale set takes index_width <= 48 (the list's rows are 48-bit)")
    except ValueError as err:
        raise ValueError(f"slipstream: {err}") from None
    conf = GeneratorConfig(EngineParams(**conf["parts"]), e["dim"], e["max_tables"], e["addr_bits"],
                           e["div_lanes"], e["adagrad_lanes"], e["fold_lanes"], dram,
                           tuple(conf["window"][k] for k in WINDOW_KEYS), hot, slipstream)
    conf.window_params()        # (fails here, naming the parameter, if it does not fit)
    return conf


def package_version():
    """The installed package's version, else (a checkout run without installing) pyproject's."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("refree")
    except PackageNotFoundError:
        from pathlib import Path
        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return tomllib.load(f)["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown (not installed)"
