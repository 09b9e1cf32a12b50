"""Docstring parsing: the tool description and parameter descriptions in three styles."""

from __future__ import annotations

from agent_runtime.tools.docstrings import Docstring, parse_docstring


def test_missing_docstring_gives_nothing() -> None:
    assert parse_docstring(None) == Docstring()
    assert parse_docstring("   \n ") == Docstring()


def test_plain_docstring_is_all_description() -> None:
    doc = parse_docstring("Summary line.\n\n    Body text: with a colon.\n    ")
    assert doc == Docstring(description="Summary line.\n\nBody text: with a colon.", params={})


def test_google_section_ends_where_indentation_returns() -> None:
    doc = parse_docstring(
        """Search the index.

        Keyword Args:
            query: What to look for.
            limit (int, optional): At most this many
                results, newest first.

        Note that the index is rebuilt nightly.
        """
    )
    assert doc.params == {
        "query": "What to look for.",
        "limit": "At most this many results, newest first.",
    }
    assert doc.description == "Search the index.\n\nNote that the index is rebuilt nightly."


def test_google_star_names_are_stripped() -> None:
    doc = parse_docstring("Do.\n\nArgs:\n    *args: Positional.\n    **kwargs: Named.\n")
    assert doc.params == {"args": "Positional.", "kwargs": "Named."}


def test_sphinx_fields_with_types_and_other_fields_kept() -> None:
    doc = parse_docstring(
        """Fetch a URL.

        :param str url: The address.
        :param timeout: Seconds to wait,
            at most 60.
        :type timeout: float
        :returns: The body.
        :raises ValueError: On a bad URL.
        """
    )
    assert doc.params == {"url": "The address.", "timeout": "Seconds to wait, at most 60."}
    assert doc.description == (
        "Fetch a URL.\n\n:returns: The body.\n:raises ValueError: On a bad URL."
    )


def test_numpy_shared_entries_and_following_sections() -> None:
    doc = parse_docstring(
        """Move a point.

        Parameters
        ----------
        dx, dy : float
            Offsets.
        wrap : bool
            Wrap around
            the edges.

        Raises
        ------
        ValueError
            Off the map.
        """
    )
    assert doc.params == {"dx": "Offsets.", "dy": "Offsets.", "wrap": "Wrap around the edges."}
    assert doc.description == "Move a point.\n\nRaises\n------\nValueError\n    Off the map."


def test_numpy_section_ends_at_prose() -> None:
    doc = parse_docstring(
        "Do it.\n\nParameters\n----------\nx : int\n    The x.\n\nSee the manual for more.\n"
    )
    assert doc.params == {"x": "The x."}
    assert doc.description == "Do it.\n\nSee the manual for more."
