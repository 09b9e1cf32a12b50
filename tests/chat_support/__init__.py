"""Support for the chat tests: a test model, local tools, an MCP server and a tmux terminal."""
