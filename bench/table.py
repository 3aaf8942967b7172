"""bench/run.py's markdown table: a column per target (direct, each floor, each Tally) and,
beside each Tally, what it adds to direct, its ratio to direct and its ratio to its floor
(the floor under the same worker class; the median of the rounds' own ratios)."""

from __future__ import annotations

import statistics

from bench.targets import Target


class Table:
    """The medians of the rounds (``runs``) and the many-streams figures (``slow``) of every
    target, by target name; ``pairs`` names each Tally and its floor."""

    def __init__(self, floors: list[Target], pairs: list[tuple[str, str]], runs, slow):
        self.floors = [floor.name for floor in floors]
        self.pairs, self.runs, self.slow = pairs, runs, slow

    def value(self, name: str, kind: str | None, field: str) -> float:
        """The median over the rounds of a load (``kind``), or a many-streams figure."""
        if kind is None:
            return self.slow[name][field]
        return statistics.median(r[field] for r in self.runs[name][kind])

    def print(self, streams: int, slow_tokens: int) -> None:
        """Print the table."""
        tallies = " | ".join(f"{tally} | added | ratio | / {floor}" for tally, floor in self.pairs)
        print(f"| target | direct | {' | '.join(self.floors)} | {tallies} | goal |")
        print("|---" * (3 + len(self.floors) + 4 * len(self.pairs)) + "|")
        self.line("1 client: p50 (ms)", "lat", "p50", "added ≤ 1.5")
        self.line("1 client: p99 (ms)", "lat", "p99", "added ≤ 4")
        self.line("32 clients: requests/s", "thr", "rps", "≥ 1000", 0, added=False)
        self.line("32 clients: p99 (ms)", "thr", "p99", "≤ 100")
        self.count("32 clients: errors, all rounds", ("thr",), "0")
        self.line("32 clients: CPU ms per request", "thr", "cpu_ms", "", 3, False, False)
        self.line("stream: first content p50 (ms)", "str", "ttfb", "added ≤ 2")
        label = "stream, back to back, keep-alive: first content p50 (ms)"
        self.line(label, "b2b", "ttfb", "added ≤ 2")
        self.line("stream: event lag p99 (ms)", "str", "lag99", "≤ 5")
        self.line("stream: event lag max (ms)", "str", "lagmax", "")
        self.count("streams one after another: failed, all rounds", ("str", "b2b"), "0")
        label = f"{streams} streams × {slow_tokens} tokens @100 ms"
        self.line(f"{label}: failed streams", None, "errors", "0", 0, added=False)
        self.line(f"{label}: RSS (MB)", None, "rss", "< 600", 0, added=False)
        self.line(f"{label}: first token p99 (ms)", None, "ttfb99", "")
        self.line(f"{label}: event lag p99 (ms)", None, "lag99", "")
        self.line("short request meanwhile: p50 (ms)", None, "probe50", "")
        self.line("short request meanwhile: max (ms)", None, "probemax", "< 100")
        self.line("short request meanwhile: errors", None, "probe_errors", "0", 0, added=False)

    def to_floor(self, name: str, floor: str, kind: str | None, field: str) -> float | None:
        """``name``'s figure over its floor's: for a load run in rounds, the median of the
        rounds' own ratios (one round's runs are close in time; from one minute to the
        next these VMs drift by up to 2×), else the ratio of the two figures."""
        if kind is None:
            base = self.value(floor, kind, field)
            return self.value(name, kind, field) / base if base else None
        pairs = zip(self.runs[name][kind], self.runs[floor][kind], strict=True)
        ratios = [mine[field] / theirs[field] for mine, theirs in pairs if theirs[field]]
        return statistics.median(ratios) if ratios else None

    def cpu_ratios(self) -> dict[str, float]:
        """Each Tally's CPU per request over its floor's, 32 clients (the median of the
        rounds' ratios)."""
        return {tally: self.to_floor(tally, floor, "thr", "cpu_ms") for tally, floor in self.pairs}

    def line(
        self,
        label: str,
        kind: str | None,
        field: str,
        goal: str,
        digits: int = 2,
        added: bool = True,
        to_direct: bool = True,
    ) -> None:
        """One row of figures: direct, the floors, and each Tally with (``added``) Tally −
        direct, (``to_direct``) Tally / direct, and Tally / its floor."""
        direct = self.value("direct", kind, field)
        cells = [f"{direct:.{digits}f}"]
        cells += [f"{self.value(floor, kind, field):.{digits}f}" for floor in self.floors]
        for tally, floor in self.pairs:
            value = self.value(tally, kind, field)
            cells.append(f"{value:.{digits}f}")
            cells.append(f"{value - direct:+.{digits}f}" if added else "")
            cells.append(ratio(value, direct) if to_direct else "")
            to_floor = self.to_floor(tally, floor, kind, field)
            cells.append(f"{to_floor:.2f}×" if to_floor is not None else "")
        print(f"| {label} | {' | '.join(cells)} | {goal} |")

    def count(self, label: str, kinds: tuple[str, ...], goal: str) -> None:
        """One row of errors summed over all rounds of ``kinds``."""

        def errors(name: str) -> int:
            return sum(r["errors"] for kind in kinds for r in self.runs[name][kind])

        cells = [str(errors(name)) for name in ("direct", *self.floors)]
        cells += [f"{errors(tally)} | | | " for tally, _floor in self.pairs]
        print(f"| {label} | {' | '.join(cells)} | {goal} |")

    def limits_cost(
        self, limited: Target, unlimited: Target, storage: str, policy: str = "messages=1000"
    ) -> None:
        """The lines on what limiting costs: a Tally with ``policy`` for everyone against
        the same Tally with no limit (bench/run.py's limits_ab: their paired ``ab`` runs)."""
        pairs = len(limited.ab["thr"])
        title = (
            f"{storage} storage, tier:default {policy}; {limited.name} vs {unlimited.name}, "
            f"{pairs} pairs of runs"
        )
        print(f"\nWhat limiting costs ({title}):\n")
        print("| | limits on | limits off | difference (median of pairs) | goal |")
        print("|---|---|---|---|---|")
        for label, kind, field, goal in (
            ("1 client: p50 (ms)", "lat", "p50", "≤ +0.3 ms"),
            ("32 clients: requests/s", "thr", "rps", "≥ −10 %"),
            ("32 clients: CPU ms per request", "thr", "cpu_ms", ""),
        ):
            ons = [r[field] for r in limited.ab[kind]]
            offs = [r[field] for r in unlimited.ab[kind]]
            on, off = statistics.median(ons), statistics.median(offs)
            if field == "rps":
                changes = [100 * (a / b - 1) for a, b in zip(ons, offs, strict=True)]
                change = f"{statistics.median(changes):+.1f} %"
            else:
                change = f"{statistics.median(a - b for a, b in zip(ons, offs, strict=True)):+.3f}"
            print(f"| {label} | {on:.3f} | {off:.3f} | {change} | {goal} |")


def ratio(value: float, base: float) -> str:
    """``value / base`` as ``1.23×``; empty when ``base`` is 0."""
    return f"{value / base:.2f}×" if base else ""
