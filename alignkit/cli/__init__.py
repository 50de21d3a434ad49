"""Command-line tools: each module has ``main(argv=None)``; ``tools/*.py`` are thin shims.

Keeping the logic here (not in ``tools/``) lets tests call ``main([...])``
in-process and lets users run ``python -m alignkit.cli.<tool>``.
"""
import os
import sys


def plain(text: str | None) -> str:
    """A docstring as ``--help`` text: reStructuredText's double backticks dropped."""
    return (text or "").replace("``", "").strip()


def console(main):
    """The console-script entry of a tool (``alignkit-<tool>``, ``tools/<tool>.py``): runs ``main``; a
    ``ValueError`` (bad input, named by the tool) becomes ``<prog>: error: ...`` and exit status 2, as
    argparse's own errors, instead of a traceback; ``main``'s value is the exit status when it is an int."""

    def entry(argv=None) -> int:
        try:
            result = main(argv)
        except ValueError as err:
            print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr)
            return 2
        return result if isinstance(result, int) and not isinstance(result, bool) else 0

    entry.__doc__ = f"Console entry of {main.__module__} (exit status)."
    return entry
