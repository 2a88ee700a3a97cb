"""``refree train``: a small DLRM-style model on MovieLens whose embedding tables the project's
step trains, to measure what a mode (and, later, skipping stale updates) does to the model.

Data (:func:`refree.golden.traces.movielens_samples`): the rating events of the bundled
MovieLens ``ml-latest-small`` in time order; label: rating >= 4.0; sparse features: the
user's previous rated movies (a bag of at most 20), the user, the movie rated; the first
80 % of samples by time train, the last 20 % are held out (``test_samples`` of them, from
the split on, are scored).

Model: three embedding tables of ``dim`` floats (sum pooling); the dense part in PyTorch on
the CPU: the three pooled vectors and their three pairwise dot products -> Linear(3D + 3,
hidden) -> ReLU -> Linear(hidden, 1): a logit; binary cross-entropy, the batch's mean.

A step (a batch of ``batch_size`` consecutive training samples): the pooled outputs by the
project's golden model in ``mode`` (:func:`refree.golden.model.forward`, the engine's part
limits); the dense part's forward and backward in PyTorch, which hands back the gradient of
the loss with respect to the pooled outputs; the project's step updates the tables with SGD
at ``lr`` (:func:`refree.golden.model.step`; the engine computes the same bits, see the
README), the dense part takes Adam at ``dense_lr``.  Mode ``torch`` is the reference: the
same model with ``nn.EmbeddingBag(mode="sum", sparse=True)`` and ``torch.optim.SGD`` on the
tables, from the same initial tables, dense weights and batches.

Seeded and deterministic (one torch thread).  Reports, per epoch: the training loss, the
held-out ROC-AUC and log loss.

The RTL (``rtl_steps`` N, a configuration ``rtl_config``): the last N steps of the first
epoch also run on the engine's generated Verilog (:func:`refree.gen.rtl.rtl_step`: the
buffer chip on DDR4, a chip build of its own for D), each compared bit for bit with the
golden step (the pooled outputs and the updated tables), with Slipstream's stale rows as the
engine's stale set (``[slipstream] entries``; by default 8,192 in 8 ways, which holds the
stale rows of a hot set of 256 KiB at D = 16, 4,096 rows); the training goes on with the
tables that both computed.  Each RTL step's counters are recorded (``result["rtl"]``):
the cycles of its jobs, the DRAM beats of its backward job and the lookups it skipped.
"""
import time

import numpy as np

from refree.golden.model import forward, plan_batch, step
from refree.golden.planner import PartLimits
from refree.golden.traces import movielens_sample_count, movielens_samples

__all__ = ["TRAIN_MODES", "TrainConfig", "train", "roc_auc", "log_loss"]

TRAIN_MODES = ("baseline", "dedup", "refree", "torch")
POOLINGS = ["sum", "sum", "sum"]


class TrainConfig:
    """The run's parameters (see the module docstring).  Defaults, by measurement (mode
    ``torch``, one epoch, held-out AUC): the tables' SGD ``lr`` 20 (the loss is the batch's
    mean, so a row's gradient is about 1/B of a sample's: lr 5 gave 0.587 after 300 steps,
    20 0.605; one epoch at 20 0.675, at 10 0.673), Adam at 3e-3 for the dense part (1e-2:
    0.596 after 300 steps), tables drawn from N(0, 0.05^2); D = 16 and a hidden layer of 32
    keep an epoch of the golden model within a minute on one core; one epoch (a second one
    overfits: the held-out AUC falls, 0.675 -> 0.674, and the log loss rises)."""

    def __init__(self, mode="refree", epochs=1, batch_size=128, dim=16, hidden=32, lr=20.0, dense_lr=3e-3,
                 init_scale=0.05, seed=0, max_steps=None, test_samples=None, limits=None, skip=None,
                 skip_window=None, rtl_steps=0, rtl_config=None):
        if mode not in TRAIN_MODES:
            raise ValueError(f"mode must be one of {', '.join(TRAIN_MODES)}, not {mode!r}")
        for name, v in (("epochs", epochs), ("batch_size", batch_size), ("dim", dim), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not lr > 0 or not dense_lr > 0:
            raise ValueError("lr and dense_lr must be positive")
        for name, v in (("seed", seed), ("max_steps", max_steps), ("test_samples", test_samples)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1)):
                raise ValueError(f"{name} must be a " + ("non-negative" if name == "seed" else "positive")
                                 + f" integer, not {v!r}")
        self.mode, self.epochs, self.batch_size, self.dim, self.hidden = mode, epochs, batch_size, dim, hidden
        self.lr, self.dense_lr, self.init_scale, self.seed = lr, dense_lr, init_scale, seed
        self.max_steps, self.test_samples = max_steps, test_samples
        self.limits = limits or PartLimits()
        if skip is not None and (mode == "torch" or not 0 <= skip < 1):
            raise ValueError(f"skipping stale updates takes the project's step and a fraction in [0, 1), "
                             f"not {skip!r} in mode {mode}")
        self.skip, self.skip_window = skip, skip_window     # (Slipstream: golden/slipstream.py)
        if isinstance(rtl_steps, bool) or not isinstance(rtl_steps, int) or rtl_steps < 0:
            raise ValueError(f"rtl_steps must be a non-negative integer, not {rtl_steps!r}")
        if rtl_steps and mode == "torch":
            raise ValueError("the RTL runs the project's step, not mode torch")
        self.rtl_steps = rtl_steps
        self.rtl_config = rtl_config        # (a path, or None: the default configuration)

    def chip(self):
        """The configuration of the RTL steps: ``rtl_config``'s, with a stale set of 8,192
        entries in 8 ways when Slipstream skips and it has none."""
        from .config import load_config
        conf = load_config(self.rtl_config)
        if self.skip is not None and not conf.slipstream.enabled:
            conf = load_config(self.rtl_config, overrides={"slipstream": {"entries": 8192, "ways": 8}})
        return conf


def roc_auc(scores, labels):
    """The area under the ROC curve (ties counted half), by ranks."""
    from scipy.stats import rankdata
    labels = np.asarray(labels, bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(probs, labels):
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _dense(torch, cfg):
    torch.manual_seed(cfg.seed)
    D = cfg.dim
    return torch.nn.Sequential(torch.nn.Linear(3 * D + 3, cfg.hidden), torch.nn.ReLU(),
                               torch.nn.Linear(cfg.hidden, 1))


def _logits(torch, net, pooled, D):
    """The dense part on pooled outputs (B, 3D): the vectors and their pairwise dots."""
    e = [pooled[:, k * D:(k + 1) * D] for k in range(3)]
    dots = torch.stack([(e[i] * e[j]).sum(1) for i, j in ((0, 1), (0, 2), (1, 2))], 1)
    return net(torch.cat([pooled, dots], 1)).squeeze(1)


class _ProjectTables:
    """The tables trained by the project's golden step in one mode; with ``slip``
    (:class:`refree.golden.slipstream.Slipstream`) the stale rows' updates are skipped."""

    def __init__(self, tables, cfg, slip=None):
        self.tables, self.cfg, self.slip = tables, cfg, slip
        self.on_rtl, self.rtl, self.chip = False, [], cfg.chip() if cfg.rtl_steps else None
        self.last_pooled = None
        if slip is not None:
            slip.begin(tables)

    def pooled(self, batch):
        plans = plan_batch(batch, POOLINGS, self.cfg.limits)
        with np.errstate(all="ignore"):
            self.last_pooled = forward(self.tables, batch, POOLINGS, self.cfg.mode, plans)
        return self.last_pooled

    def update(self, batch, grad):
        stale = None
        if self.slip is not None:           # (the step skips them: no merge, no write)
            self.slip.count_updates(batch)
            stale = self.slip.stale_rows([E.shape[0] for E in self.tables])
        if self.on_rtl:
            stale = self._rtl_step(batch, grad, stale)
        res = step(self.tables, batch, grad, self.cfg.lr, mode=self.cfg.mode, limits=self.cfg.limits, stale=stale)
        if self.on_rtl:
            got = self.rtl[-1].pop("tables")
            for t, (g, w) in enumerate(zip(got, res.tables)):
                if not np.array_equal(g.view(np.uint32), w.view(np.uint32)):
                    raise AssertionError(f"RTL step {len(self.rtl)}: table {t} differs from the golden step")
        if self.slip is not None:
            self.slip.end_step(res.tables)
        self.tables = res.tables

    def _rtl_step(self, batch, grad, stale):
        """The step on the RTL (the chip's pooled outputs against the golden forward's); its
        record; returns the stale rows that the chip's set held (the golden step's)."""
        from .rtl import rtl_step
        got, counters = rtl_step(self.tables, batch, grad, self.cfg.lr, self.cfg.mode, self.chip,
                                 poolings=POOLINGS, stale=stale)
        if not np.array_equal(got.pooled.view(np.uint32), self.last_pooled.view(np.uint32)):
            raise AssertionError(f"RTL step {len(self.rtl) + 1}: the pooled outputs differ from the golden forward")
        bwd = counters["backward"]
        kept = counters.get("stale_rows")
        self.rtl.append({"forward_cycles": counters["forward"]["cycles"], "backward_cycles": bwd["cycles"],
                         "backward_table_beats": bwd["table_reads"] + bwd["table_writes"],
                         "stale_skipped": bwd.get("stale_skipped", 0),
                         "stale_rows_skipped": bwd.get("stale_rows_skipped", 0),
                         "stale_load_cycles": bwd.get("stale_load_cycles", 0),
                         "stale_left_out": 0 if stale is None else int(sum(s.sum() - k.sum()
                                                                           for s, k in zip(stale, kept))),
                         "tables": got.tables})
        return kept


class _TorchTables:
    """The reference: nn.EmbeddingBag(sum, sparse) and torch.optim.SGD."""

    def __init__(self, torch, tables, cfg):
        self.torch = torch
        self.bags = [torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(E.copy()), freeze=False, mode="sum",
                                                           sparse=True) for E in tables]
        self.opt = torch.optim.SGD([p for b in self.bags for p in b.parameters()], lr=cfg.lr)
        self.out = None

    def _forward(self, batch):
        torch, outs = self.torch, []
        for t, bag in enumerate(self.bags):
            idx, offs, _ = batch.table_slice(t)
            outs.append(bag(torch.from_numpy(idx.astype(np.int64)), torch.from_numpy((offs - offs[0])[:-1].astype(np.int64))))
        return torch.cat(outs, 1)

    def pooled(self, batch):
        with self.torch.no_grad():
            return self._forward(batch).numpy()

    def update(self, batch, grad):
        self.opt.zero_grad()
        self._forward(batch).backward(self.torch.from_numpy(grad))
        self.opt.step()

    @property
    def tables(self):
        return [b.weight.detach().numpy().copy() for b in self.bags]


def train(cfg, out=lambda line: None):
    """Train as the module docstring says; returns ``{"epochs": [{"epoch", "steps",
    "train_loss", "test_auc", "test_log_loss", "seconds"}], "tables": final tables}``;
    ``out`` takes a line per epoch."""
    import torch
    torch.set_num_threads(1)
    n = movielens_sample_count()
    split = int(0.8 * n)
    B, D = cfg.batch_size, cfg.dim
    rng = np.random.default_rng(cfg.seed)
    held_out = min(n - split, cfg.test_samples or n - split)
    rows = movielens_samples(0, 1)[0].num_rows
    tables = [(cfg.init_scale * rng.standard_normal((r, D))).astype(np.float32) for r in rows]
    steps_per_epoch = split // B
    if steps_per_epoch == 0:
        raise ValueError(f"a batch of {B} is more than the {split} training samples")
    if cfg.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    slip = None
    if cfg.skip is not None:                # the hot set: FAE's profile of the training inputs
        from refree.golden.slipstream import DEFAULT_WINDOW, Slipstream
        profiled = [movielens_samples(k * B, B)[0].batch for k in range(steps_per_epoch)]
        slip = Slipstream(profiled, rows, D, cfg.skip, window=cfg.skip_window or DEFAULT_WINDOW, seed=cfg.seed)
    emb = _TorchTables(torch, tables, cfg) if cfg.mode == "torch" else _ProjectTables(tables, cfg, slip)
    net = _dense(torch, cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.dense_lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    history = []
    for epoch in range(cfg.epochs):
        t0, losses = time.perf_counter(), []
        for k in range(steps_per_epoch):
            if isinstance(emb, _ProjectTables):     # (the RTL: the first epoch's last rtl_steps)
                emb.on_rtl = epoch == 0 and k >= steps_per_epoch - cfg.rtl_steps
            trace, labels = movielens_samples(k * B, B)
            pooled = torch.from_numpy(emb.pooled(trace.batch)).requires_grad_(True)
            loss = loss_fn(_logits(torch, net, pooled, D), torch.from_numpy(labels.astype(np.float32)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            emb.update(trace.batch, pooled.grad.numpy().astype(np.float32))
            losses.append(float(loss.detach()))
        probs, test_labels = _predict(torch, net, emb, split, held_out, B, D)
        rec = {"epoch": epoch + 1, "steps": steps_per_epoch, "train_loss": float(np.mean(losses)),
               "test_auc": roc_auc(probs, test_labels), "test_log_loss": log_loss(probs, test_labels),
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        out(f"epoch {rec['epoch']}: {rec['steps']} steps, training loss {rec['train_loss']:.4f}, held-out "
            f"AUC {rec['test_auc']:.4f}, log loss {rec['test_log_loss']:.4f} ({rec['seconds']:.1f} s)")
    return {"epochs": history, "tables": emb.tables, "slipstream": slip.report(D) if slip is not None else None,
            "rtl": emb.rtl if isinstance(emb, _ProjectTables) else []}


def _predict(torch, net, emb, first, count, B, D):
    """Probabilities and labels of samples ``[first, first + count)``, B at a time."""
    probs, labels = [], []
    with torch.no_grad():
        for lo in range(first, first + count, B):
            trace, y = movielens_samples(lo, min(B, first + count - lo))
            pooled = torch.from_numpy(emb.pooled(trace.batch))
            probs.append(torch.sigmoid(_logits(torch, net, pooled, D)).numpy())
            labels.append(y)
    return np.concatenate(probs), np.concatenate(labels)


def _rtl_figures(rtl, window):
    """A run's RTL steps summed up: their count, the mean backward cycles a step as measured
    (each RTL step a simulation of its own, so its backward job loads the stale set) and
    with the set loaded once a ``window`` (the job's cycles less its load, plus the load's
    cycles / window: the set stays on chip from job to job and Slipstream's changes only at
    a window's end), the load's cycles, the DRAM table beats, the stale lookups and rows
    skipped a step."""
    if not rtl:
        return {"rtl_steps": 0}
    mean = lambda key: float(np.mean([r[key] for r in rtl]))
    return {"rtl_steps": len(rtl), "rtl_backward_cycles_measured": mean("backward_cycles"),
            "rtl_stale_load_cycles": mean("stale_load_cycles"),
            "rtl_backward_cycles": float(np.mean([r["backward_cycles"] - r["stale_load_cycles"] * (1 - 1 / window)
                                                  for r in rtl])),
            "rtl_backward_table_beats": mean("backward_table_beats"), "rtl_stale_skipped": mean("stale_skipped"),
            "rtl_stale_rows_skipped": mean("stale_rows_skipped"),
            "rtl_stale_left_out": sum(r["stale_left_out"] for r in rtl)}


def slipstream_report(targets, out_dir, command, out=print, **config):
    """Train once with PyTorch's tables (the reference), once exactly (the project's step,
    ``config``'s mode), and once per skip target; write ``report.md``, ``report.json`` and
    ``slipstream.png`` (held-out AUC and log loss against the fraction of row updates
    skipped) into ``out_dir``; returns the runs."""
    import json
    import os
    from refree.golden.slipstream import DEFAULT_WINDOW
    runs = []
    for name, kw in ([("PyTorch (nn.EmbeddingBag + SGD)", {"mode": "torch", "rtl_steps": 0}), ("exact (no skipping)", {})]
                     + [(f"skip target {t:g}", {"skip": t}) for t in targets]):
        cfg = TrainConfig(**{**config, **kw})
        res = train(cfg)
        last = res["epochs"][-1]
        slip = res["slipstream"] or {}
        steps = sum(e["steps"] for e in res["epochs"])
        runs.append({"run": name, "mode": cfg.mode, "target": kw.get("skip"), "auc": last["test_auc"],
                     "log_loss": last["test_log_loss"], "steps": steps, "dim": cfg.dim,
                     "threshold": slip.get("threshold"), "skip_fraction": slip.get("skip_fraction", 0.0),
                     "hot_skip_fraction": slip.get("hot_skip_fraction", 0.0),
                     "skipped_updates": slip.get("skipped_updates", 0),
                     "beats_saved_per_step": slip.get("beats_saved", 0) / steps,
                     **_rtl_figures(res["rtl"], cfg.skip_window or DEFAULT_WINDOW)})
        out(f"{name}: AUC {last['test_auc']:.4f}, log loss {last['test_log_loss']:.4f}, "
            f"skipped {runs[-1]['skip_fraction']:.1%} of the row updates")
    os.makedirs(out_dir, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    pts = [r for r in runs if r["mode"] != "torch"]
    for ax, key, label in ((a1, "auc", "held-out ROC-AUC"), (a2, "log_loss", "held-out log loss")):
        ax.plot([r["skip_fraction"] for r in pts], [r[key] for r in pts], "-o", label="the project's step")
        ax.axhline(runs[0][key], color="grey", ls="--", label="PyTorch reference")
        ax.set_xlabel("row updates skipped (fraction)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "slipstream.png"), dpi=100)
    plt.close(fig)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump({"command": command, "runs": runs}, f, indent=1)
    lines = ["# Skipping stale updates (Slipstream): model quality against updates skipped", "", "Made by:", "",
             "```", command, "```", "",
             f"MovieLens, {runs[0]['steps']} batches of the first 80 % of samples by time, the last 20 % held out "
             "(`refree train`, gen/train.py); the stale rows by golden/slipstream.py (hot rows: FAE's profile; "
             "a window of W batches; T by a binary search on a sample of the hot rows for the target). "
             "Skipped updates are row updates (a distinct row's read-modify-write of a batch) not done, as a "
             "fraction of all row updates and of the hot rows' (the candidates; the target is of these, at the "
             "first window's end, and the stale set grows after it); "
             "the beats saved are their DRAM reads and writes (2 x D/16 beats each: D = "
             f"{runs[0]['dim']}), over the run.", ""]
    exact = runs[1]
    if exact["rtl_steps"]:
        lines += [f"On the chip (the RTL of the buffer chip, one DDR4-2400 rank, the engine's stale set as "
                  f"Slipstream's stale rows): the last {exact['rtl_steps']} steps of each run also ran on the "
                  "generated Verilog, every one bit for bit the golden step's (pooled outputs and tables); the "
                  "backward job's cycles and DRAM table beats a step on those batches, and the saving against "
                  "the exact run's on the same batches (its baseline: the same mode without skipping). "
                  "Each RTL step is a simulation of its own, so its backward job loads the stale set (the "
                  "load's cycles: a clear of the set, a set a cycle, then an entry a cycle); the set stays on "
                  "the chip from job to job (tests/test_lrdimm_stale.py) and Slipstream's changes only at a "
                  "window's end, so the cycles a step count the load once a window (the job's cycles less "
                  "its load, plus the load / W); as measured, with a load every step, in brackets. "
                  "Slipstream skips updates only: the forward job is not shown.", ""]
    rtl_head = (" | RTL backward cycles a step (a load every step) | saved | the load | RTL table beats a step "
                "| stale lookups (rows) skipped a step") if exact["rtl_steps"] else ""
    lines += ["| run | target | T | updates skipped | of the hot rows' | beats saved a step | held-out AUC | log loss"
              + rtl_head + " |", "|---" * (8 + 5 * bool(rtl_head)) + "|"]
    for r in runs:
        rtl = ""
        if rtl_head:
            rtl = (" | - | - | - | - | -" if not r["rtl_steps"] else
                   f" | {r['rtl_backward_cycles']:,.0f} ({r['rtl_backward_cycles_measured']:,.0f})"
                   f" | {1 - r['rtl_backward_cycles'] / exact['rtl_backward_cycles']:.1%}"
                   f" | {r['rtl_stale_load_cycles']:,.0f}"
                   f" | {r['rtl_backward_table_beats']:,.0f} | {r['rtl_stale_skipped']:,.0f} "
                   f"({r['rtl_stale_rows_skipped']:,.0f})")
        lines.append(f"| {r['run']} | {'-' if r['target'] is None else r['target']} | "
                     f"{'-' if r['threshold'] is None else format(r['threshold'], '.4g')} | "
                     f"{r['skip_fraction']:.1%} | {r['hot_skip_fraction']:.1%} | {r['beats_saved_per_step']:,.0f} | "
                     f"{r['auc']:.4f} | "
                     f"{r['log_loss']:.4f}{rtl} |")
    lines += ["", "![AUC and log loss against the updates skipped](slipstream.png)", ""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))
    return runs
