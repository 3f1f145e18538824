"""A clock for ``ups.deadline.clock`` that moves only when a test says so."""


class ManualClock:
    def __init__(self, start: float = 1000.0):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
