package io.fleetsim.spark;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.streaming.ExpiredTimerInfo;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.streaming.StatefulProcessor;
import org.apache.spark.sql.streaming.TTLConfig;
import org.apache.spark.sql.streaming.TimeMode;
import org.apache.spark.sql.streaming.TimerValues;
import org.apache.spark.sql.streaming.ValueState;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;

/**
 * Drops repeats of (device, seq) from a stream of readings, with state that expires by event time
 * without being read whole in every batch.
 *
 * <p>Spark's {@code dropDuplicatesWithinWatermark} keeps one state row per (device, seq) and finds
 * the expired ones by iterating its whole store in every batch: about 1.1 us per key per batch,
 * ~22 us a message at any steady rate (docs/streaming.md). Here the state is grouped by device and
 * by a bucket of the device's own timestamp: one row per (device, bucket) holding the bucket's
 * seqs, and one event-time timer per group at the bucket's end, so a batch touches only the groups
 * it reads and the groups whose timer the watermark passed.
 *
 * <p>Why the bucket is of {@code ts} and not of the window time: two copies of a reading (a QoS 1
 * redelivery) carry the same {@code ts} and {@code seq}, but a device clock further ahead than the
 * skew bound gets its window time from its arrival, which differs between the copies. Why a group
 * may go once the watermark passes its bucket's end: a copy is only kept upstream while it is on
 * time ({@code ts >= kafka_ts - lateness}); the watermark trails the newest window time by two
 * lateness bounds and the skew bound, so once it passes {@code ts}, every record still to come
 * arrived more than one lateness bound after {@code ts} (given Kafka timestamps out of order by
 * less than one bound, the assumption the watermark's delay already rests on) and is late.
 */
public final class ReadingDedup extends StatefulProcessor<String, Row, Row> {
  private static final long serialVersionUID = 1L;
  private static final StructType SEEN =
      new StructType().add("seqs", DataTypes.createArrayType(DataTypes.LongType, false), false);

  private final int seqIndex;
  private final int tsIndex;
  private final long bucketMs;
  private transient ValueState<Row> seen;

  private ReadingDedup(int seqIndex, int tsIndex, long bucketMs) {
    this.seqIndex = seqIndex;
    this.tsIndex = tsIndex;
    this.bucketMs = bucketMs;
  }

  /**
   * {@code readings} (with a watermark on {@code eventTimeColumn}) without repeats of
   * ({@code deviceColumn}, {@code seqColumn}); the output keeps the input's columns and carries the
   * watermark on {@code eventTimeColumn} to the operators after it.
   */
  public static Dataset<Row> apply(
      Dataset<Row> readings,
      String deviceColumn,
      String seqColumn,
      String tsColumn,
      String eventTimeColumn,
      long bucketMs) {
    if (bucketMs <= 0) {
      throw new IllegalArgumentException("bucketMs must be > 0, got " + bucketMs);
    }
    StructType schema = readings.schema();
    Column bucket = functions.floor(functions.unix_millis(functions.col(tsColumn)).divide(bucketMs));
    Column key = functions.concat_ws("|", functions.col(deviceColumn), bucket.cast("string"));
    ReadingDedup processor =
        new ReadingDedup(schema.fieldIndex(seqColumn), schema.fieldIndex(tsColumn), bucketMs);
    return readings
        .groupBy(key.alias("_dedup_key"))
        .as(Encoders.STRING(), Encoders.row(schema))
        .transformWithState(processor, eventTimeColumn, OutputMode.Append(), Encoders.row(schema));
  }

  @Override
  public void init(OutputMode outputMode, TimeMode timeMode) {
    seen = getHandle().getValueState("seen", Encoders.row(SEEN), TTLConfig.NONE());
  }

  private static long epochMillis(Object ts) {
    if (ts instanceof java.sql.Timestamp) {
      return ((java.sql.Timestamp) ts).getTime();
    }
    return ((java.time.Instant) ts).toEpochMilli();
  }

  @Override
  public scala.collection.Iterator<Row> handleInputRows(
      String key, scala.collection.Iterator<Row> rows, TimerValues timerValues) {
    Row state = seen.get();
    Set<Long> seqs = new HashSet<>();
    if (state != null) {
      seqs.addAll(state.<Long>getList(0));
    }
    int before = seqs.size();
    List<Row> out = new ArrayList<>();
    long firstTs = 0;
    while (rows.hasNext()) {
      Row row = rows.next();
      if (seqs.add(row.getLong(seqIndex))) {
        if (out.isEmpty()) {
          firstTs = epochMillis(row.get(tsIndex));
        }
        out.add(row);
      }
    }
    if (seqs.size() != before) {
      if (state == null) {
        // Every row of the group is in one bucket of ts (the key says so): its end frees it.
        getHandle().registerTimer((Math.floorDiv(firstTs, bucketMs) + 1) * bucketMs);
      }
      long[] all = new long[seqs.size()];
      int i = 0;
      for (long s : seqs) {
        all[i++] = s;
      }
      seen.update(RowFactory.create((Object) all));
    }
    return scala.jdk.javaapi.CollectionConverters.asScala(out.iterator());
  }

  @Override
  public scala.collection.Iterator<Row> handleExpiredTimer(
      String key, TimerValues timerValues, ExpiredTimerInfo expiredTimerInfo) {
    seen.clear();
    return scala.jdk.javaapi.CollectionConverters.asScala(Collections.<Row>emptyIterator());
  }
}
