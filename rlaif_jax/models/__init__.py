"""Decoder-only transformer (policy, value, anchor, reward model and labeler share it)."""
