"""The one exception root of riskwatch and its specific subclasses."""


class RiskwatchError(Exception):
    """Base of every error riskwatch raises on purpose."""


class ConfigError(RiskwatchError):
    """Configuration is invalid; the message names the file (or variable), the field and the reason."""


class DecodeError(RiskwatchError):
    """Bytes from outside (a Kafka record, a frame, a client message) could not be decoded."""


class InvalidFrame(DecodeError):
    """An image that is empty, corrupt or too large to process."""


class FrameDropped(RiskwatchError):
    """A newer frame of the same camera arrived before this one reached the model (latest-only per camera)."""


class UnknownCamera(RiskwatchError):
    """A camera id that the gateway does not know."""


class BusFailed(RiskwatchError):
    """The event bus client cannot go on (e.g. a consumer fenced by a newer member with its instance id)."""


class Unavailable(RiskwatchError):
    """A dependency (broker, cache, model) cannot be reached right now; retrying later may help."""
