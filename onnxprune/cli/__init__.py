"""The onnxprune command: ``main.py`` parses and dispatches, one module per sub-command, shared
argument groups in ``args.py``."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``onnxprune`` console script and ``python -m onnxprune.cli``."""
    from onnxprune.cli.main import main as run
    return run(argv)


__all__ = ["main"]
