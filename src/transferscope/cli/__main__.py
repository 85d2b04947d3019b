"""``python -m transferscope.cli ...`` (e.g. under torchrun)."""

from transferscope.cli import run

if __name__ == "__main__":
    run()
