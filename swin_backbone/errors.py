"""Errors that describe bad input (a file, a value, a tensor) rather than a bug: the tools print them as one line."""
import pickle


class SwinInputError(ValueError):
    """Bad input from the user; the message names the file or value and what was expected."""


class UnsafeFileError(SwinInputError, pickle.UnpicklingError):
    """A pickle asks for something other than arrays, tensors and plain containers: refused unread."""


class MalformedFileError(SwinInputError):
    """A file is truncated, corrupt or not in the format its name or place promises."""


class CheckpointKeyError(SwinInputError, KeyError):
    """Converted weights do not match the model (raised in strict mode, or when nothing matches)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointShapeError(SwinInputError):
    """A checkpoint tensor cannot be mapped onto the model's parameter of that name."""
