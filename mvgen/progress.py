"""Time left in a per-segment stage, from the measured time per built item.

tqdm's own estimate divides the elapsed time by the items done, so segments taken from the store (instant)
make it far too hopeful, and the first item (which loads the models) far too gloomy. Here only built items
count, model loading is measured apart (``mvgen.models.load_seconds``) and left out of the per-item time, and
the estimate covers only the items still to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def format_seconds(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class TimeLeft:
    total: int  # items in the stage
    to_build: int  # items not in the store when the stage began
    done: int = 0
    built: list[float] = field(default_factory=list)  # seconds per built item, model loading left out
    loading: float = 0.0  # seconds spent loading models during this stage

    def add(self, seconds: float, built: bool, loading: float = 0.0) -> None:
        """One item finished in ``seconds``, of which ``loading`` went to loading models."""
        self.done += 1
        self.loading += loading
        if built:
            self.built.append(max(0.0, seconds - loading))

    def per_item(self) -> float | None:
        return sum(self.built) / len(self.built) if self.built else None

    def left(self) -> float | None:
        """Seconds until the stage ends, or None before the first built item."""
        per_item = self.per_item()
        if per_item is None:
            return None if self.to_build > 0 else 0.0
        return per_item * max(0, self.to_build - len(self.built))

    def describe(self, counts: bool = True) -> str:
        """``3/12 done, 4.1 s per item, about 37 s left`` (``measuring`` before the first built item);
        without ``counts`` (the bar shows them) it starts at the time per item."""
        left, per_item = self.left(), self.per_item()
        parts = [f"{self.done}/{self.total} done"] if counts else []
        if per_item is not None:
            parts.append(f"{per_item:.1f} s per item")
        parts.append("measuring" if left is None else f"about {format_seconds(left)} left")
        return ", ".join(parts)
