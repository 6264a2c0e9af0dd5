"""Event bus: one interface, a Kafka implementation and an in-memory one, and the stage loop on top."""

from riskwatch.bus.base import Consumer, EventBus, Headers, Outgoing, Record
from riskwatch.bus.memory import InMemoryBus
from riskwatch.bus.stage import Stage

__all__ = ["Consumer", "EventBus", "Headers", "InMemoryBus", "Outgoing", "Record", "Stage"]
