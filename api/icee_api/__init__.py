"""icee api: HTTP calls, the WebSocket protocol and the attach bridge to sandbox pods."""
