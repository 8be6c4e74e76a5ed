"""Sequence blocks: recurrent layers (lstm, gru), attention over sequences, positional encodings."""

from . import attention, positional, rnn  # noqa: F401
