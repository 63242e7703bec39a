"""The judge: pure functions from the measurements so far to a decision. No I/O, no clock.

In: every run measured on this branch (`Run`), the experiment being judged (`Experiment`), the
noise estimate (`estimate_noise`) and the `Policy`. Out: `Measure` (run this commit at this seed
next), `Verdict` (keep or discard, with the experiment's mean, its paired difference and the
interval around it) or None (wait for the experiment's runs in flight: several run at once only
where each is needed whatever the others give, as the baseline's seeds are). The scheduler asks
again after every run, so a loop killed at any point asks the same question on restart and gets the
same answer.

How the noise-aware policy decides (`Policy.name == "noise"`):

- Seeds are the lab's: s1 = `Policy.seed`, s2 = s1 + 1, ... Candidate and best run at the same
  seeds, and each candidate run is paired with the best's run at its seed (same data order, same
  initialisation), so what the seed does cancels and what is left is the timing and load noise.
- Measurements count only within one *era*: a stretch of the run with no drift seen. Pairs are
  formed inside the current era; when a control of the best shows the machine has changed (its
  val_bpb or its throughput off by more than the noise explains), a new era begins and the best is
  measured again before anything is compared with it.
- After each candidate run the penalized paired difference d = val_bpb(candidate) + λ·net lines
  - val_bpb(best) is tested as a sequential test with up to max_runs looks: its evidence of a gain
  z = (-margin - mean d) / SE is kept above the line c (in Student's t for the spread's degrees of
  freedom) and discarded below the futility line c · n / max_runs, which meets the keep line at the
  last look (a clearly worse change stops after one run). c is computed so that a change that does
  nothing is kept with probability 1 - confidence over all the looks together (`boundary`). A keep
  waits for keep_runs runs, so that the new best's value is a mean, never one lucky run.
- The paired difference's spread is estimated from every paired difference measured on the branch
  (within each experiment), pooled with twice the single-run variance (what it would be if pairing
  cancelled nothing) weighing as many degrees of freedom as that variance has, PRIOR_DF at most: on
  a young branch the single runs say what there is to say, and soon the paired differences decide.
  The test uses Student's t with the degrees of freedom there are.

`Policy.name == "single"` is the seed project's rule, kept for comparison: one run per candidate at
s1, kept when its penalized val_bpb beats the best's run at s1 by the margin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from . import stats
from .ledger import DISCARD, FAILED, KEEP, PRUNED

DEFAULT_LAMBDA = 0.001 / 20  # bpb per net added line: 0.001 bpb is not worth 20 lines
DEFAULT_SEED = 42            # s1 of the lab's seed schedule
POLICIES = ("noise", "single")
PRIOR_DF = 8                 # the most the unpaired bound (2 sigma^2) weighs in the paired spread, in df
DRIFT_CONFIDENCE = 0.999     # how sure a control must be that the machine changed, from val_bpb
DRIFT_THROUGHPUT = 0.2       # a relative change of tokens/s at least this large can be drift
SLOW_STOP = 0.5              # a candidate below this share of the best's tokens/s may be stopped for it (`too_slow`)


@dataclass(frozen=True)
class Policy:
    name: str = "noise"             # noise | single
    lam: float = DEFAULT_LAMBDA     # complexity penalty per net added line of train.py
    margin: float = 0.0             # how much better than the best a change must be
    confidence: float = 0.95        # that a kept change is better by the margin (noise policy)
    max_runs: int = 5               # candidate runs per experiment at most (noise policy)
    keep_runs: int = 2              # a kept commit's value is a mean over at least this many runs
    baseline_runs: int = 3          # seeds the baseline is run at before the first proposal
    control_every: int = 5          # a control run of the best N experiments after the last one at most (0: never)
    prune: bool = True              # early abort of clearly worse candidates
    prune_at: tuple = (0.3, 0.5, 0.7)  # checkpoints, as fractions of the time budget
    prune_sigmas: float = 1.0       # how many of the best's seed-to-seed spreads worse a candidate must be there
    seed: int = DEFAULT_SEED        # s1
    overrun_slack: float = 30.0     # seconds past budget + twice the baseline's start-up before a run overruns

    def __post_init__(self):
        if self.name not in POLICIES:
            raise ValueError(f"unknown policy {self.name!r}: use {' or '.join(POLICIES)}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"--confidence must be between 0.5 and 1, e.g. 0.95 (got {self.confidence})")
        if self.max_runs < 1 or self.baseline_runs < 1 or self.control_every < 0:
            raise ValueError("--max-runs and --baseline-runs must be at least 1, --control-every at least 0")

    @property
    def single(self) -> bool:
        return self.name == "single"

    def seed_schedule(self, count: int) -> list[int]:
        return [self.seed + k for k in range(count)]


@dataclass(frozen=True)
class Run:
    """One measured run, as the ledger holds it."""
    experiment: int
    commit: str                     # short hash
    seed: int | None
    role: str                       # baseline | candidate | confirm | control | repeat
    era: int = 1
    val_bpb: float | None = None    # this run's own value; None when it produced none
    tokens_per_s: float | None = None
    stopped: str | None = None      # why a candidate's run was stopped as slower (`too_slow`), awaiting a control

    @property
    def ok(self) -> bool:
        return self.val_bpb is not None


@dataclass(frozen=True)
class Experiment:
    number: int
    commit: str          # the candidate (for the baseline: the base commit)
    parent: str          # the best it is tried against (for the baseline: itself)
    net_lines: int = 0   # lines added - removed in train.py against the parent

    @property
    def baseline(self) -> bool:
        return self.commit == self.parent


@dataclass(frozen=True)
class Noise:
    sigma: float | None = None        # one run's standard deviation (seeds, timing, load), pooled
    df: int = 0
    sigma_diff: float | None = None   # a paired difference's standard deviation
    df_diff: float = 0.0

    def describe(self) -> str:
        if self.sigma is None:
            return "not measured yet"
        paired = f", paired difference ±{self.sigma_diff:.4f}" if self.sigma_diff is not None else ""
        return f"±{self.sigma:.4f} bpb per run ({self.df} df){paired}"


@dataclass(frozen=True)
class Comparison:
    """The penalized paired difference candidate - best over n seeds, with its one-sided interval."""
    n: int
    diff: float | None = None
    se: float | None = None
    df: float = 0.0
    low: float | None = None
    high: float | None = None
    z: float | None = None          # evidence of a gain beyond the margin, in standard errors
    z_keep: float | None = None     # what a keep needs at this look


@dataclass(frozen=True)
class Measure:
    target: str          # "candidate" or "best"
    seed: int
    role: str
    why: str = ""


@dataclass(frozen=True)
class Verdict:
    status: str                     # keep | discard
    mean: float | None = None       # the candidate's mean val_bpb over its counted runs
    runs: int = 0
    comparison: Comparison = field(default_factory=lambda: Comparison(0))
    reason: str = ""


# --- the noise ------------------------------------------------------------------------------------

def current_era(runs: list[Run]) -> int:
    return max((r.era for r in runs), default=1)


def pairs(runs: list[Run], exp: Experiment, era: int) -> list[tuple[int, float, float]]:
    """(seed, candidate, best) for each seed where both have a run in the era, in the candidate's
    order; the best's latest run at that seed counts."""
    best = {}
    for r in runs:
        if r.commit == exp.parent and r.ok and r.era == era and r.seed is not None:
            best[r.seed] = r.val_bpb
    out, seen = [], set()
    for r in runs:
        if r.experiment == exp.number and r.commit == exp.commit and r.ok and r.era == era \
                and r.seed in best and r.seed not in seen:
            out.append((r.seed, r.val_bpb, best[r.seed]))
            seen.add(r.seed)
    return out


def estimate_noise(runs: list[Run], experiments: list[Experiment]) -> Noise:
    """One run's spread, pooled over every commit's runs within each era; a paired difference's
    spread, from the paired differences within each candidate experiment, shrunk toward 2 sigma^2."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        if r.ok:
            groups.setdefault((r.commit, r.era), []).append(r.val_bpb)
    variance, df = stats.pooled_variance(groups.values())
    diffs = []
    for exp in experiments:
        if exp.baseline:
            continue
        for era in {r.era for r in runs if r.experiment == exp.number}:
            d = [c - b for _, c, b in pairs(runs, exp, era)]
            if len(d) >= 2:
                diffs.append(d)
    paired, paired_df = stats.pooled_variance(diffs)
    if variance is None and paired is None:
        return Noise()
    prior_df = min(df, PRIOR_DF) if variance is not None else 0
    total_df = prior_df + paired_df
    combined = ((prior_df * 2 * (variance or 0.0)) + paired_df * (paired or 0.0)) / total_df if total_df else None
    return Noise(sigma=math.sqrt(variance) if variance is not None else None, df=df,
                 sigma_diff=math.sqrt(combined) if combined is not None else None, df_diff=total_df)


def compare(runs: list[Run], exp: Experiment, noise: Noise, policy: Policy, era: int) -> Comparison:
    matched = pairs(runs, exp, era)
    n = len(matched)
    if n == 0:
        return Comparison(0)
    diff = sum(c - b for _, c, b in matched) / n + policy.lam * exp.net_lines
    if noise.sigma_diff is None or noise.df_diff <= 0:
        return Comparison(n, diff=diff)
    se = noise.sigma_diff / math.sqrt(n)
    # the sequential boundary, as a quantile of Student's t for a spread known from df_diff degrees of freedom
    z_keep = stats.t_quantile(NormalDist().cdf(boundary(policy)), noise.df_diff)
    if se == 0.0:
        z = math.inf if diff < -policy.margin else -math.inf
    else:
        z = (-policy.margin - diff) / se
    return Comparison(n, diff=diff, se=se, df=noise.df_diff, low=diff - z_keep * se, high=diff + z_keep * se,
                      z=z, z_keep=z_keep)


# --- the decision ---------------------------------------------------------------------------------

def boundary(policy: Policy) -> float:
    """The keep line in standard errors, for a spread known exactly: kept at it, a change that does
    nothing is kept with probability 1 - confidence over all the up to max_runs looks, the futility
    line included (stats.sequential_boundary)."""
    return stats.sequential_boundary(1.0 - policy.confidence, policy.max_runs)


def futility(n: int, policy: Policy) -> float:
    """The evidence of a gain (z) below which a candidate is discarded after n runs: a straight line
    up to the keep line at the last look. Student's t widens the keep line while the noise is known
    from few runs; it does not move this one, so that a young branch still gives a promising change
    its further runs."""
    return boundary(policy) * n / policy.max_runs


def decide(runs: list[Run], exp: Experiment, noise: Noise, policy: Policy,
           pending: tuple[Measure, ...] = (), baseline_pending: bool = False) -> Measure | Verdict | None:
    """What to do next for `exp`, given every run so far (`runs` includes the experiment's own) and
    its runs in flight (`pending`): a further run only where it is needed whatever those give (a
    baseline's other seeds), else None, to wait for them. `baseline_pending`: the best is the
    baseline, still being measured; a candidate's first run, at s1 (a seed the baseline always
    has), needs nothing from it, and what follows waits for its verdict."""
    era = current_era(runs)
    own = [r for r in runs if r.experiment == exp.number]
    if exp.baseline:
        return _baseline(own, exp, policy, era, pending)
    if baseline_pending:
        first = not pending and not any(r.commit == exp.commit for r in own)
        return Measure("candidate", policy.seed, "candidate") if first else None
    best_era = [r for r in runs if r.commit == exp.parent and r.ok and r.era == era and r.seed is not None]
    if not any(r.commit == exp.parent and r.ok for r in runs):
        # the best never produced a number (a crashed baseline): the candidate is measured as a baseline is
        return _baseline([r for r in own if r.commit == exp.commit], exp, policy, era, pending)
    if pending:  # a candidate's next step depends on what its run in flight gives
        return None
    failed_best = [r for r in own if r.commit == exp.parent and not r.ok]
    if len(failed_best) >= 2:
        return Verdict(DISCARD, reason="the best failed to run twice while this was measured, so it could "
                                         "not be compared")
    if policy.single:
        return _single(runs, own, exp, policy, era, best_era)
    slow = _stopped(own, exp, runs, policy, era)
    if slow is not None:
        return slow
    last_control = max((r.experiment for r in runs if r.role == "control" and r.experiment < exp.number), default=0)
    if policy.control_every and exp.number - last_control >= policy.control_every \
            and not any(r.role == "control" for r in own):
        return Measure("best", new_seed(runs, exp, policy), "control",
                       f"a control run of the best every {policy.control_every} experiments")
    result = compare(runs, exp, noise, policy, era)
    cand = [r for r in own if r.commit == exp.commit and r.ok and r.era == era]
    if result.n:
        mean = stats.mean(v for _, v, _ in pairs(runs, exp, era))
        sure = result.z is not None and result.z > result.z_keep
        if sure and result.n >= min(policy.keep_runs, policy.max_runs):
            return Verdict(KEEP, mean, result.n, result,
                           f"better than the best by more than the margin with {policy.confidence:.0%} confidence")
        futile = not sure and result.z is not None and result.z < futility(result.n, policy)
        if futile or result.n >= policy.max_runs:
            why = ("not better than the best beyond the noise" if futile else
                   f"not shown better with {policy.confidence:.0%} confidence in {result.n} runs")
            return Verdict(DISCARD, mean, result.n, result, why)
        if cand and _throughput_moved(cand[-1], best_era) and \
                not any(r.role == "control" and r.era == era for r in own):
            return Measure("best", new_seed(runs, exp, policy), "control",
                           "the candidate's throughput moved beyond the best's: is it the machine?")
    used = {r.seed for r in cand}
    order = list(dict.fromkeys(r.seed for r in best_era if r.seed not in used))  # the best's seeds, oldest first
    if order:
        return Measure("candidate", order[0], "candidate" if not cand else "confirm")
    seed = new_seed(runs, exp, policy)
    return Measure("best", seed, "confirm", "the best has no run at the next seed")


def _stopped(own: list[Run], exp: Experiment, runs: list[Run], policy: Policy, era: int) -> Measure | Verdict | None:
    """After a candidate's run was stopped for training slower than the best and worse for it
    (`too_slow`), in this era: a control run of the best first, to tell the machine's slowness from
    the change's own. If the control found the machine changed, it began a new era and the candidate
    is measured again there (None here); if not, the slowness is the change's and it is pruned."""
    stops = [i for i, r in enumerate(own) if r.stopped]
    if not stops or own[stops[-1]].era != era:
        return None
    stop = own[stops[-1]]
    control = next((r for r in own[stops[-1] + 1:] if r.role == "control" and r.era == era and r.ok), None)
    if control is not None:
        return Verdict(PRUNED, reason=f"pruned: {stop.stopped}; a control run of the best then ran at "
                                      f"{control.tokens_per_s or 0:,.0f} tok/s, as its runs had: the "
                                      f"slowness is the change's own")
    if len(stops) > 1:
        return Verdict(PRUNED, reason=f"pruned: {stop.stopped}; stopped for its slowness again after a control had "
                                      f"found the machine changed")
    return Measure("best", new_seed(runs, exp, policy), "control",
                   "the candidate was stopped for training slower than the best: is it the machine?")


def new_seed(runs: list[Run], exp: Experiment, policy: Policy) -> int:
    """The first seed neither the best nor the candidate has used in this era."""
    era = current_era(runs)
    taken = {r.seed for r in runs if r.commit in (exp.parent, exp.commit) and r.era == era and r.seed is not None}
    seed = policy.seed
    while seed in taken:
        seed += 1
    return seed


def _baseline(own: list[Run], exp: Experiment, policy: Policy, era: int,
              pending: tuple[Measure, ...]) -> Measure | Verdict | None:
    """The baseline's seeds, each needed whatever the others give: they may all run at once."""
    count = 1 if policy.single else policy.baseline_runs
    done = [r for r in own if r.ok and r.era == era]
    taken = {r.seed for r in done} | {m.seed for m in pending}
    for seed in policy.seed_schedule(count):
        if seed not in taken:
            return Measure("candidate", seed, "baseline")
    if pending:
        return None
    values = [r.val_bpb for r in done]
    return Verdict(KEEP, stats.mean(values), len(values), Comparison(len(values)),
                   f"the baseline, measured at {len(values)} seed{'s' if len(values) > 1 else ''}")


def _single(runs, own, exp, policy, era, best_era) -> Measure | Verdict:
    seed = policy.seed
    if not any(r.seed == seed for r in best_era):
        return Measure("best", seed, "confirm", "the best has no run at s1")
    result = compare(runs, exp, Noise(), policy, era)
    if result.n == 0:
        return Measure("candidate", seed, "candidate")
    _, value, best = pairs(runs, exp, era)[0]
    keep = result.diff < -policy.margin
    return Verdict(KEEP if keep else DISCARD, value, 1, result,
                   "beat the best's run" if keep else "did not beat the best's run")


# --- drift and early abort ------------------------------------------------------------------------

def speed_moved(speed: float | None, speeds: list[float]) -> bool:
    """Whether tokens/s `speed` is off the median of `speeds` by more than their own spread (three
    times, on a log scale) and by at least DRIFT_THROUGHPUT: the machine's load changed, or the run's."""
    speeds = [s for s in speeds if s]
    if not speed or not speeds:
        return False
    median = stats.median(speeds)
    logs = [math.log(s) for s in speeds]
    spread = math.sqrt(stats.pooled_variance([logs])[0] or 0.0) if len(logs) > 1 else 0.0
    return abs(math.log(speed / median)) > max(math.log1p(DRIFT_THROUGHPUT), 3 * spread)


def _throughput_moved(run: Run, reference: list[Run]) -> bool:
    return speed_moved(run.tokens_per_s, [r.tokens_per_s for r in reference])


def drift(run: Run, runs: list[Run], noise: Noise) -> str | None:
    """Why a fresh run of the best says the machine changed since the era's other runs of it, or
    None. `runs` holds the best's earlier runs; only those of the run's era count."""
    before = [r for r in runs if r.commit == run.commit and r.ok and r.era == run.era and r is not run]
    if not run.ok or not before:
        return None
    reasons = []
    if _throughput_moved(run, before):
        median = stats.median(r.tokens_per_s for r in before if r.tokens_per_s)
        reasons.append(f"throughput {run.tokens_per_s:,.0f} tok/s against {median:,.0f} "
                       f"({run.tokens_per_s / median - 1:+.0%})")
    if noise.sigma and noise.df:
        mean = stats.mean(r.val_bpb for r in before)
        limit = stats.t_quantile(1 - (1 - DRIFT_CONFIDENCE) / 2, noise.df) * noise.sigma * math.sqrt(1 + 1 / len(before))
        if abs(run.val_bpb - mean) > limit:
            reasons.append(f"val_bpb {run.val_bpb:.4f} against {mean:.4f} ± {limit:.4f}")
    return "; ".join(reasons) or None


def speeds_until(curves: list[list], fraction: float) -> list[float]:
    """Each run's median tokens/s over its progress points up to `fraction` of the budget (curves:
    (progress, tokens/s) pairs), as a candidate's speed so far is measured: the first steps of a run
    are slower than its steady speed, so a run is held to others over the same share of the budget."""
    out = []
    for curve in curves:
        seen = [s for progress, s in curve if progress <= fraction and s]
        if seen:
            out.append(stats.median(seen))
    return out


def curve_at(points, fraction: float) -> float | None:
    """The loss at a fraction of the budget, linearly interpolated between progress points
    ((progress, loss) pairs in order); None before the curve reaches it."""
    prev = None
    for progress, loss in points:
        if progress >= fraction:
            if prev is None or progress == prev[0]:
                return loss
            t = (fraction - prev[0]) / (progress - prev[0])
            return prev[1] + t * (loss - prev[1])
        prev = (progress, loss)
    return None


def _checkpoints(points, reference: dict[int, list], spread: list[list], seed: int, policy: Policy, at):
    """At each checkpoint the candidate's curve has passed: (fraction, the candidate's loss there, the
    best's loss at `at(fraction)` of its budget, the threshold). The best's is its curve at the
    candidate's seed (same data, so the same batches), else the mean of its curves; the threshold is
    prune_sigmas times the seed-to-seed spread of the curves there (pooled within each commit), at
    least 1 % of the loss. Where no spread is known, nothing."""
    for fraction in policy.prune_at:
        if points[-1][0] < fraction:
            break
        mine, there = curve_at(points, fraction), at(fraction)
        losses = [v for v in (curve_at(c, there) for c in reference.values()) if v is not None]
        variance, df = stats.pooled_variance(
            [v for v in (curve_at(c, there) for c in group) if v is not None] for group in spread)
        if mine is None or not math.isfinite(mine) or not losses or not df:
            continue
        same_seed = curve_at(reference[seed], there) if seed in reference else None
        against = same_seed if same_seed is not None else stats.mean(losses)
        yield fraction, mine, against, max(policy.prune_sigmas * math.sqrt(variance), 0.01 * against)


def prune(points, reference: dict[int, list], spread: list[list], seed: int, policy: Policy,
          speed: float | None = None, speeds: list[float] = ()) -> str | None:
    """Why a candidate's run should stop now, or None. points: its (progress, loss) so far;
    reference: the best's curves in this era by seed; spread: curves grouped by commit (the best's
    and others measured at several seeds in this era). At each checkpoint it is compared with the
    best as `_checkpoints` says. Where the candidate trains slower (tokens/s so far, `speed`) than
    the best's runs of this era (`speeds`), for the machine's load or for its own change, it is held
    to the best where the best had seen as many tokens, earlier in its budget (so with a higher
    loss): the same tokens and a later point of its schedule, both in its favour. A faster one is
    held to the best at the same point of the budget, having seen more tokens there. `speeds` are
    the best's runs' over the same share of the budget (`speeds_until`)."""
    if not policy.prune or not reference or not points:
        return None
    speeds = [s for s in speeds if s]  # a row of an older ledger may have none
    pace = min(1.0, speed / stats.median(speeds)) if speed and speeds else 1.0
    for fraction, mine, against, limit in _checkpoints(points, reference, spread, seed, policy,
                                                       lambda f: f * pace):  # where the best had seen as many tokens
        if mine > against + limit:
            where = f"the best's at {fraction * pace:.0%} ({pace:.0%} of its tokens/s)" if pace < 1 else "the best's"
            return (f"pruned at {fraction:.0%} of the budget: training loss {mine:.3f} against {where} "
                    f"{against:.3f} (+{mine - against:.3f}, more than {limit:.3f})")
    return None


def too_slow(points, reference: dict[int, list], spread: list[list], seed: int, policy: Policy,
             speed: float | None, speeds: list[float]) -> str | None:
    """Why a candidate's run should stop now although `prune` spares it, or None: it trains at less than
    SLOW_STOP of the best's tokens/s over the same share of the budget, more than those runs vary
    (`speed_moved`; a run's first steps on a shared machine vary by 20 % and more), and at the same
    point of the budget its loss is worse than the best's beyond the threshold. The final score is
    taken at the end of the same budget, so if the slowness is its own it ends worse; if it is the
    machine's, a control run of the best shows it. So this stop is no verdict: `decide` asks for
    that control first, and it stands for the next periodic one (`Policy.control_every`)."""
    speeds = [s for s in speeds if s]
    if not policy.prune or not reference or not points or not speed or not speeds:
        return None
    median = stats.median(speeds)
    if speed >= SLOW_STOP * median or not speed_moved(speed, speeds):
        return None
    for fraction, mine, against, limit in _checkpoints(points, reference, spread, seed, policy, lambda f: f):
        if mine > against + limit:
            return (f"stopped at {fraction:.0%} of the budget: {speed:,.0f} tok/s against the best's "
                    f"{median:,.0f} ({speed / median:.0%} of it), and training loss "
                    f"{mine:.3f} against the best's {against:.3f} at the same point (+{mine - against:.3f}, "
                    f"more than {limit:.3f})")
    return None


def overrun(seconds: float, rows: list[dict], budget: float, policy: Policy) -> str | None:
    """Why a run that took `seconds` by the lab's clock (hand-over to hand-off) trained past its
    budget, or None. What a run may take beyond the budget is measured on the baseline's runs here
    (their start-up, compilation, data loading, hand-off): a run overruns when it takes longer than
    the budget plus twice the most the baseline took beyond it, plus the slack (at least
    policy.overrun_slack seconds, a quarter of the budget where that is more: a changed model
    compiles anew). Without a baseline run timed by the lab (an older ledger), nothing overruns."""
    extra = [float(r["run_seconds"]) - budget for r in rows
             if r.get("role") == "baseline" and r.get("run_seconds") and r.get("status") not in FAILED]
    if not extra:
        return None
    allowed = budget + 2 * max(0.0, max(extra)) + max(policy.overrun_slack, 0.25 * budget)
    if seconds <= allowed:
        return None
    return (f"trained past its budget: {seconds:.0f} s from start to hand-off, {allowed:.0f} s allowed "
            f"({budget:g} s of budget, the baseline's start-up {max(0.0, max(extra)):.0f} s twice, and slack)")
