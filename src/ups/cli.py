"""The ``ups`` command line (placeholder while the package is assembled)."""


def main(argv=None) -> int:
    return 0
