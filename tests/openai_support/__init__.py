"""A scripted OpenAI-compatible server for the OpenAI backend's tests."""
