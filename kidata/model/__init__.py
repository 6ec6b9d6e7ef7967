"""The knowledge-insulated VLA model: PaliGemma-style backbone + flow-matching action expert."""
