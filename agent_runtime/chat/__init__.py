"""``agent-runtime chat``: a host in the terminal for a person talking with the configured agent.

``command`` registers the subcommand (light: nothing heavy at import); ``session`` is the host
(prompt_toolkit input, rich output, from the ``chat`` extra), ``render`` draws a turn,
``approvals`` asks the person mid-turn, ``commands`` holds the slash commands and ``servers``
shows the MCP servers behind the agent.
"""
