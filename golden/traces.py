"""Trace sources: the batches that the golden model, the analyzer and the testbenches run on.

Every source returns a :class:`Trace`, a :class:`~refree.golden.batch.Batch` in the TBE
layout together with the number of rows of each table it indexes, so that a caller can
build tables that fit the batch.

Sources
-------
uniform
    Every lookup picks a row of its table uniformly at random.
zipf
    Row popularity follows a bounded Zipf law, ``p(rank) ∝ rank**-alpha`` over the table's
    rows.  Ranks are mapped to rows through a seeded permutation per table, so the hot rows
    are scattered over the table instead of sitting at its start.
meta
    Calibrated on the reuse statistics that Meta published for its production-like DLRM
    traces (``data/meta-dlrm-reuse.json``).  A row-popularity law per table is fitted so
    that, at the published batch size and lookups per table, the expected per-row reuse
    histogram (of unique rows and of lookups) and the expected number of unique rows match
    the published ones (:func:`fit_meta_law`).  A single power law ``(rank+q)**-s`` cannot
    do that (its per-bin errors reach 0.08), so the law bends at a knee: a shallow head, a
    steep tail.  Smaller batches draw from the same law.
movielens
    Real user-history bags from MovieLens (``data/movielens-latest-small``): one sample
    per rating event, its bag the user's previous rated movies.
load_trace
    A batch file written by :func:`~refree.golden.batch.save_batch`.

Bad arguments raise :class:`~refree.golden.errors.BatchError` (a ``ValueError``) naming the
argument, as the command line reports them.

Weights, when asked for, are float32 drawn uniformly from [0, 1)
(``Generator.random(dtype=np.float32)``), one per lookup, after all the indices.
"""
import functools
import importlib.resources
import json
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .batch import Batch, load_batch
from .errors import BatchError

__all__ = [
    "trace_stream",
    "Trace", "TRACE_NAMES", "make_trace", "load_trace",
    "uniform_batch", "zipf_batch", "meta_batch", "movielens_batch",
    "MetaLaw", "META_LAWS", "META_SETS", "ReuseHistogram", "expected_reuse", "fit_meta_law",
    "meta_lookups_per_table", "meta_pooling_factor",
]

TRACE_NAMES = ("uniform", "zipf", "meta", "movielens")

#: Defaults of :func:`make_trace` for the synthetic sources.
DEFAULT_NUM_ROWS = 10_000
DEFAULT_BAG_LEN = (1, 20)

#: MovieLens bags hold at most this many of the user's previous movies.
MOVIELENS_HISTORY = 20
#: A rating at or above this counts as liked (table 2 of the MovieLens trace).
MOVIELENS_LIKED = 4.0


@dataclass(frozen=True, eq=False)
class Trace:
    """A batch and the sizes of the tables it indexes.

    Parameters
    ----------
    batch : Batch
        The lookups, in TBE layout.
    num_rows : tuple of int
        Rows of each table, one entry per table of ``batch``.  Every index of table ``t``
        lies in ``[0, num_rows[t])``; the tables may hold rows that no lookup touches.

    Raises
    ------
    BatchError
        If ``num_rows`` does not give one size per table or an index falls outside it.
    """
    batch: Batch
    num_rows: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "num_rows", tuple(int(n) for n in self.num_rows))
        # Every pooling is "sum" here only so that weighted batches pass; the pooling is the
        # caller's choice, this check is about the shape and the index ranges.
        self.batch.check_against(self.num_rows, ["sum"] * len(self.num_rows))


# -- argument checks and batch assembly -------------------------------------------------
def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BatchError(name, f"must be a positive integer, not {value!r}")
    return int(value)


def _rows_per_table(num_rows, num_tables):
    if isinstance(num_rows, (int, np.integer)) and not isinstance(num_rows, bool):
        num_rows = [num_rows] * num_tables
    num_rows = list(num_rows)
    if len(num_rows) != num_tables:
        raise BatchError("num_rows", f"must give one size per table ({num_tables}), "
                                     f"not {len(num_rows)}")
    return tuple(_positive_int(f"num_rows[{t}]", n) for t, n in enumerate(num_rows))


def _bag_lengths(rng, bag_len, count):
    """Lengths of ``count`` bags: all ``bag_len``, or uniform in the inclusive range."""
    if isinstance(bag_len, (int, np.integer)) and not isinstance(bag_len, bool):
        if bag_len < 0:
            raise BatchError("bag_len", f"must be a non-negative integer or a (lo, hi) range, "
                                        f"not {bag_len!r}")
        return np.full(count, bag_len, dtype=np.int64)
    try:
        lo, hi = (int(v) for v in bag_len)
    except (TypeError, ValueError):
        raise BatchError("bag_len", f"must be a non-negative integer or a (lo, hi) range, "
                                    f"not {bag_len!r}") from None
    if not 0 <= lo <= hi:
        raise BatchError("bag_len", f"range must satisfy 0 <= lo <= hi, not {bag_len!r}")
    return rng.integers(lo, hi, size=count, endpoint=True, dtype=np.int64)


def _assemble(tables, batch_size, num_rows, rng=None):
    """Concatenate per-table ``(indices, lengths)`` table-major into a Trace.

    Weights are drawn from ``rng`` when one is given (see the module docstring).
    """
    indices = np.concatenate([idx for idx, _ in tables]).astype(np.int64, copy=False)
    lengths = np.concatenate([ln for _, ln in tables])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    weights = None if rng is None else rng.random(len(indices), dtype=np.float32)
    batch = Batch(indices=indices, offsets=offsets, batch_size=batch_size,
                  per_sample_weights=weights)
    return Trace(batch, num_rows)


# -- uniform and Zipf --------------------------------------------------------------------
def uniform_batch(batch_size, num_tables, num_rows, bag_len, seed, weighted=False):
    """A batch whose lookups pick rows uniformly at random.

    Parameters
    ----------
    batch_size, num_tables : int
        B and T.
    num_rows : int or sequence of int
        Rows per table, one size for all tables or one per table.
    bag_len : int or (int, int)
        Length of every bag, or an inclusive range ``(lo, hi)`` from which each bag's
        length is drawn uniformly; ``lo = 0`` allows empty bags.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same trace.
    weighted : bool
        Draw per-sample weights, float32 uniform in [0, 1).

    Returns
    -------
    Trace
    """
    B = _positive_int("batch_size", batch_size)
    T = _positive_int("num_tables", num_tables)
    rows = _rows_per_table(num_rows, T)
    rng = np.random.default_rng(seed)
    tables = []
    for n in rows:
        lengths = _bag_lengths(rng, bag_len, B)
        tables.append((rng.integers(0, n, size=int(lengths.sum()), dtype=np.int64), lengths))
    return _assemble(tables, B, rows, rng if weighted else None)


def zipf_batch(batch_size, num_tables, num_rows, bag_len, seed, alpha=1.05, weighted=False):
    """A batch whose row popularity follows a bounded Zipf law.

    Within table ``t`` the row of popularity rank ``r`` (``r = 1`` the hottest) is looked up
    with probability ``r**-alpha / sum(k**-alpha for k in 1..num_rows[t])``.  Ranks map to
    rows through a seeded permutation of each table, so the hot rows are scattered.

    Parameters
    ----------
    batch_size, num_tables, num_rows, bag_len, seed, weighted
        As in :func:`uniform_batch`.
    alpha : float
        Zipf exponent, ``>= 0`` (0 is uniform; the law is bounded, so ``alpha <= 1`` is
        allowed).

    Returns
    -------
    Trace
    """
    B = _positive_int("batch_size", batch_size)
    T = _positive_int("num_tables", num_tables)
    rows = _rows_per_table(num_rows, T)
    if not np.isfinite(alpha) or alpha < 0:
        raise BatchError("alpha", f"must be a finite number >= 0, not {alpha!r}")
    rng = np.random.default_rng(seed)
    tables = []
    for n in rows:
        lengths = _bag_lengths(rng, bag_len, B)
        p = np.arange(1, n + 1, dtype=np.float64) ** -float(alpha)
        ranks = rng.choice(n, size=int(lengths.sum()), p=p / p.sum())
        tables.append((rng.permutation(n)[ranks], lengths))
    return _assemble(tables, B, rows, rng if weighted else None)


# -- Meta-calibrated law -----------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _meta_data():
    path = importlib.resources.files("refree.golden") / "data" / "meta-dlrm-reuse.json"
    return json.loads(path.read_text())


META_SETS = ("2021_t856_bs65536", "2022_t788_bs131072")


def _meta_set(set_name):
    sets = _meta_data()["sets"]
    if set_name not in sets:
        raise BatchError("set_name", f"must be one of {tuple(sets)}, not {set_name!r}")
    return sets[set_name]


def _reuse_edges():
    """Upper edges of the published reuse bins, the last one infinite."""
    return np.array([float(e) for e in _meta_data()["bins_upper_edge"]])


def meta_lookups_per_table(set_name):
    """Lookups per table in one published batch: ``indices_per_batch / tables``."""
    st = _meta_set(set_name)
    return st["indices_per_batch"] / st["tables"]


def meta_pooling_factor(set_name):
    """Mean bag length of a set: ``indices_per_batch / (tables * batch_size)``.

    Computed from the published counts rather than taken from the rounded ``derived``
    entry of the data file (8.344 and 13.605, not 8.3 and 13.6).
    """
    st = _meta_set(set_name)
    return st["indices_per_batch"] / (st["tables"] * st["batch_size"])


def _power_integral(a, b, q, s):
    """``∫_a^b (x+q)**-s dx``, written so that it stays accurate for ``s`` at or near 1."""
    la, lb = np.log(a + q), np.log(b + q)
    z = (1.0 - s) * (lb - la)
    small = np.abs(z) < 1e-12
    ratio = np.where(small, 1.0, np.expm1(z) / np.where(small, 1.0, z))   # (e^z - 1)/z
    return np.exp((1.0 - s) * la) * ratio * (lb - la)


def _law_mass(s_head, s_tail, q, knee, edges):
    """Mass of the law's density between consecutive ``edges`` (unnormalised).

    The density is ``(x+q)**-s_head`` below the knee and continues as a multiple of
    ``(x+q)**-s_tail`` above it, continuous at the knee.
    """
    a, b = edges[:-1], edges[1:]
    head = _power_integral(np.minimum(a, knee), np.minimum(b, knee), q, s_head)
    tail = _power_integral(np.maximum(a, knee), np.maximum(b, knee), q, s_tail)
    return head + (knee + q) ** (s_tail - s_head) * tail


@dataclass(frozen=True)
class MetaLaw:
    """A row-popularity law: the probability that a lookup of a table hits each rank.

    Rank ``r`` (1 the hottest, up to ``rows``) is looked up with probability proportional to
    the integral over ``[r - 1/2, r + 1/2]`` of the density ``f(x) = (x+q)**-s_head`` for
    ``x < knee`` and ``f(x) = (knee+q)**(s_tail-s_head) * (x+q)**-s_tail`` beyond.  For
    all ranks but the first few this is ``f(r)`` to within a fraction of a percent; the
    integral makes the law's mass over a range of ranks exact, which the fit uses.

    Attributes
    ----------
    s_head, s_tail : float
        Exponents of the head (ranks below the knee) and of the tail.
    q : float
        Shift of the ranks, ``>= 0``: flattens the first few ranks.
    knee : float
        Rank where the exponent changes.
    rows : int
        Number of ranks with non-zero probability.
    """
    s_head: float
    s_tail: float
    q: float
    knee: float
    rows: int

    def probabilities(self, num_rows=None):
        """Probability of each rank, hottest first.

        Parameters
        ----------
        num_rows : int, optional
            Keep only the ``num_rows`` hottest ranks and renormalise.  This moves the
            tail's mass onto the kept ranks, so every row is reused more often than under
            the full law; for ``num_rows >= rows`` the full law is returned.

        Returns
        -------
        numpy.ndarray
            float64, of length ``min(rows, num_rows)``, summing to 1.
        """
        n = self.rows if num_rows is None else min(self.rows, num_rows)
        mass = _law_mass(self.s_head, self.s_tail, self.q, self.knee,
                         np.arange(n + 1, dtype=np.float64) + 0.5)
        return mass / mass.sum()


# Fitted by fit_meta_law() (about 2 s a set); reproduce with
#   python -c "from refree.golden.traces import *; print([fit_meta_law(s) for s in META_SETS])"
# At the published lookups per table the expected histograms differ from the published ones
# by at most 0.010 (fraction of unique rows per bin) and 0.021 (fraction of lookups per
# bin), the expected unique rows per table by 0.2% (2021) and 0.7% (2022).
META_LAWS = {
    "2021_t856_bs65536": MetaLaw(s_head=0.8984169658631199, s_tail=2.0970356953767073,
                                 q=0.7649749142239567, knee=32185.54498217327, rows=185659),
    "2022_t788_bs131072": MetaLaw(s_head=0.8641639611823164, s_tail=2.0701301326084964,
                                  q=4.667522471788704e-08, knee=42931.99440599221, rows=231238),
}


class ReuseHistogram(NamedTuple):
    """Expected reuse statistics of one table's lookups in one batch.

    Attributes
    ----------
    unique_rows : numpy.ndarray
        Fraction of the touched rows whose reuse falls in each published bin.
    indices : numpy.ndarray
        Fraction of the lookups that go to rows of each bin.
    unique : float
        Expected number of distinct rows touched.
    """
    unique_rows: np.ndarray
    indices: np.ndarray
    unique: float


def expected_reuse(probabilities, lookups, multiplicity=None):
    """Expected reuse histogram of ``lookups`` independent draws from a row law.

    Uses the Poisson approximation: a row of probability ``p`` is looked up
    ``k ~ Poisson(lookups * p)`` times.  Bins are those of the data file, bin ``k`` holding
    reuse in ``(edge[k-1], edge[k]]``.  For the lookup histogram,
    ``k * Pois(k; λ) = λ * Pois(k-1; λ)``.

    Parameters
    ----------
    probabilities : array_like
        Per-row probability of a lookup (summing to 1 with ``multiplicity``).
    lookups : float
        Lookups of the table in one batch.
    multiplicity : array_like, optional
        Number of rows sharing each probability (may be fractional); 1 by default.  Lets
        the fit evaluate millions of ranks as a few thousand groups.

    Returns
    -------
    ReuseHistogram
    """
    from scipy.special import pdtrc     # pdtrc(k, λ) = P(X > k) for X ~ Poisson(λ)

    lam = lookups * np.asarray(probabilities, dtype=np.float64)
    mult = np.ones_like(lam) if multiplicity is None else np.asarray(multiplicity, np.float64)
    upper = _reuse_edges()
    lower = np.concatenate([[0.0], upper[:-1]])

    def tail(k):    # P(X > k) per row and edge; 1 below 0, 0 at infinity
        kk = np.where(np.isfinite(k), np.maximum(k, 0.0), 0.0)
        sf = pdtrc(kk, lam[:, None])
        return np.where(k < 0, 1.0, np.where(np.isfinite(k), sf, 0.0))

    rows = mult @ (tail(lower) - tail(upper))
    looks = (mult * lam) @ (tail(lower - 1) - tail(upper - 1))
    unique = float(mult @ -np.expm1(-lam))
    return ReuseHistogram(rows / rows.sum(), looks / looks.sum(), unique)


def _grouped_ranks(rows, exact=256, ratio=1.01):
    """Edges of rank groups: one rank each up to ``exact``, then growing by ``ratio``.

    Within a group the law changes by a factor ``ratio**s`` (1% in the head, 2% in the
    tail), so its rows can share their mean probability in :func:`expected_reuse`: that
    moves the expected histograms by under 1e-5.  ``rows`` may be fractional, as the fit
    treats it as continuous.
    """
    edges = np.arange(min(exact, rows) + 1, dtype=np.float64) + 0.5
    if rows > exact:
        steps = int(np.ceil(np.log((rows + 0.5) / edges[-1]) / np.log(ratio))) + 1
        edges = np.concatenate([edges, np.geomspace(edges[-1], rows + 0.5, steps)[1:]])
    return edges


def fit_meta_law(set_name):
    """Fit a :class:`MetaLaw` to a published set of reuse statistics (needs scipy).

    Minimises, by ``scipy.optimize.least_squares`` from a few fixed starting points, the
    differences between the published and the expected (:func:`expected_reuse`) fractions
    of both histograms at the published lookups per table, plus ``0.1 * log`` of the ratio
    of expected to published unique rows per table.  The rank count is continuous during
    the fit and rounded at the end.

    Parameters
    ----------
    set_name : str
        One of :data:`META_SETS`.

    Returns
    -------
    MetaLaw
    """
    from scipy.optimize import least_squares

    st = _meta_set(set_name)
    lookups = meta_lookups_per_table(set_name)
    unique = st["unique_rows_per_batch"] / st["tables"]
    target = np.concatenate([st["unique_rows"], st["indices"]])

    def law(x):     # unconstrained-ish parameters -> (s_head, s_tail, q, knee, rows)
        s_head, s_tail, log1p_q, log_knee, log_rows = x
        return s_head, s_tail, np.expm1(log1p_q), np.exp(log_knee), np.exp(log_rows)

    def residuals(x):
        s_head, s_tail, q, knee, rows = law(x)
        edges = _grouped_ranks(rows)
        mass = _law_mass(s_head, s_tail, q, knee, edges)
        width = np.diff(edges)
        h = expected_reuse(mass / mass.sum() / width, lookups, width)
        return np.concatenate([np.concatenate([h.unique_rows, h.indices]) - target,
                               [0.1 * np.log(h.unique / unique)]])

    bounds = ([0.05, 0.05, 0.0, 0.0, np.log(1e3)], [5.0, 5.0, 12.0, np.log(1e8), np.log(1e9)])
    starts = ([0.9, 1.5, 1.0, np.log(1e3), np.log(3e5)],
              [1.0, 0.7, 1.0, np.log(1e4), np.log(1e6)],
              [0.7, 1.2, 0.5, np.log(1e2), np.log(2e5)])
    best = min((least_squares(residuals, x0, bounds=bounds, x_scale="jac") for x0 in starts),
               key=lambda sol: sol.cost)
    s_head, s_tail, q, knee, rows = law(best.x)
    return MetaLaw(float(s_head), float(s_tail), float(q), float(knee), int(round(rows)))


def meta_batch(batch_size, num_tables, seed, set_name="2022_t788_bs131072", num_rows=None,
               weighted=False):
    """A batch drawn from the row-popularity law fitted to one of Meta's published sets.

    Each table draws independently from the same law (:data:`META_LAWS`), with its own
    seeded permutation from ranks to rows.  Bag lengths are geometric on ``{1, 2, ...}``
    with mean the set's pooling factor (:func:`meta_pooling_factor`): no bag is empty, and
    the spread is wide, as in the published traces whose tables' pooling factors range
    from 1 to hundreds.

    Parameters
    ----------
    batch_size, num_tables, seed, weighted
        As in :func:`uniform_batch`.
    set_name : str
        One of :data:`META_SETS`.
    num_rows : int or sequence of int, optional
        Rows per table.  By default the law's full rank count.  Fewer rows keep the
        hottest ranks and renormalise, which changes the tail (see
        :meth:`MetaLaw.probabilities`); more rows leave the extra ones cold.

    Returns
    -------
    Trace
    """
    B = _positive_int("batch_size", batch_size)
    T = _positive_int("num_tables", num_tables)
    _meta_set(set_name)     # checks the name
    law = META_LAWS[set_name]
    rows = _rows_per_table(law.rows if num_rows is None else num_rows, T)
    p_geometric = 1.0 / meta_pooling_factor(set_name)
    rng = np.random.default_rng(seed)
    tables = []
    for n in rows:
        lengths = rng.geometric(p_geometric, size=B).astype(np.int64)
        p = law.probabilities(n)
        ranks = rng.choice(len(p), size=int(lengths.sum()), p=p)
        tables.append((rng.permutation(n)[ranks], lengths))
    return _assemble(tables, B, rows, rng if weighted else None)


# -- MovieLens ---------------------------------------------------------------------------
class _MovieLens(NamedTuple):
    """MovieLens ratings in sample order, with each sample's bags as slices.

    ``movie_row[s]``/``user_row[s]``: dense rows of sample ``s``.  The history bag of
    ``s`` is ``history[hist_lo[s]:hist_hi[s]]``, its liked bag ``liked[liked_lo[s]:
    liked_hi[s]]``: both arrays hold movie rows grouped by user, chronological within.
    """
    movie_row: np.ndarray
    user_row: np.ndarray
    history: np.ndarray
    hist_lo: np.ndarray
    hist_hi: np.ndarray
    liked: np.ndarray
    liked_lo: np.ndarray
    liked_hi: np.ndarray
    num_movies: int
    num_users: int
    liked_sample: np.ndarray         # sample s rated 4.0 or more (the training label)


def _first_appearance_rows(ids):
    """Dense rows 0, 1, ... for ``ids`` in the order each id first appears."""
    uniq, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    row_of_uniq = np.empty(len(uniq), dtype=np.int64)
    row_of_uniq[np.argsort(first)] = np.arange(len(uniq))
    return row_of_uniq[inverse], len(uniq)


@functools.lru_cache(maxsize=1)
def _movielens():
    path = (importlib.resources.files("refree.golden") / "data" / "movielens-latest-small"
            / "ratings.csv")
    with path.open() as f:
        user, movie, rating, timestamp = np.loadtxt(f, delimiter=",", skiprows=1).T
    order = np.lexsort((movie, user, timestamp))    # last key is the primary one
    movie_row, num_movies = _first_appearance_rows(movie[order].astype(np.int64))
    user_row, num_users = _first_appearance_rows(user[order].astype(np.int64))
    liked = rating[order] >= MOVIELENS_LIKED

    # Samples grouped by user; the stable sort keeps each user's ratings in sample order.
    by_user = np.argsort(user_row, kind="stable")
    user_start = np.concatenate([[0], np.cumsum(np.bincount(user_row, minlength=num_users))])
    # Position of each grouped sample: everything before it in its group is its history.
    end = np.arange(len(by_user))
    start = np.maximum(user_start[user_row[by_user]], end - MOVIELENS_HISTORY)
    # Liked events, grouped the same way: the count of liked events before a grouped sample
    # is its end in the liked array.
    liked_grouped = liked[by_user]
    liked_end = np.cumsum(liked_grouped) - liked_grouped
    liked_user_start = liked_end[user_start[user_row[by_user]]]
    liked_start = np.maximum(liked_user_start, liked_end - MOVIELENS_HISTORY)

    def to_samples(a):     # grouped order -> sample order
        out = np.empty_like(a)
        out[by_user] = a
        return out

    history = movie_row[by_user]
    return _MovieLens(movie_row, user_row, history, to_samples(start), to_samples(end),
                      history[liked_grouped], to_samples(liked_start), to_samples(liked_end),
                      num_movies, num_users, liked)


def _gather(values, lo, hi):
    """``concatenate([values[a:b] for a, b in zip(lo, hi)])`` without a Python loop."""
    lengths = hi - lo
    total = int(lengths.sum())
    bag_start = np.cumsum(lengths) - lengths
    return values[np.repeat(lo - bag_start, lengths) + np.arange(total)], lengths


def movielens_batch(batch_size, num_tables=1, batch_index=0):
    """A batch of MovieLens rating events with their users' histories as bags.

    Samples are the rating events of ``ratings.csv`` ordered by (timestamp, userId,
    movieId); this batch holds samples ``[batch_index*B, (batch_index+1)*B)``.  Movie ids
    map to dense rows in order of first appearance in that order, and so do user ids.

    * table 0: the user's previous rated movies (at most the 20 most recent, strictly
      before this sample, in chronological order); a user's first rating has an empty bag;
    * table 1: the user, a bag of one;
    * table 2: the user's previous movies rated 4.0 or more, chosen as table 0's.

    Parameters
    ----------
    batch_size : int
        B.
    num_tables : int
        1, 2 or 3: the first ``num_tables`` tables above.
    batch_index : int
        Which batch of B consecutive samples.

    Returns
    -------
    Trace
        ``num_rows`` are the whole dataset's vocabularies (movies, users, movies), not
        the rows this batch touches.
    """
    B = _positive_int("batch_size", batch_size)
    if num_tables not in (1, 2, 3) or isinstance(num_tables, bool):
        raise BatchError("num_tables", f"must be 1, 2 or 3 for movielens, not {num_tables!r}")
    if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)) \
            or batch_index < 0:
        raise BatchError("batch_index", f"must be a non-negative integer, not {batch_index!r}")
    ml = _movielens()
    first, last = batch_index * B, (batch_index + 1) * B
    if last > len(ml.movie_row):
        raise BatchError("batch_index", f"batch {batch_index} of {B} samples ends at sample "
                                        f"{last}, past the {len(ml.movie_row)} MovieLens samples")
    window = slice(first, last)
    tables = [_gather(ml.history, ml.hist_lo[window], ml.hist_hi[window]),
              (ml.user_row[window], np.ones(B, dtype=np.int64)),
              _gather(ml.liked, ml.liked_lo[window], ml.liked_hi[window])]
    rows = (ml.num_movies, ml.num_users, ml.num_movies)
    return _assemble(tables[:num_tables], B, rows[:num_tables])


def movielens_sample_count():
    """The MovieLens rating events (samples) there are."""
    return len(_movielens().movie_row)


def movielens_samples(first, count):
    """Samples ``[first, first + count)`` in sample order (as :func:`movielens_batch`) as a
    training batch and its labels: a Trace of three tables -- the user's previous rated
    movies (:func:`movielens_batch`'s table 0), the user, the movie rated (bags of one) --
    of ``count`` bags each, and a bool array, the sample's rating is 4.0 or more."""
    ml = _movielens()
    if not 0 <= first < first + count <= len(ml.movie_row):
        raise BatchError("samples", f"[{first}, {first + count}) is not within the "
                                    f"{len(ml.movie_row)} MovieLens samples")
    w = slice(first, first + count)
    ones = np.ones(count, dtype=np.int64)
    tables = [_gather(ml.history, ml.hist_lo[w], ml.hist_hi[w]), (ml.user_row[w], ones), (ml.movie_row[w], ones)]
    return _assemble(tables, count, (ml.num_movies, ml.num_users, ml.num_movies)), ml.liked_sample[w].copy()


# -- files and the dispatcher ------------------------------------------------------------
def load_trace(path):
    """Read a batch file as a Trace.

    A file holds no table sizes, so each table gets the fewest rows that hold its
    lookups: its largest index plus one (one row for a table without lookups).

    Raises
    ------
    BatchError
        If the file is not a valid batch or holds a negative index.
    """
    batch = load_batch(path)
    rows = []
    for t in range(batch.num_tables):
        idx, _, _ = batch.table_slice(t)
        rows.append(int(idx.max()) + 1 if len(idx) else 1)
    return Trace(batch, rows)


def make_trace(name, batch_size, num_tables, seed=0, **kw):
    """Build a trace by source name, with defaults for what is not given.

    Parameters
    ----------
    name : str
        One of :data:`TRACE_NAMES`.
    batch_size, num_tables : int
        B and T.
    seed : int
        Seed of the synthetic sources; MovieLens is a fixed dataset and ignores it (pick
        its window with ``batch_index``).
    **kw
        Further arguments of the source: ``num_rows`` (default 10,000 for uniform and
        zipf, the law's rank count for meta), ``bag_len`` (default ``(1, 20)``),
        ``alpha``, ``weighted``, ``set_name``, ``batch_index``.

    Returns
    -------
    Trace
    """
    if name in ("uniform", "zipf"):
        source = uniform_batch if name == "uniform" else zipf_batch
        return source(batch_size, num_tables, kw.pop("num_rows", DEFAULT_NUM_ROWS),
                      kw.pop("bag_len", DEFAULT_BAG_LEN), seed, **kw)
    if name == "meta":
        return meta_batch(batch_size, num_tables, seed, **kw)
    if name == "movielens":
        return movielens_batch(batch_size, num_tables, **kw)
    raise BatchError("trace", f"must be one of {TRACE_NAMES}, not {name!r}")


def trace_stream(name, batch_size, num_tables, count, seed=0, **kw):
    """``count`` consecutive batches of a trace, as training meets them: MovieLens windows
    ``batch_index``, ``batch_index + 1``, ...; a synthetic trace drawn once for
    ``count * batch_size`` samples (one row-popularity law, one permutation of each table's
    rows) and cut into consecutive windows.  Returns ``(batches, rows of each table)``."""
    count = _positive_int("count", count)
    batch_size = _positive_int("batch_size", batch_size)
    if name == "movielens":
        first = kw.pop("batch_index", 0)
        traces = [movielens_batch(batch_size, num_tables, batch_index=first + k, **kw) for k in range(count)]
        return [tr.batch for tr in traces], traces[0].num_rows
    whole = make_trace(name, count * batch_size, num_tables, seed, **kw)
    return [whole.batch.window(batch_size, k) for k in range(count)], whole.num_rows

