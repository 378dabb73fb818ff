"""The CLI's own plumbing: its log handler."""

from __future__ import annotations


def test_the_cli_log_handler_follows_stderr_after_it_is_swapped():
    """A handler bound to the stderr of the moment wrote to a closed file once pytest (or a notebook)
    swapped it: 'Logging error ... I/O operation on closed file' in CI."""
    import io
    import logging
    import sys

    from edgeopt.cli import _setup_logging

    _setup_logging(debug=False, quiet=False)
    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        logging.getLogger("edgeopt.compile").warning("after the swap")
        assert "after the swap" in sys.stderr.getvalue()
    finally:
        sys.stderr = saved
