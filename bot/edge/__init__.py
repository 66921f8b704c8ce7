"""The callback edge: signature, crypto, hardened XML, typed events, size-limited bodies, the AI-bot endpoint."""
