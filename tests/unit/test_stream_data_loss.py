"""The streaming job recognises Spark's Kafka data-loss failure and names what is gone."""

from __future__ import annotations

from fleetsim.cloud.streaming.job import data_loss_detail

SPARK_TEXT = (
    "[STREAM_FAILED] Query [id = 1f, runId = 2e] terminated with exception: Job aborted due to stage "
    "failure: Task 0 in stage 7.0 failed 1 times, most recent failure: "
    "org.apache.spark.SparkException: [KAFKA_DATA_LOSS.COULD_NOT_READ_OFFSET_RANGE] Some data may "
    "have been lost because they are not available in Kafka any more;\neither the data was aged out "
    "by Kafka or the topic may have been deleted before all the data in the\ntopic was processed.\n"
    "If you don't want your streaming query to fail on such cases, set the source option "
    "failOnDataLoss to false.\nReason:\nCould not read records in offset [120, 845) for topic "
    "partition sensors.telemetry-2\nwith consumer group spark-kafka-source-x. SQLSTATE: 22000\n"
    "\tat org.apache.spark.sql.kafka010.KafkaDataConsumer.reportDataLoss(KafkaDataConsumer.scala:1)"
)


def test_data_loss_reason_names_topic_partition_and_offsets() -> None:
    detail = data_loss_detail(SPARK_TEXT)
    assert detail == (
        "Could not read records in offset [120, 845) for topic partition sensors.telemetry-2 "
        "with consumer group spark-kafka-source-x"
    )


def test_other_failures_are_not_data_loss() -> None:
    assert data_loss_detail("[STREAM_FAILED] org.postgresql.util.PSQLException: connection refused") is None
