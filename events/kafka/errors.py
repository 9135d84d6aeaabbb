"""The Kafka log's errors, and which librdkafka errors mean "the cluster is unavailable"."""

from confluent_kafka import KafkaError, KafkaException

from kernel.errors import Unavailable

_UNAVAILABLE_CODES = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)


class LogUnavailable(Unavailable):
    """The Kafka cluster cannot be reached or did not answer in time."""

    def __init__(self, *, bootstrap_servers: str, reason: str) -> None:
        super().__init__(detail="the event log is unavailable; retry shortly", retry_after_s=1)
        self.bootstrap_servers = bootstrap_servers
        self.reason = reason

    def __str__(self) -> str:  # for operators' logs; `detail` is what a client may see
        return f"the Kafka cluster at {self.bootstrap_servers} is unavailable: {self.reason}"


class LogClosed(RuntimeError):
    """The log was closed while a stream was still reading from it."""


def _is_unavailable(error: BaseException) -> bool:
    return isinstance(error, KafkaException) and error.args[0].code() in _UNAVAILABLE_CODES
