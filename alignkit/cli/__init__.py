"""Command-line tools: each module has ``main(argv=None)``; ``tools/*.py`` are thin shims.

Keeping the logic here (not in ``tools/``) lets tests call ``main([...])``
in-process and lets users run ``python -m alignkit.cli.<tool>``.
"""
